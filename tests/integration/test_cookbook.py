"""Every query of the Cypher cookbook (docs/cookbook.md) runs on the embedded database and returns rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from bench.scale import readme_cookbook
from ingest.jobs.run import IngestConfig, run_ingest
from ingest.jobs.studies import LesionConfig, run_anatomy, run_lesion, run_probe, save_circuit, verify_run

QUERIES = readme_cookbook()


def test_the_cookbook_has_ten_or_more_queries() -> None:
    assert len(QUERIES) >= 10


@pytest.fixture(scope="module")
def filled(store: Store, embedded: StoreSettings) -> Store:
    home = embedded.home
    run_ingest(store, IngestConfig(model="induction-2l", n_prompts=8), home, run_id="demo-induction-2l", progress=False)
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=8), home, run_id="demo-eap", progress=False)
    run_anatomy(store, "induction-2l", home, n_random=20)
    run_probe(store, "induction-2l", home)
    verify_run(store, "demo-induction-2l", 10, home, progress=False)
    save_circuit(store, "demo-induction-2l", home, top=20)
    run_lesion(store, LesionConfig(model="induction-2l", ablation="resample", n_prompts=4, n_reference=8), home, progress=False)
    return store


@pytest.mark.parametrize("title,cypher,params", QUERIES, ids=[q[0] for q in QUERIES])
def test_cookbook_query(filled: Store, title: str, cypher: str, params: dict) -> None:
    rows = filled.read(cypher, params)
    assert len(rows) > 0, f"{title!r} returned no rows"
    assert not rows.isna().all(axis=None)


def _three_hop_routes(edges: pd.DataFrame, source: str, target: str, min_weight: float) -> list[tuple]:
    """Every route source -> x -> y -> target over edges with |score| >= min_weight, enumerated in
    pandas from the run's edges (a reference independent of the query's plan)."""
    e = edges[edges["score"].abs() >= min_weight]
    first = e[e["componentId_pre"] == source].rename(columns={"componentId_post": "x", "channel": "c1", "score": "s1"})
    second = e.rename(columns={"componentId_pre": "x", "componentId_post": "y", "channel": "c2", "score": "s2"})
    third = e[e["componentId_post"] == target].rename(columns={"componentId_pre": "y", "channel": "c3", "score": "s3"})
    routes = first[["x", "c1", "s1"]].merge(second[["x", "y", "c2", "s2"]], on="x").merge(third[["y", "c3", "s3"]], on="y")
    return sorted(((source, r.x, r.y, target), (r.c1, r.c2, r.c3), round(abs(r.s1 * r.s2 * r.s3), 15)) for r in routes.itertuples())


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9])
def test_three_hop_query_finds_every_route(filled: Store, quantile: float) -> None:
    """Query 4 joins the target's inputs to the first two hops (so a large run is not expanded from
    every middle component): without its LIMIT it returns exactly the run's three-hop routes."""
    title, cypher, params = next(q for q in QUERIES if q[0].startswith("4."))
    edges = cx.fetch_edges(filled, params["run"])
    min_weight = float(edges["score"].abs().quantile(quantile))
    want = _three_hop_routes(edges, params["source"], params["target"], min_weight)
    assert len(want) > 0, "the reference found no route: the test would prove nothing"
    rows = filled.read(cypher.replace("LIMIT 10", ""), {**params, "min": min_weight})
    got = sorted((tuple(r.path), tuple(r.channels), round(r.strength, 15)) for r in rows.itertuples())
    assert got == want
    top = filled.read(cypher, {**params, "min": min_weight})
    strongest = sorted((s for _, _, s in want), reverse=True)[:10]
    assert len(top) == len(strongest) and np.allclose(top["strength"], strongest, rtol=1e-9, atol=0)
