"""The embedded server's memory: a heap sized from the machine, and no atlas read that fails on a
run larger than what the server lets one query buffer.

The per-query element limit is ArcadeDB's own ``arcadedb.queryMaxHeapElementsAllowedPerOp`` (it
scales with the heap, ~1 element per 2 KB); the test starts a real server with it set to 100, so a
500-edge run plays the part of a run too large for the server's buffers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas import connectome as cx
from atlas.config import resolve_store_settings
from atlas.errors import ConfigError, QueryError
from atlas.server import default_heap, resolve_heap, server_status, stop_server
from atlas.store import Store
from atlas_cli import main
from bench.synthetic import write_synthetic_run

pytestmark = pytest.mark.embedded_only  # the embedded server's heap and its limits


@pytest.mark.parametrize("gib,heap", [(24, "6g"), (8, "2g"), (2, "1g"), (0.5, "1g"), (512, "32g")])
def test_default_heap_is_a_quarter_of_memory_within_bounds(gib: float, heap: str) -> None:
    assert default_heap(int(gib * 2**30)) == heap


def test_heap_override_and_bad_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATLAS_DB_HEAP", raising=False)
    assert resolve_heap() == default_heap()
    assert resolve_heap("8G") == "8g"
    monkeypatch.setenv("ATLAS_DB_HEAP", "768m")
    assert resolve_heap() == "768m" and resolve_heap("2g") == "2g"
    for bad in ("lots", "8", "0g", "100m", "-1g"):
        with pytest.raises(ConfigError, match="heap"):
            resolve_heap(bad)


def test_bad_heap_is_one_line_and_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["db", "start", "--home", str(home), "--heap", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "heap" in err
    assert server_status(home) is None


def test_large_run_reads_survive_the_servers_buffer_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("ARCADEDB_JVM_ARGS", "-Darcadedb.queryMaxHeapElementsAllowedPerOp=100")
    assert main(["db", "start", "--home", str(home), "--heap", "768m", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["heap"] == "768m"
    try:
        with Store.connect(resolve_store_settings(home=home), quiet=True) as store:
            edges, _ = write_synthetic_run(store, 500, "big")
            # the server really refuses to buffer the run: one collect() of 500 scores is over its limit
            with pytest.raises(QueryError):
                store.read("MATCH ()-[e:ATTRIBUTION {runId: $r}]->() RETURN collect(e.score) AS s", {"r": "big"})
            columns = cx.fetch_edge_columns(store, "big")  # falls back to streaming rows
            key = ["componentId_pre", "componentId_post", "channel"]
            got = columns.sort_values(key).reset_index(drop=True)
            want = edges.sort_values(key).reset_index(drop=True)
            assert got[key].equals(want[key]) and (got["score"] - want["score"]).abs().max() < 1e-12
            everything = cx.fetch_edges(store, "big")  # sorted in the atlas process, not by the server
            assert len(everything) == 500 and everything["score"].abs().is_monotonic_decreasing
            top = cx.fetch_edges(store, "big", top=10)  # ORDER BY ... LIMIT: the server keeps the top 10 only
            assert top["score"].tolist() == everything["score"].head(10).tolist()
        capsys.readouterr()
        assert main(["paths", "--run", "big", "--paths", "3", "--json", "--home", str(home)]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 3
        for argv in (["hierarchy", "--run", "big", "--json"], ["export", "--run", "big", "--top", "40", "--graphml", str(tmp_path / "g.graphml")]):
            assert main([*argv, "--home", str(home)]) == 0, (argv, capsys.readouterr().err)
        assert (tmp_path / "g.graphml").stat().st_size > 0
    finally:
        stop_server(home)
