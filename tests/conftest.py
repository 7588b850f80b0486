"""Shared fixtures: tiny models built from configs, and a real embedded database over Bolt.

Tiers, as markers set here from where a test lives and what it needs (``make test-fast`` runs
``unit`` only):
  - ``unit``: no database, browser or network (``tests/unit``, less what is marked below);
  - ``db``: talks to a real embedded ArcadeDB server (``tests/integration``: one server per test
    session, wiped per module). Nothing here mocks the database;
  - ``browser``: drives headless Chromium; ``network``: installs packages from the registry;
  - ``slow``: trains or ingests real models (seconds to a minute), marked on the test itself.

Another server: ``ATLAS_TEST_URI=neo4j://host:7687 ATLAS_TEST_PASSWORD=... [ATLAS_TEST_USER=neo4j]
[ATLAS_TEST_DATABASE=...] make test`` runs the integration suite against that Bolt server instead
of the embedded one (it becomes ``ATLAS_URI`` etc. for every store and command the tests open).
The suite empties that database: point it at a scratch one. Tests of the embedded server itself
(its files, heap, users, process) are marked ``embedded_only`` and skipped there, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


TEST_URI = os.environ.get("ATLAS_TEST_URI") or None
"""A Bolt URI to run the integration suite against instead of the embedded server (None: embedded)."""
if TEST_URI is not None:
    for _name in ("URI", "USER", "PASSWORD", "DATABASE"):
        if os.environ.get(f"ATLAS_TEST_{_name}"):
            os.environ[f"ATLAS_{_name}"] = os.environ[f"ATLAS_TEST_{_name}"]
        else:
            os.environ.pop(f"ATLAS_{_name}", None)

_BROWSER = {"test_browser.py", "test_explorer.py"}
_NETWORK = {"test_bench_smoke.py", "test_node_link_versions.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        tiers = set()
        if path.name in _BROWSER:
            tiers.add("browser")
        if path.name in _NETWORK:
            tiers.add("network")
        if "integration" in path.parts:
            tiers.add("db")
        if not tiers and "slow" not in item.keywords:
            tiers.add("unit")
        for tier in sorted(tiers):
            item.add_marker(getattr(pytest.mark, tier))
        if TEST_URI is not None and "embedded_only" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"tests the embedded ArcadeDB server itself; ATLAS_TEST_URI={TEST_URI} is set"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"atlas store: {TEST_URI} (ATLAS_TEST_URI; the suite empties it)" if TEST_URI else "atlas store: the embedded ArcadeDB server"


def make_tiny(seed: int = 0, *, attn_only: bool = False, normalization: str | None = "LN", parallel: bool = False) -> object:
    """A 2-layer HookedTransformer with random weights (LN, GELU MLPs unless told otherwise)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, d_mlp=None if attn_only else 64,
        act_fn="gelu", normalization_type=normalization, attn_only=attn_only, parallel_attn_mlp=parallel, seed=seed,
    )
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def nearby_corruption(model: object, eps: float, n_prompts: int = 4, length: int = 12) -> object:
    """Make tokens 25..49 of ``model`` (float64 from here on) copies of tokens 0..24 moved by
    ``eps`` (relative) and return prompts whose corrupted version is the clean one shifted by 25:
    the small-perturbation limit where attribution patching must agree with patching."""
    from ingest.model.tasks import PromptBatch

    model.to(torch.float64)  # float32 metric differences are quantised at ~5e-7: use float64
    with torch.no_grad():
        noise = torch.randn(25, model.cfg.d_model, generator=torch.Generator().manual_seed(0)).double()
        rows = model.W_E[:25]
        model.W_E[25:50] = rows + eps * noise * rows.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 25, (n_prompts, length), generator=gen)
    targets = torch.randint(0, 50, (n_prompts, length), generator=gen)
    return PromptBatch(clean, clean + 25, targets, torch.ones_like(clean, dtype=torch.bool))


def model_stub(model_id: str, n_layers: int = 1) -> object:
    """A ``:Model`` record for hand-built test graphs (only the id and depth matter there)."""
    from atlas.records import ModelRecord

    return ModelRecord(model_id, model_id, "hand-built", n_layers, 0, 0, 0, None, 0, 0, "test")


@pytest.fixture(scope="session")
def tiny_model() -> object:
    return make_tiny()


@pytest.fixture(scope="session")
def atlas_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("atlas-home")


@pytest.fixture(scope="session")
def embedded(atlas_home: Path) -> Iterator[object]:
    """A real embedded ArcadeDB server for the session, stopped at the end; under ``ATLAS_TEST_URI``
    the settings of that server instead (the home still holds caches and outputs)."""
    from atlas.config import resolve_store_settings
    from atlas.server import start_server, stop_server

    if TEST_URI is not None:
        yield resolve_store_settings(home=atlas_home)
        return
    info, _ = start_server(atlas_home, quiet=True)
    settings = resolve_store_settings(home=atlas_home)
    try:
        yield settings
    finally:
        stop_server(atlas_home)


@pytest.fixture(scope="module")
def store(embedded: object) -> Iterator[object]:
    """A store on the session server, emptied for this module."""
    from atlas.store import Store

    with Store.connect(embedded, quiet=True) as s:  # type: ignore[arg-type]
        s.run("MATCH (n) DETACH DELETE n", write=True)
        yield s
