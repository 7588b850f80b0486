"""Connectome graphs in memory: an edge frame as a networkx graph, and its collapsed weighted form.

``collapse`` merges the channels of each (pre, post) pair and attaches ``share``: the pair's summed
|score| divided by the total |score| entering the post component. Shares into a component sum to 1,
so a path's strength (the product of its shares) is the fraction of attribution flow it carries,
the analogue of neuPrint's connection weight normalised by the downstream neuron's input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atlas.ids import parse_component_id, split_position
from atlas.schema import KIND_LABEL, RelType
from atlas.store import Store

if TYPE_CHECKING:  # networkx is imported where a graph is built: a kept answer needs none
    import networkx as nx

__all__ = ["edges_to_graph", "collapse", "fetch_graph", "edge_components", "kind_and_layer"]


def _present(v: Any) -> bool:
    if v is None:
        return False
    try:
        return not pd.isna(v)
    except (TypeError, ValueError):
        return True


def kind_and_layer(cid: str) -> tuple[str, int | None]:
    """Label and layer read from a component id (the grammar lives in :mod:`atlas.ids`); a
    position-resolved node (``cid:pos``) is read as its component."""
    ref = parse_component_id(split_position(cid)[0])
    return KIND_LABEL[ref.kind], ref.layer


def edges_to_graph(edges: pd.DataFrame, components: pd.DataFrame | None = None) -> nx.MultiDiGraph:
    """A multigraph with one edge per (pre, post, channel) (key = channel); node attributes from
    ``components`` when given, else ``kind`` and ``layer`` (the frame's columns, else read from the
    ids). Nodes and edges are inserted in the frame's order (pre then post of each row), which
    the seeded community detection downstream depends on."""
    import networkx as nx

    g = nx.MultiDiGraph()
    if components is not None and not components.empty:
        for rec in components.to_dict("records"):
            g.add_node(rec["componentId"], **{k: v for k, v in rec.items() if k != "componentId" and _present(v)})
    pre, post = edges["componentId_pre"].astype(object).to_numpy(), edges["componentId_post"].astype(object).to_numpy()
    # pre0, post0, pre1, post1, ...: each node's first appearance, in the order a row loop would add it
    codes, ids = pd.factorize(np.column_stack([pre, post]).ravel(), sort=False)
    first = np.unique(codes, return_index=True)[1]

    def end_values(column: str) -> list[Any]:
        if f"{column}_pre" not in edges.columns:
            return [None] * len(ids)
        both = np.column_stack([edges[f"{column}_pre"].astype(object).to_numpy(), edges[f"{column}_post"].astype(object).to_numpy()])
        return both.ravel()[first].tolist()

    for cid, kind, layer in zip(ids.tolist(), end_values("kind"), end_values("layer")):
        if cid not in g:
            id_kind, id_layer = kind_and_layer(cid)
            g.add_node(cid, kind=kind if _present(kind) else id_kind, layer=layer if _present(layer) else id_layer)
    channels = edges["channel"].astype(object).tolist()
    g.add_edges_from(
        (u, v, ch, {"channel": ch, "score": s})
        for u, v, ch, s in zip(pre.tolist(), post.tolist(), channels, edges["score"].astype(float).tolist())
    )
    layers = [a.get("layer") for _, a in g.nodes(data=True) if _present(a.get("layer"))]
    top = max(layers) + 1 if layers else 0
    for _, attrs in g.nodes(data=True):
        if attrs.get("kind") == "Logit" and not _present(attrs.get("layer")):
            attrs["layer"] = top
    return g


def collapse(graph: nx.MultiDiGraph, min_weight: float = 0.0) -> nx.DiGraph:
    """Merge channels: edge attributes ``weight`` (sum |score|), ``score`` (signed sum), ``channels``,
    ``share`` (weight / total weight into the target) and ``cost`` (-log share). Edges whose every
    channel has ``|score| < min_weight`` are dropped before the shares are computed."""
    import networkx as nx

    merged: dict[tuple[Any, Any], dict[str, Any]] = {}  # in first-seen order: the order add_edge would give
    for u, v, d in graph.edges(data=True):
        score = d["score"]
        if abs(score) < min_weight:
            continue
        e = merged.get((u, v))
        if e is None:
            merged[(u, v)] = {"weight": abs(score), "score": score, "channels": [d["channel"]]}
        else:
            e["weight"] += abs(score)
            e["score"] += score
            e["channels"].append(d["channel"])
    totals: dict[Any, float] = {}
    for (_, v), e in merged.items():  # summed in the order of v's in-edges, as a sum over in_edges(v) would
        totals[v] = totals.get(v, 0) + e["weight"]
    for (_, v), e in merged.items():
        total = totals[v]
        e["share"] = e["weight"] / total if total > 0 else 0.0
        e["cost"] = -math.log(e["share"]) if e["share"] > 0 else math.inf
    out = nx.DiGraph()
    out.add_nodes_from(graph.nodes(data=True))
    out.add_edges_from((u, v, e) for (u, v), e in merged.items())
    return out


def fetch_graph(store: Store, run_id: str, *, min_weight: float = 0.0, rel_type: RelType = RelType.ATTRIBUTION,
                properties: bool = True) -> nx.MultiDiGraph:
    """A run's edges (|score| >= ``min_weight``) as a multigraph, its nodes with their components'
    properties; ``properties=False``: ``kind`` and ``layer`` only (what level and module analyses
    read; a neuron-level run's neurons each carry a receptive field not worth fetching for them)."""
    from queries.fetch import fetch_edges, require_run

    run = require_run(store, run_id)
    edges = fetch_edges(store, run_id, min_weight=min_weight, rel_type=rel_type)
    return edges_to_graph(edges, edge_components(store, run.model_id, edges) if properties else None)


def edge_components(store: Store, model_id: str, edges: pd.DataFrame) -> pd.DataFrame:
    """The components (with their properties) that the edges of a frame touch."""
    from queries.fetch import fetch_components

    touched = set(edges["componentId_pre"]) | set(edges["componentId_post"])
    # a few hundred ids are looked up by id; more are cheaper fetched with the whole model and kept here
    comps = fetch_components(store, model_id, touched if len(touched) <= _LOOKUP_IDS else None)
    return comps[comps["componentId"].isin(touched)] if not comps.empty else comps


_LOOKUP_IDS = 500
