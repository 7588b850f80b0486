"""Position-resolved connectomes end to end: ``atlas ingest --per-position`` writes ``ATTRIBUTION_AT``
edges ``u@srcPos -> v@dstPos`` next to the run's position-free edges (their exact sums), and the
queries either resolve positions (``paths --positions``) or say that they aggregate them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.schema import RelType
from atlas.store import Store
from atlas_cli import main

pytestmark = pytest.mark.slow
RUN = "positions-run"


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_per_position_runs_store_resolve_and_aggregate(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    ingest = ("ingest", "--model", "induction-2l", "--method", "eap-ig", "--prompts", "6", "--per-position", "--run-id", RUN, "--json", "--quiet")
    code, out, err = cli(capsys, embedded.home, *ingest)
    assert code == 0, err
    run = cx.fetch_run(store, RUN)
    flat = cx.fetch_edge_columns(store, RUN)
    at = cx.fetch_positional_edge_columns(store, RUN)
    assert run.details["perPosition"] and run.details["positionalEdges"] == len(at) and run.details["nPositions"] == 24
    assert run.n_edges == len(flat) == json.loads(out)["nEdges"] and len(at) > 10 * len(flat)
    # the stored position pairs sum to the stored edges
    summed = at.groupby(["componentId_pre", "componentId_post", "channel"])["score"].sum()
    joined = flat.set_index(["componentId_pre", "componentId_post", "channel"])["score"].to_frame().join(summed.rename("summed"))
    assert np.allclose(joined["score"], joined["summed"], rtol=1e-6, atol=1e-9)
    assert (at.srcPos <= at.dstPos).all() and set(at.loc[at.srcPos != at.dstPos, "channel"]) == {"k", "v"}
    code, out, _ = cli(capsys, embedded.home, *ingest)
    assert code == 0 and json.loads(out)["status"] == "unchanged"

    # resolved: the strongest position paths run from the previous-token head at i to an induction head's key, read at
    # j = i + 11 (12-token repeats: the token after the earlier occurrence), and on to the logits at j
    code, out, err = cli(capsys, embedded.home, "paths", "--run", RUN, "--positions", "--paths", "5", "--json")
    assert code == 0, err
    paths = json.loads(out)
    assert len(paths) == 5
    hop = next(p for p in paths if any(n.split("/")[-1].startswith("L0.H0:") for n in p["nodes"]))
    nodes = [n.split("/")[-1] for n in hop["nodes"]]
    prev, ind = next(i for i, n in enumerate(nodes) if n.startswith("L0.H0:")), next(i for i, n in enumerate(nodes) if n.startswith("L1.H"))
    i_pos, j_pos = int(nodes[prev].split(":")[1]), int(nodes[ind].split(":")[1])
    assert j_pos - i_pos == 11 and "k" in hop["channels"][ind - 1].split("+") and nodes[-1] == f"LOGITS:{j_pos}"
    code, out, _ = cli(capsys, embedded.home, "paths", "--run", RUN, "--positions", "--source", "EMBED:3", "--paths", "2")
    assert code == 0 and "components at token positions" in out and all(" -> " in line for line in out.splitlines()[3:5])
    assert "EMBED:3 ->" in out
    # aggregated, and said so
    code, out, _ = cli(capsys, embedded.home, "paths", "--run", RUN, "--paths", "3")
    assert code == 0 and "positions aggregated" in out and ":1" not in out
    code, out, _ = cli(capsys, embedded.home, "hierarchy", "--run", RUN, "--json", "--no-store")
    assert code == 0 and json.loads(out)["positions"] == "aggregated"
    code, out, _ = cli(capsys, embedded.home, "export", "--run", RUN, "--top", "10", "--graphml", str(tmp_path / "g.graphml"))
    assert code == 0 and "positions aggregated" in out

    # the per-position edges travel with the run's lossless copy
    code, _, err = cli(capsys, embedded.home, "export", "--run", RUN, "--csv-dir", str(tmp_path / "copy"))
    assert code == 0, err
    rels = (tmp_path / "copy" / "relationships.csv").read_text().splitlines()
    assert sum(RelType.ATTRIBUTION_AT.value in line for line in rels) == len(at)

    # refused in one line: exact patching per position, positions of a run that has none
    code, _, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--method", "patching", "--per-position")
    assert code == 2 and "--per-position needs a gradient method" in err and err.count("\n") == 1
    cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "2", "--run-id", "flat-run", "--quiet")
    code, _, err = cli(capsys, embedded.home, "paths", "--run", "flat-run", "--positions")
    assert code == 2 and "has no per-position edges" in err

    assert cx.delete_run(store, RUN) == len(flat) + len(at)
