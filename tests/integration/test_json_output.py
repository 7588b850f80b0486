"""``--json`` means one thing: every command that prints results prints one valid JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main
from tests.conftest import TEST_URI

RUN = "json-run"


@pytest.fixture(scope="module")
def run_id(store: Store, embedded: StoreSettings) -> str:
    assert main(["ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--run-id", RUN, "--quiet",
                 "--home", str(embedded.home)]) == 0
    return RUN


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON (strict parsers reject it): write null")


def commands(tmp: Path) -> list[list[str]]:
    return [
        ["db", "status"],
        ["ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--run-id", RUN, "--quiet"],
        ["ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--run-id", RUN + "-pp", "--per-prompt", "--quiet"],
        ["prompts", "--run", RUN + "-pp", "--component", "L1.H0"],
        ["query", "MATCH (r:Run) RETURN r.runId AS id"],
        ["runs"],
        ["export", "--run", RUN, "--csv-dir", str(tmp / "csv"), "--node-link", str(tmp / "g.json")],
        ["import", str(tmp / "csv")],
        ["compare", RUN, RUN, "--top", "5"],
        ["evaluate", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--quiet"],
        ["sae", "train", "--model", "modadd-1l", "--hook", "blocks.0.hook_mlp_out", "--features", "16", "--steps", "20",
         "--prompts", "64", "--no-store", "--out", str(tmp / "sae"), "--quiet"],
        ["population", "--model", "modadd-1l"],
        ["lesion", "--model", "induction-2l", "--prompts", "4", "--quiet"],
        ["verify", "--run", RUN, "--top", "3", "--quiet"],
        ["circuit", "--run", RUN, "--top", "5"],
        ["anatomy", "--model", "induction-2l"],
        ["probe", "--model", "induction-2l"],
        ["lens", "--model", "induction-2l", "--prompts", "8"],
        ["decode", "--model", "binding", "--layer", "1", "--variable", "answer", "--prompts", "10"],
        ["views", "--model", "binding", "--layer", "1", "--color", "answer", "--prompts", "10"],
        ["gain", "--model", "induction-2l", "--layer", "1", "--stimuli", "4", "--contexts", "4"],
        ["noise", "--model", "induction-2l", "--prompts", "6", "--repeats", "3"],
        ["encode", "--model", "induction-2l", "--prompts", "6", "--repeats", "3"],
        ["scaling", "--sizes", "1,2,3", "--seeds", "0,1", "--steps", "5", "--prompts", "4", "--quiet"],
        ["development", "--model", "induction-2l@0", "induction-2l@0", "induction-2l", "--task", "induction", "--method", "eap", "--prompts", "4",
         "--quiet"],
        ["paths", "--run", RUN, "--paths", "3"],
        ["hierarchy", "--run", RUN],
        ["binding", "--run", RUN],
        ["motifs", "--run", RUN, "--random", "3"],
        ["zoo", "list"],
        ["zoo", "info", "binding"],
        ["demo", "--prompts", "4", "--out", str(tmp / "demo"), "--quiet"],
    ]


def test_every_command_prints_json(run_id: str, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atlas_cli import build_parser

    names = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    covered = {argv[0] for argv in commands(tmp_path)}
    # a new command must join this list; 'serve' runs until stopped and answers JSON over HTTP (test_explorer.py)
    assert covered | {"serve"} == names, names ^ covered
    for argv in commands(tmp_path):
        code = main([*argv, "--json", "--home", str(embedded.home)])
        out, err = capsys.readouterr()
        if argv[0] == "db" and TEST_URI is not None:  # 'atlas db' manages the embedded server only
            assert code == 2 and "manages the embedded server only" in err, (argv, err)
            continue
        assert code == 0, (argv, err)
        try:
            json.loads(out, parse_constant=_not_json)  # strict: a bare NaN or Infinity is not JSON
        except (json.JSONDecodeError, ValueError) as exc:
            pytest.fail(f"atlas {' '.join(argv)} --json printed no single JSON document ({exc}): {out[:200]!r}")
