"""Synthetic runs for benchmarks and scale tests: a wide head-level model with about ``n`` edges."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from atlas.store import Store


def synthetic_edges(n: int, model: str = "synthetic", seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A head-level run of a wide model shape with about ``n`` edges (heavy-tailed scores)."""
    from atlas.ids import component_id

    rng = np.random.default_rng(seed)
    layers = 4
    while True:  # grow the model until its complete head graph has >= n edges
        heads = max(4, int(np.sqrt(n / (1.5 * layers * layers))) + 1)
        senders = 1 + layers * heads
        total = sum(3 * heads * (1 + l * heads) for l in range(layers)) + senders
        if total >= n:
            break
        layers += 4
    send = ["EMBED"] + [f"L{l}.H{h}" for l in range(layers) for h in range(heads)]
    # the logits' inputs first, so that cutting to n edges keeps every path's end
    pre, post, chan = list(send), ["LOGITS"] * len(send), ["in"] * len(send)
    for l in range(layers):
        vis = send[: 1 + l * heads]
        for h in range(heads):
            for ch in "qkv":
                pre += vis
                post += [f"L{l}.H{h}"] * len(vis)
                chan += [ch] * len(vis)
    edges = pd.DataFrame({"componentId_pre": [f"{model}/{c}" for c in pre], "componentId_post": [f"{model}/{c}" for c in post],
                          "channel": chan, "score": rng.standard_cauchy(len(pre)) * 0.01}).head(n)
    nodes = [{"componentId": component_id(model, "embed"), "kind": "embed", "modelId": model, "layer": -1, "head": None}]
    nodes += [{"componentId": component_id(model, "head", layer=l, head=h), "kind": "head", "modelId": model, "layer": l, "head": h}
              for l in range(layers) for h in range(heads)]
    nodes += [{"componentId": component_id(model, "logits"), "kind": "logits", "modelId": model, "layer": layers, "head": None}]
    return edges, pd.DataFrame(nodes)


def write_synthetic_run(store: Store, n: int, run_id: str, model: str | None = None, seed: int = 0, *,
                        columns: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a complete synthetic run of about ``n`` edges (model, components, edges, status last)
    straight through :mod:`atlas.connectome`; returns its (edges, nodes). ``columns``: keep the edges
    as packed columns too, as ``atlas ingest`` does (whole-run reads then take one fetch)."""
    from atlas import connectome as cx
    from atlas.records import ModelRecord, RunRecord
    from atlas.schema import RunStatus

    model = model or f"synthetic-{n}"
    edges, nodes = synthetic_edges(n, model=model, seed=seed)
    layers = int(nodes["layer"].max())
    cx.ensure_schema(store)
    cx.write_model(store, ModelRecord(model, model, "synthetic", layers, 0, 0, 0, None, 0, 0, "bench"))
    cx.write_components(store, nodes)
    cx.delete_run(store, run_id)
    cx.begin_run(store, RunRecord(run_id=run_id, model_id=model))
    cx.write_edges(store, edges, run_id)
    if columns:
        from atlas.schema import RelType

        cx.write_edge_columns(store, run_id, RelType.ATTRIBUTION, edges, nodes)
    cx.set_run_status(store, run_id, RunStatus.COMPLETE, n_edges=len(edges), n_nodes=len(nodes))
    return edges, nodes
