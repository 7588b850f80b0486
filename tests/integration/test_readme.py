"""The docs' command blocks: the README's ten-line tour and the docs' tour run top to bottom on a fresh
home, exactly as written; every other ``atlas`` line of a bash block in the docs parses."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_cli import main
from tests.conftest import TEST_URI

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR = ROOT / "docs" / "tour.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def tour(path: Path, heading: str) -> list[list[str]]:
    """The commands of the first bash block under ``heading`` in ``path``, as argument lists (comments dropped)."""
    text = path.read_text()
    block = re.search(rf"{re.escape(heading)}\n.*?```bash\n(.*?)```", text, re.S)
    assert block, f"{path.name} has no bash block under {heading!r}"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]
    assert all(c and c[0] == "atlas" for c in commands), "every line of the block is one atlas command"
    return [c[1:] for c in commands]


def what_you_get() -> list[list[str]]:
    """The docs' tour: every command once."""
    return tour(TOUR, "# A tour: what you get")


def test_every_atlas_line_of_the_docs_parses() -> None:
    """Flags renamed or removed show up here before a reader trips on them."""
    from atlas_cli import build_parser

    parser = build_parser()
    seen = 0
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                if not line.startswith("atlas "):
                    continue
                try:
                    parser.parse_args(shlex.split(line, comments=True)[1:])
                except SystemExit as exc:
                    raise AssertionError(f"{page.name}: {line!r} does not parse") from exc
                seen += 1
    assert seen >= 45


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


def _run_all(commands: list[list[str]], home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in commands:
        code = main([*args, "--home", str(home), *(["--quiet"] if args[0] in ("ingest",) else [])])
        out, err = capsys.readouterr()
        if args[0] == "db" and TEST_URI is not None:  # the embedded server's own command refuses another server
            assert code == 2 and "manages the embedded server only" in err, err
            continue
        assert code == 0, f"atlas {' '.join(args)} failed: {err.strip()}"
        if args[0] == "query":  # filtered by run: five heads of run 'ind'
            assert out.count("ind/L") == 0 and out.count("induction-2l/L1.H") + out.count("induction-2l/L0.H") == 5, out


def test_the_readme_tour_runs_top_to_bottom(fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = tour(README, "## A ten-line tour")
    assert len(commands) == 10
    _run_all(commands, fresh_home, capsys)
    assert (work / "out.html").exists()


def test_the_docs_tour_runs_top_to_bottom(fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = what_you_get()
    assert len(commands) >= 20
    _run_all(commands, fresh_home, capsys)
    for made in ("out.html", "cmp.png", "g.graphml", "g.gexf", "g.json", "g.png", os.path.join("out", "run.json"), "sae-modadd"):
        assert (work / made).exists(), made
