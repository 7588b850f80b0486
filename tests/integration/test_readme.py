"""The README's "What you get" block runs top to bottom on a fresh home, exactly as written."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_cli import main
from tests.conftest import TEST_URI

README = Path(__file__).resolve().parents[2] / "README.md"


def what_you_get() -> list[list[str]]:
    """The commands of the README's "What you get" block, as argument lists (comments dropped)."""
    text = README.read_text()
    block = re.search(r"## What you get\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no 'What you get' bash block"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]
    assert all(c and c[0] == "atlas" for c in commands), "every line of the block is one atlas command"
    return [c[1:] for c in commands]


@pytest.fixture()
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    if TEST_URI is not None:  # the README starts from an empty store: empty the one under test
        from atlas.config import resolve_store_settings
        from atlas.store import Store

        with Store.connect(resolve_store_settings(home=home), quiet=True) as store:
            store.run("MATCH (n) DETACH DELETE n", write=True)
    try:
        yield home
    finally:
        if TEST_URI is None:
            main(["db", "stop", "--home", str(home)])


def test_what_you_get_runs_top_to_bottom(fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = what_you_get()
    assert len(commands) >= 20
    for args in commands:
        code = main([*args, "--home", str(fresh_home), *(["--quiet"] if args[0] in ("ingest",) else [])])
        out, err = capsys.readouterr()
        if args[0] == "db" and TEST_URI is not None:  # the embedded server's own command refuses another server
            assert code == 2 and "manages the embedded server only" in err, err
            continue
        assert code == 0, f"atlas {' '.join(args)} failed: {err.strip()}"
        if args[0] == "query":  # filtered by run: five heads of run 'ind'
            assert out.count("ind/L") == 0 and out.count("induction-2l/L1.H") + out.count("induction-2l/L0.H") == 5, out
    for made in ("out.html", "cmp.png", "g.graphml", "g.gexf", "g.json", "g.png", os.path.join("out", "run.json"), "sae-modadd"):
        assert (work / made).exists(), made
