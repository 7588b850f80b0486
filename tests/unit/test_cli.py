"""CLI behaviour that needs no database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_cli import main


def test_help_lists_commands_without_heavy_imports() -> None:
    proc = subprocess.run([sys.executable, "-m", "atlas_cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("db", "ingest", "query", "runs", "export", "zoo", "demo"):
        assert cmd in proc.stdout
    # --help stays instant: building the parser imports neither torch nor the query packages, and of
    # ingest only the plain-data registries it reads its choices from
    probe = ("import atlas_cli, sys; atlas_cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'transformer_lens', 'queries', 'neo4j', 'pandas') or (m.startswith('ingest.') and m.count('.') > 1)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stdout.strip() == "['ingest.edges.registry']", proc.stderr


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["ingest"], "--model"),
        (["ingest", "--model", "m", "--method", "acdc"], "invalid choice"),
        (["ingest", "--model", "induction-2l", "--prompts", "0", "--uri", "bolt://127.0.0.1:1", "--password", "x"], "between 1 and"),
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


def test_catalog_names_mirror_the_registries() -> None:
    from ingest.model.catalog import TASK_NAMES, ZOO_NAMES
    from ingest.model.tasks import TASKS
    from ingest.model.zoo import ZOO

    assert set(ZOO_NAMES) == set(ZOO) and set(TASK_NAMES) == set(TASKS)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["ingest", "--model", "induction-2I"], "did you mean the zoo model 'induction-2l'"),
        (["ingest", "--model", "induction-2l", "--task", "inductoin"], "did you mean 'induction'"),
        (["ingest", "--model", "missing.pt"], "does not exist"),
        (["ingest", "--model", "induction-2l", "--steps", "1000000000"], "between 1 and 1,000"),
        (["ingest", "--model", "induction-2l", "--prompts", "100000000"], "between 1 and 65,536"),
        (["lesion", "--model", "modadd-1I"], "did you mean"),
        (["paths", "--run", "r", "--paths", "-1"], "between 1 and"),
        (["export", "--run", "r", "--top", "1000000000000", "--html", "x.html"], "between 1 and 10,000,000"),
        (["ingest", "--model", "induction-2l", "--seed", "x"], "is not an integer"),
        (["query", "RETURN 1", "--uri", "http://127.0.0.1:7474", "--password", "x"], "invalid database uri"),
    ],
)
def test_bad_arguments_stop_before_the_database_and_torch(argv: list[str], needle: str, tmp_path: Path) -> None:
    """One line, exit 2, and neither a server started in the home nor torch imported."""
    home = tmp_path / "home"
    probe = ("import sys; from atlas_cli import main; code = main(sys.argv[1:]); "
             "print(code, 'torch' in sys.modules, 'neo4j' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, *argv, "--home", str(home)], capture_output=True, text=True, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 2 and len(lines) == 1:  # argparse exits on its own: no status line
        assert needle.lower() in lines[0].lower(), proc.stderr
    else:
        assert lines[-1] == "2 False False", proc.stderr
        assert len(lines) == 2 and needle.lower() in lines[0].lower(), proc.stderr
    assert not (home / "server.json").exists() and not (home / "password").exists()


def test_every_option_has_help_and_flags_keep_one_meaning() -> None:
    """One vocabulary of flags: every option explains itself, a model is always ``--model``, and the
    help never prints a default that says nothing ("(default: None)") or says it twice."""
    import argparse

    parser = __import__("atlas_cli").build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings or action.dest)
            assert action.dest not in ("model", "models") or action.option_strings == ["--model"], name
            shown = command._get_formatter()._get_help_string(action)
            assert shown.count("(default:") <= 1 and "(default: None)" not in shown, (name, shown)
        assert "(default: None)" not in command.format_help(), name


def test_old_spellings_still_parse() -> None:
    """``paths --top`` and ``binding --top`` (before they were named for what they count) still work."""
    parser = __import__("atlas_cli").build_parser()
    assert parser.parse_args(["paths", "--run", "r", "--top", "3"]).paths == 3
    assert parser.parse_args(["paths", "--run", "r"]).paths == 10
    assert parser.parse_args(["binding", "--run", "r", "--top", "4"]).show == 4
    assert parser.parse_args(["development", "--model", "a", "b"]).models == ["a", "b"]
