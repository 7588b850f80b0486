"""Pathways: the strongest routes of attribution from sources (default the embedding) to targets
(default the logits), neuPrint's ``fetch_paths`` / ``fetch_shortest_paths`` habits.

Path strength: the product of the hops' shares, where a hop's share is its summed |score| over
channels divided by all |score| entering the hop's target (see :mod:`queries.graph`). The strongest
paths are the k shortest simple paths on cost ``-log(share)`` (Yen's algorithm, via networkx):
  1. collapse channels and compute shares (edges below ``min_weight`` dropped first);
  2. join all sources to a virtual source and all targets to a virtual sink at cost 0;
  3. enumerate simple paths by increasing cost, keeping those that pass ``through`` criteria and
     fit ``max_length``, until ``k`` are found (or ``max_candidates`` were examined).
Which function should I use? ``top_paths`` on a graph you hold; ``fetch_paths`` for a stored run;
``fetch_shortest_paths`` / ``fetch_all_paths`` to let the database do it in Cypher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import pandas as pd

from atlas.errors import NoPath, ValidationError
from atlas.store import Store
from queries.criteria import ComponentCriteria
from queries.graph import collapse, fetch_graph

__all__ = ["top_paths", "fetch_paths", "fetch_shortest_paths", "fetch_all_paths", "PATH_COLUMNS"]

PATH_COLUMNS = ["rank", "strength", "length", "path", "nodes", "shares", "scores", "channels"]
_SRC, _DST = "__source__", "__sink__"


def _ends(g: nx.DiGraph, crit: ComponentCriteria | None, default_kind: str, what: str) -> list[str]:
    crit = crit or ComponentCriteria(kind=default_kind)
    ids = crit.select(g.nodes(data=True))
    if not ids:
        raise NoPath(f"no {what} component matches {crit}")
    return ids


def top_paths(
    graph: nx.MultiDiGraph | nx.DiGraph,
    *,
    sources: ComponentCriteria | None = None,
    targets: ComponentCriteria | None = None,
    k: int = 10,
    min_weight: float = 0.0,
    through: Sequence[ComponentCriteria] = (),
    max_length: int | None = None,
    max_candidates: int = 100_000,
    split_channels: bool = False,
) -> pd.DataFrame:
    """The ``k`` strongest simple paths (see module docstring); one row per path, strongest first.

    With ``split_channels`` each channel is its own hop (share = that channel's |score| over all
    |score| entering the target), so ``EMBED -q-> L1.H0`` and ``EMBED -k-> L1.H0`` are different paths.

    Columns: ``rank``, ``strength`` (product of shares), ``length`` (hops), ``path`` (ids joined by
    `` -> ``), ``nodes``, ``shares``, ``scores`` (signed, summed over channels) and ``channels`` per hop.

    Raises:
        NoPath: no source/target matches, or no path satisfies the constraints.
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1, got {k}")
    if max_length is not None and max_length < 1:
        raise ValidationError(f"max_length must be at least 1, got {max_length}")
    if split_channels:
        if not isinstance(graph, nx.MultiDiGraph):
            raise ValidationError("split_channels needs the multigraph (one edge per channel)")
        g = _split(graph, min_weight)
    else:
        g = collapse(graph, min_weight) if isinstance(graph, nx.MultiDiGraph) else graph.copy()
    src = _ends(g, sources, "Embed", "source")
    dst = _ends(g, targets, "Logit", "target")
    for s in src:
        g.add_edge(_SRC, s, cost=0.0)
    for t in dst:
        g.add_edge(t, _DST, cost=0.0)
    g.remove_edges_from([(u, v) for u, v, d in g.edges(data=True) if math.isinf(d.get("cost", 0.0))])
    rows = []
    try:
        candidates = nx.shortest_simple_paths(g, _SRC, _DST, weight="cost")
        for examined, full in enumerate(candidates):
            if examined >= max_candidates or len(rows) == k:
                break
            nodes = [n for n in full[1:-1] if not g.nodes[n].get("virtual")]
            if len(nodes) < 2:
                continue
            hops = len(nodes) - 1
            if max_length is not None and hops > max_length:
                continue
            if through and not all(any(c.matches({"componentId": n, **g.nodes[n]}) for n in nodes[1:-1]) for c in through):
                continue
            data = _hops(g, full[1:-1])
            shares = [d["share"] for d in data]
            rows.append({
                "rank": len(rows) + 1,
                "strength": math.prod(shares),
                "length": hops,
                "path": " -> ".join(nodes),
                "nodes": nodes,
                "shares": shares,
                "scores": [d["score"] for d in data],
                "channels": ["+".join(sorted(d["channels"])) for d in data],
            })
    except nx.NetworkXNoPath:
        pass
    if not rows:
        raise NoPath("no path from the sources to the targets satisfies the constraints")
    return pd.DataFrame(rows, columns=PATH_COLUMNS)


def _split(graph: nx.MultiDiGraph, min_weight: float) -> nx.DiGraph:
    """One virtual node ``v#ch`` per receiving channel: ``u -> v#ch`` (the channel's share) ``-> v`` (free)."""
    out = nx.DiGraph()
    out.add_nodes_from(graph.nodes(data=True))
    totals: dict[str, float] = {}
    for _, v, d in graph.edges(data=True):
        if abs(d["score"]) >= min_weight:
            totals[v] = totals.get(v, 0.0) + abs(d["score"])
    for u, v, d in graph.edges(data=True):
        if abs(d["score"]) < min_weight or totals.get(v, 0.0) <= 0:
            continue
        via = f"{v}#{d['channel']}"
        if via not in out:
            out.add_node(via, virtual=True)
            out.add_edge(via, v, cost=0.0, virtual=True)
        share = abs(d["score"]) / totals[v]
        out.add_edge(u, via, share=share, cost=-math.log(share) if share > 0 else math.inf, score=d["score"], channels=[d["channel"]])
    return out


def _hops(g: nx.DiGraph, chain: list[str]) -> list[dict]:
    """Per real hop, the data of the edge entering it (skipping the free edges out of virtual nodes)."""
    data = []
    for a, b in zip(chain, chain[1:]):
        if not g[a][b].get("virtual"):
            data.append(g[a][b])
    return data


def fetch_paths(
    store: Store,
    run_id: str,
    *,
    sources: ComponentCriteria | None = None,
    targets: ComponentCriteria | None = None,
    top: int = 10,
    min_weight: float = 0.0,
    through: Sequence[ComponentCriteria] = (),
    max_length: int | None = None,
    split_channels: bool = False,
) -> pd.DataFrame:
    """``top_paths`` over a stored run (fetched with ``|score| >= min_weight``)."""
    graph = fetch_graph(store, run_id, min_weight=min_weight)
    return top_paths(graph, sources=sources, targets=targets, k=top, through=through, max_length=max_length,
                     split_channels=split_channels)


def fetch_shortest_paths(store: Store, run_id: str, source: str, target: str, *, min_weight: float = 0.0, max_length: int = 6) -> pd.DataFrame:
    """Fewest-hop paths between two components in the database, over the run's edges with
    ``|score| >= min_weight``; one row per path with its per-hop scores.

    Written as a bounded variable-length match filtered first and cut to the minimum length, not
    ``allShortestPaths ... WHERE``: ArcadeDB finds the unfiltered shortest path and then filters it
    away, while Neo4j searches under the predicate; this form means the same on both.
    """
    from queries.fetch import require_run

    require_run(store, run_id)
    if not 1 <= max_length <= 6:
        raise ValidationError("max_length must be between 1 and 6 (path counts grow exponentially)")
    df = store.read(
        f"MATCH p = (a:Component {{componentId: $source}})-[:ATTRIBUTION*1..{int(max_length)}]->(b:Component {{componentId: $target}}) "
        "WHERE all(e IN relationships(p) WHERE e.runId = $run AND abs(e.score) >= $w) "
        "WITH collect(p) AS found, min(length(p)) AS shortest "
        "UNWIND found AS p WITH p, shortest WHERE length(p) = shortest "
        "RETURN [n IN nodes(p) | n.componentId] AS nodes, [e IN relationships(p) | e.score] AS scores, "
        "[e IN relationships(p) | e.channel] AS channels, length(p) AS length",
        {"source": source, "target": target, "run": run_id, "w": float(min_weight)},
    )
    if df.empty:
        raise NoPath(f"no path from {source} to {target} in run {run_id} with |score| >= {min_weight}")
    df["path"] = df["nodes"].map(" -> ".join)
    return df


def fetch_all_paths(store: Store, run_id: str, source: str, target: str, *, max_length: int = 3, min_weight: float = 0.0, limit: int = 1000) -> pd.DataFrame:
    """All paths of at most ``max_length`` hops between two components, in Cypher, ordered by the
    product of |score| (strongest first; use ``top_paths`` for the share-normalised strength)."""
    from queries.fetch import require_run

    require_run(store, run_id)
    if not 1 <= max_length <= 6:
        raise ValidationError("max_length must be between 1 and 6 (path counts grow exponentially)")
    df = store.read(
        f"MATCH p = (a:Component {{componentId: $source}})-[:ATTRIBUTION*1..{int(max_length)}]->(b:Component {{componentId: $target}}) "
        "WHERE all(e IN relationships(p) WHERE e.runId = $run AND abs(e.score) >= $w) "
        "WITH p, reduce(s = 1.0, e IN relationships(p) | s * abs(e.score)) AS strength "
        "RETURN [n IN nodes(p) | n.componentId] AS nodes, [e IN relationships(p) | e.channel] AS channels, "
        "[e IN relationships(p) | e.score] AS scores, length(p) AS length, strength ORDER BY strength DESC LIMIT $limit",
        {"source": source, "target": target, "run": run_id, "w": float(min_weight), "limit": int(limit)},
    )
    if df.empty:
        raise NoPath(f"no path of at most {max_length} hops from {source} to {target} in run {run_id}")
    df["path"] = df["nodes"].map(" -> ".join)
    return df
