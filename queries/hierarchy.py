"""Hierarchy levels of a connectome: where each component sits in the flow, and where it skips.

Method:
  1. Keep significant edges (|score| >= ``min_weight``; channels merged) and check the graph is a DAG.
  2. A component's level is the longest path (in hops) from the embedding; unreachable ones get none.
  3. An edge skips ``level(post) - level(pre) - 1`` levels; the hierarchy's strictness is the share of
     edges that skip none, reported with the distribution of skip lengths and the skipping edges.
  4. Modules: Louvain communities (Blondel et al. 2008) of the undirected weighted graph, fixed seed;
     flow hierarchy (Luo & Magee 2011): the share of edge weight not in a cycle (1.0 for any DAG).
Levels next to layers show where the computation is shallower than the architecture (a layer-1
head at level 1 is read straight from the embedding) or deeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.stats import spearman
from atlas.store import Store
from queries.graph import collapse, fetch_graph

__all__ = ["Hierarchy", "compute_hierarchy", "fetch_hierarchy", "write_hierarchy"]


@dataclass
class Hierarchy:
    """Result of :func:`compute_hierarchy`.

    Attributes:
        levels: ``componentId, kind, layer, level, module`` per component.
        edges: ``componentId_pre, componentId_post, weight, skip`` per significant edge.
        summary: ``strictness``, ``skipShare``, ``skipHistogram``, ``levelLayerSpearman``,
            ``nModules``, ``modularity``, ``flowHierarchy``, ``depth``.
    """

    levels: pd.DataFrame
    edges: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def compute_hierarchy(graph: nx.MultiDiGraph | nx.DiGraph, min_weight: float = 0.0, seed: int = 0) -> Hierarchy:
    """Levels, skips, modules and flow hierarchy of a connectome graph (see module docstring)."""
    g = collapse(graph, min_weight) if isinstance(graph, nx.MultiDiGraph) else graph
    if g.number_of_edges() == 0:
        raise ValidationError(f"no edges with |score| >= {min_weight}")
    if not nx.is_directed_acyclic_graph(g):
        raise ValidationError("the connectome has a cycle: levels need a feed-forward graph")
    sources = [n for n, a in g.nodes(data=True) if a.get("kind") == "Embed"] or [n for n in g if g.in_degree(n) == 0]
    level: dict[str, int] = {s: 0 for s in sources}
    for n in nx.topological_sort(g):
        preds = [level[p] + 1 for p in g.predecessors(n) if p in level]
        if preds:
            level[n] = max(preds)
    # Louvain visits nodes in a seeded shuffle of the graph's node order: the order is made the
    # components' own (layer, then id), so the modules do not depend on how the edges were fetched
    order = sorted(g.nodes, key=lambda n: (_layer_key(g.nodes[n].get("layer")), str(n)))
    rank = {n: i for i, n in enumerate(order)}
    undirected = nx.Graph()
    undirected.add_nodes_from(order)
    for u, v, d in sorted(g.edges(data=True), key=lambda e: (rank[e[0]], rank[e[1]])):
        w = undirected[u][v]["weight"] + d["weight"] if undirected.has_edge(u, v) else d["weight"]
        undirected.add_edge(u, v, weight=w)
    communities = nx.community.louvain_communities(undirected, weight="weight", seed=seed)
    module = {n: i for i, members in enumerate(sorted(communities, key=lambda c: sorted(c))) for n in members}
    levels = pd.DataFrame([
        {"componentId": n, "kind": a.get("kind"), "layer": a.get("layer"), "level": level.get(n), "module": module.get(n)}
        for n, a in g.nodes(data=True)
    ]).sort_values(["level", "componentId"], na_position="last").reset_index(drop=True)
    edges = pd.DataFrame([
        {"componentId_pre": u, "componentId_post": v, "weight": d["weight"],
         "skip": level[v] - level[u] - 1 if u in level and v in level else None}
        for u, v, d in g.edges(data=True)
    ])
    skips = edges["skip"].dropna().astype(int)
    reach = levels.dropna(subset=["level", "layer"])
    rho = spearman(reach["level"], reach["layer"]) if len(reach) > 2 and reach["level"].nunique() > 1 else float("nan")
    summary = {
        "strictness": float((skips == 0).mean()) if len(skips) else float("nan"),
        "skipShare": float((skips > 0).mean()) if len(skips) else float("nan"),
        "skipHistogram": {int(k): int(v) for k, v in skips.value_counts().sort_index().items()},
        "levelLayerSpearman": float(rho),
        "depth": int(max(level.values())) if level else 0,
        "nModules": len(communities),
        "modularity": float(nx.community.modularity(undirected, communities, weight="weight")),
        "flowHierarchy": 1.0,  # Luo & Magee's share of weight off cycles: all of it in a DAG (checked above)
    }
    return Hierarchy(levels, edges.sort_values(["skip", "weight"], ascending=[False, False]).reset_index(drop=True), summary)


def _layer_key(layer: Any) -> float:
    """A node's layer for ordering; none (the embedding) first."""
    return float(layer) if layer is not None and layer == layer else -1.0


def fetch_hierarchy(store: Store, run_id: str, min_weight: float = 0.0) -> Hierarchy:
    """:func:`compute_hierarchy` over a stored run."""
    return compute_hierarchy(fetch_graph(store, run_id, min_weight=min_weight, properties=False), min_weight)


def write_hierarchy(store: Store, run_id: str, result: Hierarchy, min_weight: float) -> int:
    """Write ``(c)-[:IN_RUN {level, module, minWeight}]->(:Run)`` for each component (replacing old ones)."""
    return cx.write_hierarchy(store, run_id, result.levels, min_weight)
