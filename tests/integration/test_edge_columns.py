"""A run's columnar copy of its edges: exactly the edges the database holds, read back in a few
binary properties, deleted with the run, and never needed for a correct answer (readers fall back
to the edges themselves when a run has none)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.schema import RelType
from atlas.store import Store
from ingest.jobs.run import IngestConfig, run_ingest

KEY = ["componentId_pre", "componentId_post", "channel"]


def _from_edges(store: Store, run_id: str, rel: str = "ATTRIBUTION") -> pd.DataFrame:
    """The run's edges straight from the relationships, with both ends' kind and layer."""
    return store.read(
        f"MATCH (a:Component)-[e:{rel} {{runId: $run}}]->(b:Component) RETURN a.componentId AS componentId_pre, "
        "b.componentId AS componentId_post, [l IN labels(a) WHERE l <> 'Component'][0] AS kind_pre, "
        "[l IN labels(b) WHERE l <> 'Component'][0] AS kind_post, a.layer AS layer_pre, b.layer AS layer_post, "
        "e.channel AS channel, e.score AS score" + (", e.srcPos AS srcPos, e.dstPos AS dstPos" if rel == "ATTRIBUTION_AT" else ""),
        {"run": run_id})


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("part", [16, 262_144])
def test_columns_equal_the_edges_bit_for_bit(store: Store, embedded: StoreSettings, monkeypatch: pytest.MonkeyPatch, part: int) -> None:
    monkeypatch.setattr(cx, "_COLUMNS_PART", part)  # 16: an 81-edge run in six parts
    run_id = f"columns-{part}"
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4, per_position=True), embedded.home,
               run_id=run_id, progress=False)
    for rel, keys in ((RelType.ATTRIBUTION, KEY), (RelType.ATTRIBUTION_AT, [*KEY, "srcPos", "dstPos"])):
        snapshot = cx.fetch_edge_snapshot(store, run_id, rel)
        assert snapshot is not None
        want = _sorted(_from_edges(store, run_id, rel.value), keys)
        got = _sorted(snapshot, keys)
        assert list(got.columns) == list(want.columns)
        for col in want.columns:
            if col == "score":
                assert np.array_equal(got[col].to_numpy(), want[col].to_numpy(dtype=float))  # float64, not rounded
            else:
                assert got[col].tolist() == want[col].tolist(), col
        weight = float(snapshot["score"].abs().median())  # chosen on the codes, before strings are decoded
        strong = cx.fetch_edge_snapshot(store, run_id, rel, min_weight=weight)
        assert strong is not None and 0 < len(strong) < len(snapshot)
        pd.testing.assert_frame_equal(strong, snapshot[snapshot["score"].abs() >= weight].reset_index(drop=True))
    coded = cx.fetch_edge_columns(store, run_id, categorical=True)
    assert isinstance(coded["componentId_pre"].dtype, pd.CategoricalDtype)
    assert _sorted(coded.astype({c: str for c in KEY}), KEY).equals(_sorted(cx.fetch_edge_columns(store, run_id), KEY))
    parts = store.read("MATCH (s:EdgeColumns {runId: $run, relType: 'ATTRIBUTION'}) RETURN count(s) AS n", {"run": run_id})["n"].iloc[0]
    assert parts == (6 if part == 16 else 1)


def test_readers_answer_the_same_without_the_columns_and_delete_removes_them(store: Store, embedded: StoreSettings) -> None:
    run_id = "columns-fallback"
    run_ingest(store, IngestConfig(model="induction-2l", method="eap-ig", n_prompts=4), embedded.home, run_id=run_id, progress=False)
    with_columns = (cx.fetch_edges(store, run_id), cx.fetch_edges(store, run_id, top=7, kind_post="Head", min_weight=0.01),
                    cx.fetch_edge_columns(store, run_id, min_weight=0.05))
    cx.delete_edge_columns(store, run_id)  # as a run written before columns were kept
    assert cx.fetch_edge_snapshot(store, run_id) is None
    without = (cx.fetch_edges(store, run_id), cx.fetch_edges(store, run_id, top=7, kind_post="Head", min_weight=0.01),
               cx.fetch_edge_columns(store, run_id, min_weight=0.05))
    for a, b in zip(with_columns, without):
        keys = [c for c in KEY if c in a.columns]
        assert len(a) == len(b) > 0
        pd.testing.assert_frame_equal(_sorted(a, keys), _sorted(b, keys), check_dtype=False)
    model = cx.fetch_run(store, run_id).model_id
    every = cx.fetch_components(store, model)
    some = every["componentId"].iloc[::3].tolist()
    chosen = cx.fetch_components(store, model, some + ["induction-2l/L9.H9"])  # an id the model lacks is no row
    pd.testing.assert_frame_equal(chosen, every[every["componentId"].isin(some)].dropna(axis=1, how="all").reset_index(drop=True),
                                  check_dtype=False)
    top_a, top_b = with_columns[1], without[1]
    assert top_a["score"].abs().tolist() == top_b["score"].abs().tolist()  # the same strongest edges, in order
    run_ingest(store, IngestConfig(model="induction-2l", method="eap-ig", n_prompts=4, seed=1), embedded.home, run_id="columns-gone",
               progress=False)
    assert cx.fetch_edge_snapshot(store, "columns-gone") is not None
    cx.delete_run(store, "columns-gone")
    assert store.read("MATCH (s:EdgeColumns {runId: 'columns-gone'}) RETURN count(s) AS n")["n"].iloc[0] == 0
