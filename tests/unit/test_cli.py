"""CLI behaviour that needs no database."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from atlas.cli import main


def test_help_is_instant_and_lists_commands() -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "atlas.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("db", "ingest", "query", "runs", "export", "zoo", "demo"):
        assert cmd in proc.stdout
    assert time.monotonic() - t0 < 5  # no torch import for --help
    proc = subprocess.run([sys.executable, "-c", "import atlas.cli, sys; print('torch' in sys.modules)"], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["ingest"], "--model"),
        (["ingest", "--model", "m", "--method", "acdc"], "invalid choice"),
        (["ingest", "--model", "induction-2l", "--prompts", "0", "--uri", "bolt://127.0.0.1:1", "--password", "x"], "at least 1"),
        (["query", "RETURN 1", "--param", "novalue", "--uri", "bolt://127.0.0.1:1", "--password", "x"], "cannot reach"),
        (["zoo", "train", "no-such-zoo-model"], "unknown zoo model"),
        (["db", "start", "--uri", "bolt://example:7687"], "embedded server only"),
        (["query", "RETURN 1", "--uri", "localhost:7687", "--password", "x"], "invalid database uri"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.lower() in err.lower()


def test_zoo_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name", "hasMlp", "task", "groundTruth"} <= set(rows[0])
    assert "induction-2l" in {r["name"] for r in rows}
