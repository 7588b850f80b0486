"""The embedded server's bulk edge path (atlas.bulk) against the real server: it stores exactly what
Bolt stores, writes nothing for an edge naming a missing component, keeps its socket private, and an
ingest through it is idempotent."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import atlas.connectome as connectome
from atlas import connectome as cx
from atlas.bulk import SOCKET_NAME, bulk_socket
from atlas.config import StoreSettings
from atlas.errors import ValidationError
from atlas.records import RunRecord
from atlas.schema import RelType
from tests.conftest import model_stub

pytestmark = pytest.mark.embedded_only


def _graph(model: str, heads: int = 40, layers: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A head graph of ``layers`` x ``heads`` with every earlier head into every later head's q/k/v."""
    nodes = [{"componentId": f"{model}/EMBED", "kind": "embed", "modelId": model, "layer": -1, "head": None}]
    nodes += [{"componentId": f"{model}/L{l}.H{h}", "kind": "head", "modelId": model, "layer": l, "head": h}
              for l in range(layers) for h in range(heads)]
    senders = [f"{model}/EMBED"]
    rows = []
    for l in range(layers):
        for h in range(heads):
            for ch in "qkv":
                rows += [(s, f"{model}/L{l}.H{h}", ch) for s in senders]
        senders = senders + [f"{model}/L{l}.H{h}" for h in range(heads)]
    edges = pd.DataFrame(rows, columns=["componentId_pre", "componentId_post", "channel"])
    rng = np.random.default_rng(0)
    edges["score"] = rng.standard_cauchy(len(edges)) * 1e-3  # all 17 digits matter
    return edges, pd.DataFrame(nodes)


def _stored(store: Any, run_id: str) -> pd.DataFrame:
    frame = store.read(
        "MATCH (a)-[e:ATTRIBUTION {runId: $r}]->(b) RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, "
        "e.score AS score, e.promptScores AS prompts, e.baseline AS baseline", {"r": run_id})
    return frame.sort_values(["pre", "post", "channel"]).reset_index(drop=True)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = connectome.write_edges_bulk

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(-1 if out is None else int(out))
        return out

    monkeypatch.setattr(connectome, "write_edges_bulk", counted)
    return calls


def test_the_bulk_path_stores_exactly_what_bolt_stores(store: Any, embedded: StoreSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    edges, nodes = _graph("bulk")
    edges["promptScores"] = [[float(s), -2.0 * float(s), 1.0 / 3.0] for s in edges["score"]]
    assert len(edges) > 5_000
    cx.write_model(store, model_stub("bulk", 4))
    cx.write_components(store, nodes)
    assert bulk_socket(embedded) is not None
    calls = _spy(monkeypatch)
    for how in ("1", "0"):
        monkeypatch.setenv("ATLAS_BULK", how)
        cx.begin_run(store, RunRecord(run_id=f"via-{how}", model_id="bulk"))
        assert cx.write_edges(store, edges, f"via-{how}", props={"baseline": "corrupted"}) == len(edges)
    assert calls == [len(edges)]  # the first write took the bulk path, the second Bolt
    bulk, bolt = _stored(store, "via-1"), _stored(store, "via-0")
    assert len(bulk) == len(edges)
    pd.testing.assert_frame_equal(bulk, bolt)
    ours = edges.sort_values(["componentId_pre", "componentId_post", "channel"]).reset_index(drop=True)
    assert bulk["score"].tolist() == ours["score"].tolist()  # bit for bit
    assert bulk["prompts"].tolist() == ours["promptScores"].tolist()
    assert set(bulk["baseline"]) == {"corrupted"}
    # a column with a missing value goes over Bolt, which stores it as no property
    sparse = edges.head(6_000)[["componentId_pre", "componentId_post", "channel", "score"]].copy()
    sparse["zScore"] = [float("nan")] + [1.5] * (len(sparse) - 1)
    monkeypatch.setenv("ATLAS_BULK", "1")
    cx.begin_run(store, RunRecord(run_id="sparse", model_id="bulk"))
    cx.write_edges(store, sparse, "sparse")
    assert calls[-1] == -1  # the bulk path declined
    z = store.read("MATCH ()-[e:ATTRIBUTION {runId: 'sparse'}]->() RETURN e.zScore AS z")["z"]
    assert len(z) == len(sparse) and z.isna().sum() == 1


def test_position_resolved_edges_take_the_bulk_path_with_their_positions(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    edges, nodes = _graph("pos", heads=20, layers=3)
    edges = pd.concat([edges.assign(srcPos=i, dstPos=i + 1) for i in range(3)], ignore_index=True)
    edges["srcPos"] = edges["srcPos"].astype("int64")
    edges["dstPos"] = edges["dstPos"].astype("int64")
    cx.write_model(store, model_stub("pos", 3))
    cx.write_components(store, nodes)
    calls = _spy(monkeypatch)
    stored = {}
    for how in ("1", "0"):
        monkeypatch.setenv("ATLAS_BULK", how)
        cx.begin_run(store, RunRecord(run_id=f"pos-{how}", model_id="pos"))
        cx.write_edges(store, edges, f"pos-{how}", rel_type=RelType.ATTRIBUTION_AT)
        stored[how] = store.read(
            "MATCH (a)-[e:ATTRIBUTION_AT {runId: $r}]->(b) RETURN a.componentId AS pre, b.componentId AS post, e.channel AS c, "
            "e.srcPos AS i, e.dstPos AS j, e.score AS s ORDER BY pre, post, c, i", {"r": f"pos-{how}"})
    assert calls == [len(edges)]
    assert len(stored["1"]) == len(edges)
    pd.testing.assert_frame_equal(stored["1"], stored["0"])


def test_a_bulk_write_naming_a_missing_component_writes_nothing(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    edges, nodes = _graph("gap", heads=30)
    cx.write_model(store, model_stub("gap", 4))
    cx.write_components(store, nodes[nodes["componentId"] != "gap/L3.H7"])
    monkeypatch.setenv("ATLAS_BULK", "1")
    calls = _spy(monkeypatch)
    cx.begin_run(store, RunRecord(run_id="gap", model_id="gap"))
    with pytest.raises(ValidationError, match="gap/L3.H7"):
        cx.write_edges(store, edges, "gap")
    assert calls == []  # raised inside: nothing returned
    assert int(store.read("MATCH ()-[e:ATTRIBUTION {runId: 'gap'}]->() RETURN count(e) AS n")["n"][0]) == 0


def _ask(path: Path, header: Any) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(path))
        payload = json.dumps(header).encode()
        conn.sendall(struct.pack(">Q", len(payload)) + payload)
        (n,) = struct.unpack(">Q", conn.recv(8, socket.MSG_WAITALL))
        return json.loads(conn.recv(n, socket.MSG_WAITALL))


def test_the_bulk_socket_is_private_and_refuses_what_it_does_not_know(embedded: StoreSettings) -> None:
    path = embedded.home / "arcadedb" / SOCKET_NAME
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0  # and in the user-only database folder
    assert "error" in _ask(path, {"op": "edges", "type": "Component) DETACH DELETE (n", "ids": []})
    assert "error" in _ask(path, {"op": "query", "text": "MATCH (n) RETURN n"})
    assert _ask(path, {"op": "edges", "type": "ATTRIBUTION", "ids": ["nobody/L0.H0"]})["missing"] == ["nobody/L0.H0"]


def test_an_ingest_through_the_bulk_path_is_idempotent_and_equals_bolt(store: Any, embedded: StoreSettings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.jobs.run import IngestConfig, run_ingest

    calls = _spy(monkeypatch)
    monkeypatch.setenv("ATLAS_BULK_MIN", "1")  # every edge write of the run through the bulk socket
    config = IngestConfig(model="induction-2l", method="eap", n_prompts=4)
    first = run_ingest(store, config, embedded.home, run_id="bulk-ingest", progress=False)
    assert calls and all(c > 0 for c in calls)
    before = cx.count_graph(store)
    again = run_ingest(store, config, embedded.home, run_id="bulk-ingest", progress=False)
    assert again.status == "unchanged" and cx.count_graph(store) == before
    monkeypatch.setenv("ATLAS_BULK", "0")
    run_ingest(store, config, embedded.home, run_id="bolt-ingest", progress=False)
    bulk = store.read("MATCH (a)-[e:ATTRIBUTION {runId: 'bulk-ingest'}]->(b) RETURN a.componentId AS a, b.componentId AS b, "
                      "e.channel AS c, e.score AS s ORDER BY a, b, c")
    bolt = store.read("MATCH (a)-[e:ATTRIBUTION {runId: 'bolt-ingest'}]->(b) RETURN a.componentId AS a, b.componentId AS b, "
                      "e.channel AS c, e.score AS s ORDER BY a, b, c")
    assert len(bulk) == first.n_edges > 0
    pd.testing.assert_frame_equal(bulk, bolt)


_WRITER = """
import os, sys
from pathlib import Path
import pandas as pd
from atlas import connectome as cx
from atlas.config import resolve_store_settings
from atlas.records import RunRecord
from atlas.schema import RelType
from atlas.store import Store
edges = pd.read_pickle(sys.argv[2])
with Store.connect(resolve_store_settings(home=Path(sys.argv[1])), quiet=True) as store:
    cx.begin_run(store, RunRecord(run_id=sys.argv[3], model_id="race"))
    cx.write_edges(store, edges, sys.argv[3])
"""


def test_a_bulk_load_and_bolt_writes_at_once_lose_nothing(store: Any, embedded: StoreSettings, tmp_path: Path) -> None:
    """The batch API appends to vertices' edge lists outside Bolt's transactions: without the home's
    writer lock a Bolt write to the same vertices meanwhile lost edges (50,000 of 300,000)."""
    import subprocess
    import sys

    from bench.synthetic import synthetic_edges

    edges, nodes = synthetic_edges(300_000, model="race")
    cx.write_model(store, model_stub("race", int(nodes["layer"].max()) + 1))
    cx.write_components(store, nodes)
    frame = tmp_path / "edges.pkl"
    edges.to_pickle(frame)
    env = dict(os.environ)
    runs = [f"race-{i}-{how}" for i, how in enumerate(("1", "1", "0"))]
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(embedded.home), str(frame), run],
                                env={**env, "ATLAS_BULK": run[-1]}) for run in runs]
    assert [w.wait(timeout=600) for w in writers] == [0, 0, 0]
    for run in runs:  # two bulk writers and one over Bolt at once, each run in full
        counts = store.read("MATCH ()-[e:ATTRIBUTION]->() WHERE e.runId = $r RETURN count(e) AS n", {"r": run})
        assert int(counts["n"][0]) == len(edges), run


def test_a_planted_writer_lock_is_refused_in_one_line(tmp_path: Path) -> None:
    from atlas.errors import StoreError
    from atlas.store import home_write_lock

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "write.lock").symlink_to(tmp_path / "elsewhere")
    settings = StoreSettings(uri=None, user=None, password=None, database=None, home=home)
    with pytest.raises(StoreError, match="writer lock"), home_write_lock(settings):
        pass
    assert not (tmp_path / "elsewhere").exists()
