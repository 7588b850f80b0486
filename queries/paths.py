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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atlas import connectome as cx
from atlas.errors import NoPath, ValidationError
from atlas.schema import KIND_LABEL
from atlas.store import Store
from queries.criteria import ComponentCriteria
from queries.graph import collapse

if TYPE_CHECKING:  # networkx is imported where a graph is built: a kept answer needs none
    import networkx as nx

__all__ = [
    "top_paths", "top_paths_frame", "fetch_paths", "positional_edges", "write_path_cache", "cached_paths", "is_default_question", "fetch_shortest_paths",
    "fetch_all_paths", "PATH_COLUMNS", "CACHED_K",
]

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
    import networkx as nx

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
    return _search(g, sources, targets, k, through, max_length, max_candidates)


def _search(g: nx.DiGraph, sources: ComponentCriteria | None, targets: ComponentCriteria | None, k: int,
            through: Sequence[ComponentCriteria], max_length: int | None, max_candidates: int) -> pd.DataFrame:
    """Yen's k shortest simple paths on ``cost`` over a prepared graph (``share``/``cost``/``score``/
    ``channels`` on edges; virtual channel nodes allowed)."""
    import networkx as nx

    src = _ends(g, sources, "Embed", "source")
    dst = _ends(g, targets, "Logit", "target")
    for s in src:
        g.add_edge(_SRC, s, cost=0.0)
    for t in dst:
        g.add_edge(t, _DST, cost=0.0)
    g.remove_edges_from([(u, v) for u, v, d in g.edges(data=True) if math.isinf(d.get("cost", 0.0))])
    rows: list[dict[str, Any]] = []
    search, unwrap = (g, lambda path: path) if not through else _through_product(g, through)
    try:
        candidates = nx.shortest_simple_paths(search, _SRC, _DST, weight="cost")
        for examined, product_path in enumerate(candidates):
            if examined >= max_candidates or len(rows) == k:
                break
            full = unwrap(product_path)
            nodes = [n for n in full[1:-1] if not g.nodes[n].get("virtual")]
            if len(nodes) < 2:
                continue
            hops = len(nodes) - 1
            if max_length is not None and hops > max_length:
                continue
            if through and not all(any(c.matches({"componentId": n, **g.nodes[n]}) for n in nodes[1:-1]) for c in through):
                continue  # never taken: the product graph only holds paths through every criterion
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


def _through_product(g: nx.DiGraph, through: Sequence[ComponentCriteria]) -> tuple[nx.DiGraph, Any]:
    """The search graph of paths that pass ``through`` every criterion, as a product of ``g`` with
    the set of criteria met so far: node ``(n, mask)``; entering a real node adds the criteria it
    matches; a target is left for the sink only from its end copy ``(n, "end")`` and only with every
    criterion met, so a target (or source) counts as passed only when it lies inside the path.
    Yen's algorithm on it yields exactly the strongest constrained paths, in order, instead of
    enumerating unconstrained ones until enough pass (hours on a 1M-edge run whose strongest paths
    avoid the criterion). Returns the graph and a function mapping its paths back to ``g``'s."""
    import networkx as nx

    full = (1 << len(through)) - 1
    bits = {n: 0 if a.get("virtual") or n in (_SRC, _DST)
            else sum(1 << i for i, c in enumerate(through) if c.matches({"componentId": n, **a}))
            for n, a in g.nodes(data=True)}
    targets = {u for u in g.predecessors(_DST)}
    masks = range(full + 1)
    p = nx.DiGraph()
    for u, v, d in g.edges(data=True):
        if u == _SRC:
            p.add_edge(_SRC, (v, 0), cost=d.get("cost", 0.0))
            continue
        if v == _DST:
            continue
        for m in masks:
            p.add_edge((u, m), (v, m | bits[v]), cost=d.get("cost", 0.0))
            if v in targets:
                p.add_edge((u, m), (v, "end", m), cost=d.get("cost", 0.0))
    for t in targets:
        p.add_edge((t, "end", full), _DST, cost=0.0)

    def unwrap(path: list[Any]) -> list[str]:
        return [path[0], *(step[0] for step in path[1:-1]), path[-1]]

    return p, unwrap


def _split(graph: nx.MultiDiGraph, min_weight: float) -> nx.DiGraph:
    """One virtual node ``v#ch`` per receiving channel: ``u -> v#ch`` (the channel's share) ``-> v`` (free)."""
    import networkx as nx

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


_CHANNEL_BIT = {"q": 1, "k": 2, "v": 4, "in": 8}


def _graph_from_shares(frame: pd.DataFrame, split_channels: bool) -> nx.DiGraph:
    """A search graph from rows that carry their full-graph ``share`` (see :func:`top_paths_frame`)."""
    import networkx as nx

    from queries.graph import kind_and_layer

    g = nx.DiGraph()
    for cid in pd.unique(pd.concat([frame["componentId_pre"], frame["componentId_post"]])):
        kind, layer = kind_and_layer(cid)
        g.add_node(cid, kind=kind, layer=layer)
    cost = -np.log(frame["share"].to_numpy())
    if split_channels:
        for (a, b, ch, sc, sh), c in zip(frame[["componentId_pre", "componentId_post", "channel", "score", "share"]].itertuples(index=False), cost):
            via = f"{b}#{ch}"
            if via not in g:
                g.add_node(via, virtual=True)
                g.add_edge(via, b, cost=0.0, virtual=True)
            g.add_edge(a, via, share=sh, cost=c, score=sc, channels=[ch])
        return g
    # channels as a bitmask summed per pair (a pair never repeats a channel): vectorised, unlike a list agg
    bits = frame["channel"].map(_CHANNEL_BIT).fillna(0).astype(np.int64)
    merged = frame.assign(cost=cost, bits=bits.to_numpy()).groupby(["componentId_pre", "componentId_post"], sort=False).agg(
        share=("share", "first"), cost=("cost", "first"), score=("score", "sum"), bits=("bits", "sum"))
    for (a, b), sh, c, sc, bt in zip(merged.index, merged["share"], merged["cost"], merged["score"], merged["bits"]):
        g.add_edge(a, b, share=sh, cost=c, score=sc, channels=[ch for ch, bit in _CHANNEL_BIT.items() if bt & bit])
    return g


def top_paths_frame(
    edges: pd.DataFrame,
    *,
    sources: ComponentCriteria | None = None,
    targets: ComponentCriteria | None = None,
    k: int = 10,
    min_weight: float = 0.0,
    through: Sequence[ComponentCriteria] = (),
    max_length: int | None = None,
    split_channels: bool = False,
    probe_inputs: int = 3,
    max_candidates: int = 100_000,
) -> pd.DataFrame:
    """:func:`top_paths` over an edge frame, exact and fast on large runs.

    Every hop of a path is at least as strong as the whole path (a share is at most 1), so:
      1. shares are computed vectorised over the whole run;
      2. the search first runs on the ``probe_inputs`` strongest inputs of every component, keeping
         the full-run shares; those paths exist in the run, so their k-th strength ``L`` is a lower
         bound on the true k-th strength;
      3. no edge with share < ``L`` lies on a true top-k path, so the exact search runs on the edges
         with share >= ``L`` only (on all edges when the probe found fewer than k paths).
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1, got {k}")
    df = edges[["componentId_pre", "componentId_post", "channel", "score"]]
    if min_weight > 0:
        df = df[df["score"].abs().to_numpy() >= min_weight]
    if df.empty:
        raise NoPath(f"no edges with |score| >= {min_weight}")
    # integer codes of the components: shares, ranks and bounds as array operations over the whole run;
    # string rows are only materialised for the few edges a search graph is built from
    n = len(df)
    codes, names = pd.factorize(pd.concat([df["componentId_pre"], df["componentId_post"]], ignore_index=True))
    pre, post = codes[:n], codes[n:]
    weight = np.abs(df["score"].to_numpy(dtype=float))
    total = np.bincount(post, weights=weight, minlength=len(names))
    pair = pre.astype(np.int64) * len(names) + post
    pairs, pair_of = np.unique(pair, return_inverse=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a component whose inputs are all 0: no share, dropped
        pair_share = np.bincount(pair_of, weights=weight) / total[pairs % len(names)]
        share = weight / total[post] if split_channels else pair_share[pair_of]
    idx = np.flatnonzero(share > 0)
    pre, post, pair_of, share = pre[idx], post[idx], pair_of[idx], share[idx]

    def graph_of(mask: np.ndarray) -> nx.DiGraph:
        rows = df.iloc[idx[mask]]  # categorical ids (a fetch straight from the packed columns) become strings here
        return _graph_from_shares(rows.astype({c: str for c in ("componentId_pre", "componentId_post", "channel")}).assign(share=share[mask]),
                                  split_channels)

    args = (sources, targets, k, tuple(through), max_length, max_candidates)
    # the probe: the probe_inputs strongest distinct inputs (pairs, or channel rows when split) of every component
    if split_channels:
        in_probe = _top_per_group(post, share, probe_inputs)
    else:
        in_probe = _top_per_group(pairs % len(names), np.where(np.isfinite(pair_share), pair_share, 0.0), probe_inputs)[pair_of]
    bound = 0.0
    try:
        found = _search(graph_of(in_probe), *args)
        if len(found) == k:
            bound = float(found["strength"].iloc[-1])
    except NoPath:
        pass
    potential = _potential(pre, post, share, names, sources or ComponentCriteria(kind="Embed"), targets or ComponentCriteria(kind="Logit"))
    if bound == 0 and potential is not None and potential.max() > 0:
        # the probe's strongest inputs hold too few paths (constraints the strongest paths avoid): every
        # path of strength >= tau lies in {potential >= tau}, so search those edges, lowering tau
        # by 100x until k paths are found; their k-th strength then bounds the exact search below
        floor, tau = float(potential[potential > 0].min()), float(potential.max()) / 100
        while tau > floor:
            try:
                found = _search(graph_of(potential >= tau), *args)
            except NoPath:
                found = None
            if found is not None and len(found) == k:
                if found["strength"].iloc[-1] >= tau:
                    return found  # every path stronger than the k-th is in the searched edges: exact
                bound = float(found["strength"].iloc[-1])
                break
            tau /= 100
    keep = np.ones(len(idx), dtype=bool)
    if bound > 0:
        keep = (potential if potential is not None else share) >= bound * (1 - 1e-9)
    return _search(graph_of(keep), *args)


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``argsort(keys, kind="stable")`` for non-negative integer keys, as a radix sort when they
    fit 16 bits (a run's components do: ~20x faster than a comparison sort over 1M edges)."""
    if len(keys) and int(keys.max()) < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _top_per_group(group: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """Mask of the ``n`` largest ``value`` within each ``group`` (``group``: non-negative integer
    codes; ties broken deterministically, by the order of a quicksort of the values)."""
    by_value = np.argsort(-value)
    order = by_value[_stable_order(group[by_value])]
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    mask = np.zeros(len(value), dtype=bool)
    mask[order[rank < n]] = True
    return mask


def _potential(pre: np.ndarray, post: np.ndarray, share: np.ndarray, names: pd.Index, sources: ComponentCriteria,
               targets: ComponentCriteria) -> np.ndarray | None:
    """For each edge u->v (component codes into ``names``), the strength of the strongest
    source-to-target path through it: best_in(u) * share * best_out(v), by dynamic programming in
    forward-pass order (stages read from the ids). None when some edge does not run forward in that
    order (then no pruning is safe)."""
    from atlas.ids import parse_component_id, split_position, write_stage

    refs = [parse_component_id(split_position(n)[0]) for n in names]
    stage = np.array([write_stage(r.kind, r.layer) for r in refs])
    if not (stage[pre] < stage[post]).all():
        return None
    attrs = [{"componentId": n, "kind": KIND_LABEL[r.kind], "layer": r.layer, "head": r.head} for n, r in zip(names, refs)]
    best_in = np.zeros(len(names))
    best_in[[sources.matches(a) for a in attrs]] = 1.0
    best_out = np.zeros(len(names))
    best_out[[targets.matches(a) for a in attrs]] = 1.0
    # edges sorted by the stage they reach (forward) / leave (backward): each stage a contiguous block,
    # its per-node maxima by reduceat over the block sorted by node. A node's stage is its own, so
    # sorting by (stage, node) is sorting by the node's rank in that order: one radix sort.
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.lexsort((np.arange(len(names)), stage))] = np.arange(len(names))
    fwd = _stable_order(rank[post])
    for block in _blocks(stage[post][fwd]):
        e = fwd[block]
        _max_into(best_in, post[e], best_in[pre[e]] * share[e])
    rank[np.lexsort((np.arange(len(names)), -stage))] = np.arange(len(names))
    bwd = _stable_order(rank[pre])
    for block in _blocks(-stage[pre][bwd]):
        e = bwd[block]
        _max_into(best_out, pre[e], share[e] * best_out[post[e]])
    return best_in[pre] * share * best_out[post]


def _blocks(sorted_keys: np.ndarray) -> list[slice]:
    """Slices of the runs of equal keys in a sorted array."""
    cuts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1, len(sorted_keys)]
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def _max_into(best: np.ndarray, nodes: np.ndarray, values: np.ndarray) -> None:
    """``best[n] = max(best[n], max of values at n)`` for ``nodes`` sorted (equal nodes adjacent)."""
    if not len(nodes):
        return
    starts = np.r_[0, np.flatnonzero(nodes[1:] != nodes[:-1]) + 1]
    target = nodes[starts]
    best[target] = np.maximum(best[target], np.maximum.reduceat(values, starts))


CACHED_K = 50
"""The default pathway query (embedding -> logits, no constraints) keeps this many paths on the run
(100 would cost 8.7 s of search on a 1M-edge run against 0.5 s for 50: the pruning bound weakens)."""


def _path_cache_key(split_channels: bool) -> str:
    return "topPathsSplit" if split_channels else "topPaths"


def is_default_question(sources: ComponentCriteria | None = None, targets: ComponentCriteria | None = None, *, top: int = 10,
                        min_weight: float = 0.0, through: Sequence[ComponentCriteria] = (), max_length: int | None = None) -> bool:
    """Whether a pathway question is the default one (embedding -> logits, no constraints,
    ``top <= CACHED_K``), which :func:`write_path_cache` answers once per run."""
    return sources is None and targets is None and not through and max_length is None and min_weight == 0 and top <= CACHED_K


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
    positions: bool = False,
) -> pd.DataFrame:
    """The strongest paths of a stored run (edges with ``|score| >= min_weight``), via :func:`top_paths_frame`.

    Read-only. The default question is served from the run's path cache when
    :func:`write_path_cache` has kept one (on a 1M-edge run: milliseconds instead of ~8 s).

    By default positions are aggregated (a run's edges are the sums over position pairs). With
    ``positions`` (runs ingested with ``--per-position``) the nodes are components at token
    positions, ``L1.H0:7``: a hop ``u:i -> v:j`` is ``u``'s output at ``i`` reaching ``v``'s output
    at ``j`` (through its key or value when ``i != j``), so a path says where each step acts.
    """
    if positions:
        return top_paths_frame(positional_edges(cx.fetch_positional_edge_columns(store, run_id, min_weight=min_weight)),
                               sources=sources, targets=targets, k=top, through=through, max_length=max_length,
                               split_channels=split_channels)
    run = cx.require_run(store, run_id)
    if is_default_question(sources, targets, top=top, min_weight=min_weight, through=through, max_length=max_length):
        cached = cached_paths(run, split_channels)
        if cached is not None and cached[0] >= top:
            return pd.DataFrame(cached[1], columns=PATH_COLUMNS).head(top)
    edges = cx.fetch_edge_columns(store, run_id, min_weight=min_weight, categorical=True)
    return top_paths_frame(edges, sources=sources, targets=targets, k=top, through=through,
                           max_length=max_length, split_channels=split_channels)


def positional_edges(frame: pd.DataFrame) -> pd.DataFrame:
    """A position-resolved edge frame (``srcPos``, ``dstPos``) as edges between ``cid:pos`` nodes."""
    from atlas.ids import at_position

    out = frame[["componentId_pre", "componentId_post", "channel", "score"]].copy()
    out["componentId_pre"] = [at_position(c, p) for c, p in zip(frame["componentId_pre"], frame["srcPos"])]
    out["componentId_post"] = [at_position(c, p) for c, p in zip(frame["componentId_post"], frame["dstPos"])]
    return out


def cached_paths(run: Any, split_channels: bool = False) -> tuple[int, list[dict[str, Any]]] | None:
    """A complete run's kept answer to the default pathway question: (the k it was computed for,
    its paths), or None. Answers kept before k was recorded hold ``CACHED_K`` paths."""
    import json

    raw = run.details.get(_path_cache_key(split_channels))
    if not raw or not run.complete:
        return None
    kept = json.loads(raw)
    return (CACHED_K, kept) if isinstance(kept, list) else (int(kept["k"]), kept["paths"])


def write_path_cache(store: Store, run_id: str, *, split_channels: bool = False, edges: pd.DataFrame | None = None,
                     k: int = CACHED_K) -> bool:
    """Answer the default pathway question (its ``k`` strongest paths, ``CACHED_K`` unless told) once
    over a complete run and keep it on the ``:Run``; a complete run never changes. ``edges``: the
    run's edges when the caller holds them (``atlas ingest`` does, right after writing: no fetch),
    else they are fetched. ``atlas paths`` on a run without one keeps the answer to the question it
    was asked (``k`` = its ``--top``): the search for 10 paths over 1M edges costs a quarter of that
    for 50. Returns False when the run is not complete or already holds an answer for ``k``."""
    import json

    run = cx.require_run(store, run_id)
    cached = cached_paths(run, split_channels)
    if not run.complete or (cached is not None and cached[0] >= k):
        return False
    found = top_paths_frame(cx.fetch_edge_columns(store, run_id, categorical=True) if edges is None else edges, k=k, split_channels=split_channels)
    cx.write_path_cache(store, run_id, _path_cache_key(split_channels), json.dumps({"k": k, "paths": found.to_dict("records")}))
    return True


def _with_path_text(df: pd.DataFrame, none: str) -> pd.DataFrame:
    if df.empty:
        raise NoPath(none)
    df["path"] = df["nodes"].map(" -> ".join)
    return df


def fetch_shortest_paths(store: Store, run_id: str, source: str, target: str, *, min_weight: float = 0.0, max_length: int = 6) -> pd.DataFrame:
    """Fewest-hop paths between two components in the database, over the run's edges with
    ``|score| >= min_weight``; one row per path with its per-hop scores.

    Written as a bounded variable-length match filtered first and cut to the minimum length, not
    ``allShortestPaths ... WHERE``: ArcadeDB finds the unfiltered shortest path and then filters it
    away, while Neo4j searches under the predicate; this form means the same on both.
    """
    cx.require_run(store, run_id)
    df = cx.match_paths(store, run_id, source, target, min_weight=min_weight, max_length=max_length, shortest=True)
    return _with_path_text(df, f"no path from {source} to {target} in run {run_id} with |score| >= {min_weight}")


def fetch_all_paths(store: Store, run_id: str, source: str, target: str, *, max_length: int = 3, min_weight: float = 0.0, limit: int = 1000) -> pd.DataFrame:
    """All paths of at most ``max_length`` hops between two components, in Cypher, ordered by the
    product of |score| (strongest first; use ``top_paths`` for the share-normalised strength)."""
    cx.require_run(store, run_id)
    df = cx.match_paths(store, run_id, source, target, min_weight=min_weight, max_length=max_length, shortest=False, limit=limit)
    return _with_path_text(df, f"no path of at most {max_length} hops from {source} to {target} in run {run_id}")
