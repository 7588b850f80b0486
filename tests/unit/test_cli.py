"""CLI behaviour that needs no database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli import main


def test_help_lists_commands_without_heavy_imports() -> None:
    proc = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("db", "ingest", "query", "runs", "export", "zoo", "demo"):
        assert cmd in proc.stdout
    # --help stays instant: building the parser imports neither torch nor the ingest/query packages
    probe = "import cli, sys; cli.build_parser(); print(sorted(m for m in ('torch', 'ingest', 'queries', 'neo4j') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr


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
