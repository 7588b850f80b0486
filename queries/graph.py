"""Connectome graphs in memory: an edge frame as a networkx graph, and its collapsed weighted form.

``collapse`` merges the channels of each (pre, post) pair and attaches ``share``: the pair's summed
|score| divided by the total |score| entering the post component. Shares into a component sum to 1,
so a path's strength (the product of its shares) is the fraction of attribution flow it carries,
the analogue of neuPrint's connection weight normalised by the downstream neuron's input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from atlas.ids import parse_component_id, split_position
from atlas.schema import KIND_LABEL, RelType
from atlas.store import Store

if TYPE_CHECKING:  # networkx is imported where a graph is built: a kept answer needs none
    import networkx as nx

__all__ = ["edges_to_graph", "collapse", "fetch_graph", "kind_and_layer"]


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
    ``components`` when given, else ``kind`` and ``layer`` read from the ids."""
    import networkx as nx

    g = nx.MultiDiGraph()
    if components is not None and not components.empty:
        for rec in components.to_dict("records"):
            g.add_node(rec["componentId"], **{k: v for k, v in rec.items() if k != "componentId" and _present(v)})
    for rec in edges.to_dict("records"):
        for end in ("pre", "post"):
            cid = rec[f"componentId_{end}"]
            if cid not in g:
                id_kind, id_layer = kind_and_layer(cid)
                kind = rec.get(f"kind_{end}") if _present(rec.get(f"kind_{end}")) else id_kind
                layer = rec.get(f"layer_{end}") if _present(rec.get(f"layer_{end}")) else id_layer
                g.add_node(cid, kind=kind, layer=layer)
        g.add_edge(rec["componentId_pre"], rec["componentId_post"], key=rec["channel"], channel=rec["channel"], score=float(rec["score"]))
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

    out = nx.DiGraph()
    out.add_nodes_from(graph.nodes(data=True))
    for u, v, d in graph.edges(data=True):
        if abs(d["score"]) < min_weight:
            continue
        if out.has_edge(u, v):
            e = out[u][v]
            e["weight"] += abs(d["score"])
            e["score"] += d["score"]
            e["channels"].append(d["channel"])
        else:
            out.add_edge(u, v, weight=abs(d["score"]), score=d["score"], channels=[d["channel"]])
    for v in out.nodes:
        total = sum(d["weight"] for _, _, d in out.in_edges(v, data=True))
        for _, _, d in out.in_edges(v, data=True):
            d["share"] = d["weight"] / total if total > 0 else 0.0
            d["cost"] = -math.log(d["share"]) if d["share"] > 0 else math.inf
    return out


def fetch_graph(store: Store, run_id: str, *, min_weight: float = 0.0, rel_type: RelType = RelType.ATTRIBUTION) -> nx.MultiDiGraph:
    """A run's edges (|score| >= ``min_weight``) with its components' properties, as a multigraph."""
    from queries.fetch import fetch_components, fetch_edges, require_run

    run = require_run(store, run_id)
    edges = fetch_edges(store, run_id, min_weight=min_weight, rel_type=rel_type)
    comps = fetch_components(store, run.model_id)
    if not comps.empty:
        comps = comps[comps["componentId"].isin(set(edges["componentId_pre"]) | set(edges["componentId_post"]))]
    return edges_to_graph(edges, comps)
