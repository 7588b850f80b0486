"""The store against the real embedded ArcadeDB server over Bolt (no mocks)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.errors import QueryError, ReadOnlyViolation, StoreAuthError, StoreUnavailable, ValidationError
from atlas.records import RunRecord
from atlas.schema import INDEXES, RelType
from atlas.server import read_password, server_status
from atlas.store import Store
from queries.fetch import fetch_edges
from tests.conftest import model_stub


def _nodes(model: str = "rt") -> pd.DataFrame:
    rows = [{"componentId": f"{model}/EMBED", "kind": "embed", "modelId": model, "layer": -1, "head": None}]
    rows += [{"componentId": f"{model}/L0.H{h}", "kind": "head", "modelId": model, "layer": 0, "head": h} for h in range(3)]
    rows += [{"componentId": f"{model}/LOGITS", "kind": "logits", "modelId": model, "layer": 1, "head": None}]
    return pd.DataFrame(rows)


def _edges(model: str = "rt") -> pd.DataFrame:
    rows = [(f"{model}/EMBED", f"{model}/L0.H{h}", ch, (h + 1) * (0.5 if ch == "q" else -0.25)) for h in range(3) for ch in "qkv"]
    rows += [(f"{model}/L0.H{h}", f"{model}/LOGITS", "in", 0.1 * h - 0.05) for h in range(3)]
    rows += [(f"{model}/EMBED", f"{model}/LOGITS", "in", 1.5)]
    return pd.DataFrame(rows, columns=["componentId_pre", "componentId_post", "channel", "score"])


@pytest.mark.embedded_only
def test_embedded_server_is_local_and_private(embedded: StoreSettings) -> None:
    info = server_status(embedded.home)
    assert info is not None and info.uri.startswith("bolt://127.0.0.1:")
    assert (embedded.home / "password").stat().st_mode & 0o077 == 0
    assert (embedded.home / "arcadedb" / "log").is_dir()  # the server's log stays in the atlas home
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    listening = [line.split()[3] for line in out.splitlines() if f":{info.bolt_port}" in line or f":{info.http_port}" in line]
    assert listening and all("127.0.0.1" in addr for addr in listening), listening


def test_schema_is_idempotent(store: Store) -> None:
    cx.ensure_schema(store)
    first = cx.fetch_schema(store)
    cx.ensure_schema(store)
    second = cx.fetch_schema(store)
    assert len(first) == len(second) >= 6
    names = set(second["name"])
    run_indexes = {name for name, _, _ in INDEXES}
    if store.is_arcadedb:  # no runId index on relationships there: deletes were quadratic with it
        assert not run_indexes & names
    else:
        assert run_indexes <= names
    labels = {tuple(x) for x in second["labelsOrTypes"]}
    assert {("Component",), ("Run",), ("Model",), ("Circuit",)} <= labels


def test_arcadedb_loses_the_run_index_an_older_atlas_made(store: Store) -> None:
    if not store.is_arcadedb:
        pytest.skip(f"ArcadeDB's schema; the server under test is {store.agent}")
    store.run("CREATE INDEX attribution_run IF NOT EXISTS FOR ()-[e:ATTRIBUTION]-() ON (e.runId)", write=True)
    assert "attribution_run" in set(cx.fetch_schema(store)["name"])
    cx.ensure_schema(store)
    assert "attribution_run" not in set(cx.fetch_schema(store)["name"])


def test_edges_to_missing_components_are_refused(store: Store) -> None:
    cx.ensure_schema(store)
    cx.write_model(store, model_stub("mc", n_layers=1))
    cx.write_components(store, _nodes("mc").iloc[:3])  # no L0.H2, no LOGITS
    cx.begin_run(store, RunRecord(run_id="mc-1", model_id="mc"))
    with pytest.raises(ValidationError, match="mc/L0.H2"):
        cx.write_edges(store, _edges("mc"), "mc-1", batch_size=100)
    edges = _edges("mc")
    kept = edges[edges["componentId_post"].isin(_nodes("mc").iloc[:3]["componentId"])]
    assert cx.write_edges(store, kept, "mc-1", batch_size=2) == len(kept) == 6  # three batches, codes per batch
    back = fetch_edges(store, "mc-1").sort_values(["componentId_post", "channel"]).reset_index(drop=True)
    want = kept.sort_values(["componentId_post", "channel"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back[want.columns.tolist()], want, check_dtype=False)
    cx.delete_run(store, "mc-1")
    # string columns travel as codes into their distinct values; a missing one is no property
    scoped = kept.assign(scope=pd.Series(["edge", None, "node", "edge", None, "node"], dtype="str"))
    cx.begin_run(store, RunRecord(run_id="mc-2", model_id="mc"))
    cx.write_edges(store, scoped, "mc-2", rel_type=RelType.ABLATION, batch_size=4)
    back = store.read("MATCH (a)-[e:ABLATION {runId: 'mc-2'}]->(b) RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, "
                      "e.scope AS scope, e.effect AS effect")
    got = {(r.pre, r.post, r.channel): (r.scope, r.effect) for r in back.itertuples()}
    assert got == {(r.componentId_pre, r.componentId_post, r.channel): (r.scope, r.score) for r in scoped.itertuples()}
    cx.delete_run(store, "mc-2")


def test_write_then_read_round_trip(store: Store) -> None:
    cx.ensure_schema(store)
    cx.write_model(store, model_stub("rt", n_layers=1))
    cx.write_components(store, _nodes())
    cx.begin_run(store, RunRecord(run_id="rt-1", model_id="rt"))
    assert cx.write_edges(store, _edges(), "rt-1") == len(_edges())
    back = fetch_edges(store, "rt-1")[["componentId_pre", "componentId_post", "channel", "score"]]
    key = ["componentId_pre", "componentId_post", "channel"]
    pd.testing.assert_frame_equal(
        back.sort_values(key).reset_index(drop=True), _edges().sort_values(key).reset_index(drop=True), check_dtype=False
    )
    top = fetch_edges(store, "rt-1", top=2)
    assert top["score"].abs().tolist() == [1.5, 1.5]
    heads = store.read("MATCH (c:Component:Head {modelId: 'rt'}) RETURN count(c) AS n")
    assert heads["n"].iloc[0] == 3
    # components are shared, not duplicated, when written again
    cx.write_components(store, _nodes())
    assert store.read("MATCH (c:Component {modelId: 'rt'}) RETURN count(c) AS n")["n"].iloc[0] == 5


def test_reads_cannot_write(store: Store) -> None:
    with pytest.raises(ReadOnlyViolation):
        store.read("CREATE (x:Intruder {a: 1}) RETURN x")
    with pytest.raises(ReadOnlyViolation):
        store.read("MATCH (c:Component) SET c.tampered = true RETURN count(c)")
    assert store.read("MATCH (x:Intruder) RETURN count(x) AS n")["n"].iloc[0] == 0
    assert store.read("MATCH (c:Component) WHERE c.tampered IS NOT NULL RETURN count(c) AS n")["n"].iloc[0] == 0
    store.run("CREATE (x:Scratch {a: 1})", write=True)
    assert store.read("MATCH (x:Scratch) RETURN count(x) AS n")["n"].iloc[0] == 1


def test_parameters_are_values_not_code(store: Store) -> None:
    evil = "x'}) DETACH DELETE n //"
    df = store.read("MATCH (c:Component {componentId: $id}) RETURN count(c) AS n", {"id": evil})
    assert df["n"].iloc[0] == 0
    assert store.read("MATCH (c:Component) RETURN count(c) AS n")["n"].iloc[0] > 0


def test_errors_are_mapped(store: Store, embedded: StoreSettings) -> None:
    with pytest.raises(QueryError, match="syntax"):
        store.read("MATC (n) RETURN n")
    if embedded.embedded:
        info = server_status(embedded.home)
        assert info is not None
        wrong = StoreSettings(uri=info.uri, user="root", password=read_password(embedded.home) + "x", database="atlas", home=embedded.home)
    else:  # the server under ATLAS_TEST_URI
        wrong = StoreSettings(uri=embedded.uri, user=embedded.user, password=f"{embedded.password}x", database=embedded.database, home=embedded.home)
    with pytest.raises(StoreAuthError):
        Store.connect(wrong)
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        Store.connect(StoreSettings(uri="bolt://127.0.0.1:1", user="neo4j", password="x", database=None, home=embedded.home))


def test_several_processes_share_the_server(store: Store, embedded: StoreSettings) -> None:
    cmd = [sys.executable, "-m", "atlas_cli", "query", "MATCH (c:Component) RETURN count(c) AS n", "--json", "--home", str(embedded.home)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    expected = int(store.read("MATCH (c:Component) RETURN count(c) AS n")["n"].iloc[0])
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert f'"n": {expected}' in out


def test_delete_run_edges(store: Store) -> None:
    cx.begin_run(store, RunRecord(run_id="rt-2", model_id="rt"))
    cx.write_edges(store, _edges(), "rt-2")
    assert cx.delete_run_edges(store, "rt-2", batch_size=4) == len(_edges())
    assert store.read("MATCH ()-[e:ATTRIBUTION {runId: 'rt-2'}]->() RETURN count(e) AS n")["n"].iloc[0] == 0
    assert store.read("MATCH ()-[e:ATTRIBUTION {runId: 'rt-1'}]->() RETURN count(e) AS n")["n"].iloc[0] == len(_edges())


def test_concurrent_writers_of_one_model_all_complete(store: Store, embedded: StoreSettings) -> None:
    """Four connections write runs of the same model at once: each run's :Run, its OF_MODEL link to
    the shared :Model and its edges touch the same records, so the server reports deadlocks and
    write conflicts; every statement is tried again until it goes through, and every run ends
    complete with all its edges (before, a DeadlockDetected from begin_run failed the ingest)."""
    from concurrent.futures import ThreadPoolExecutor

    from atlas.schema import RunStatus

    cx.ensure_schema(store)
    cx.write_model(store, model_stub("cw"))
    cx.write_components(store, _nodes("cw"))
    edges = _edges("cw")

    def writer(w: int) -> list[str]:
        done = []
        with Store.connect(embedded, quiet=True) as mine:
            for i in range(12):
                run_id = f"cw-{w}-{i}"
                cx.begin_run(mine, RunRecord(run_id=run_id, model_id="cw"))
                cx.write_edges(mine, edges, run_id)
                cx.set_run_status(mine, run_id, RunStatus.COMPLETE, n_edges=len(edges))
                done.append(run_id)
        return done

    with ThreadPoolExecutor(4) as pool:
        finished = [r for runs in pool.map(writer, range(4)) for r in runs]
    assert len(finished) == 48
    runs = store.read("MATCH (r:Run)-[:OF_MODEL]->(:Model {modelId: 'cw'}) RETURN r.runId AS run, r.status AS status")
    assert sorted(runs["run"]) == sorted(finished) and set(runs["status"]) == {"complete"}
    counts = store.read("MATCH ()-[e:ATTRIBUTION]->() WHERE e.runId STARTS WITH 'cw-' RETURN e.runId AS run, count(e) AS n")
    assert len(counts) == 48 and set(counts["n"]) == {len(edges)}
    assert store.read("MATCH (c:RunClaim) WHERE c.runId STARTS WITH 'cw-' RETURN count(c) AS n")["n"].iloc[0] == 0
