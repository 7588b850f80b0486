"""Every query of the README's Cypher cookbook runs on the embedded database and returns rows."""

from __future__ import annotations

import pytest

from atlas.config import StoreSettings
from atlas.store import Store
from bench.scale import readme_cookbook
from ingest.jobs import IngestConfig, run_ingest
from ingest.studies import LesionConfig, run_anatomy, run_lesion, run_probe, save_circuit, verify_run

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
