"""Pathways: the strongest routes of attribution from sources (default the embedding) to targets
(default the logits), neuPrint's ``fetch_paths`` / ``fetch_shortest_paths`` habits.

Path strength: the product of the hops' shares, where a hop's share is its summed |score| over
channels divided by all |score| entering the hop's target (see :mod:`queries.graph`). The strongest
paths are the k shortest simple paths on cost ``-log(share)``:
  1. collapse channels and compute shares (edges below ``min_weight`` dropped first);
  2. join all sources to a virtual source and all targets to a virtual sink at cost 0;
  3. enumerate simple paths by increasing cost, keeping those that pass ``through`` criteria and
     fit ``max_length``, until ``k`` are found.
:func:`top_paths` does this with Yen's algorithm (networkx) on any graph: the reference.
:func:`top_paths_frame` gives the same answer over a run's edge frame with a k-best sweep of the
DAG a run's edges form, pruned by an upper bound per edge: top-100 over 1.1M edges in ~0.15 s.
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
NO_PATH = "no path from the sources to the targets satisfies the constraints"


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
        raise NoPath(NO_PATH)
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
    """A search graph from rows that carry their full-graph ``share`` (the fallback of
    :func:`top_paths_frame` for edges that do not all run forward)."""
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
) -> pd.DataFrame:
    """:func:`top_paths` over an edge frame, exact and fast on large runs: the same paths, in the
    same order (ties aside), without building a graph object.

    A run's edges all run forward (from an earlier write stage to a later one), so its graph is a
    DAG and every path is simple. The k strongest paths of a DAG come from one forward sweep that
    keeps, per node, the k strongest partial paths reaching it (k-best dynamic programming):
      1. shares are computed vectorised over the whole run (one hop per component pair, or per
         channel row with ``split_channels``);
      2. ``potential(e)``, the strength of the strongest source-to-target path through edge ``e``
         (two 1-best sweeps), bounds every path through ``e`` from above;
      3. the sweep runs on the edges with potential >= ``tau`` only. For the plain question ``tau``
         is the k-th largest potential of the edges entering a target (each is a distinct real
         path, so the k-th strongest path is at least that strong): exact at once. With
         ``through``/``max_length`` a path must also carry the criteria met so far (a bitmask) and
         its length, which become part of the key the k best are kept under; ``tau`` starts there
         and is lowered until k paths are found, and the sweep is repeated down to the k-th
         strength found when that is below ``tau``.
    Edges that do not run forward (a hand-made frame) fall back to Yen's algorithm (networkx).
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1, got {k}")
    if max_length is not None and max_length < 1:
        raise ValidationError(f"max_length must be at least 1, got {max_length}")
    df = edges[["componentId_pre", "componentId_post", "channel", "score"]]
    if min_weight > 0:
        df = df[df["score"].abs().to_numpy() >= min_weight]
    if df.empty:
        raise NoPath(f"no edges with |score| >= {min_weight}")
    # integer codes of the components: shares, bounds and the sweep are array operations over the
    # whole run; strings are only materialised for the hops of the paths found
    pre, post, names = _component_codes(df["componentId_pre"], df["componentId_post"])
    score = df["score"].to_numpy(dtype=float)
    weight = np.abs(score)
    total = np.bincount(post, weights=weight, minlength=len(names))
    pair_of: np.ndarray | None = None
    with np.errstate(invalid="ignore", divide="ignore"):  # a component whose inputs are all 0: no share, dropped
        if split_channels:
            e_pre, e_post, e_share = pre, post, weight / total[post]
        else:
            pairs, pair_of = _unique_inverse(pre * len(names) + post, len(names) ** 2)
            e_pre, e_post = pairs // len(names), pairs % len(names)
            e_share = np.bincount(pair_of, weights=weight, minlength=len(pairs)) / total[e_post]
    live = np.flatnonzero(e_share > 0)
    e_pre, e_post, e_share = e_pre[live], e_post[live], e_share[live]

    from atlas.ids import parse_component_id, split_position, write_stage

    refs = [parse_component_id(split_position(c)[0]) for c in names]
    attrs = [{"componentId": c, "kind": KIND_LABEL[r.kind], "layer": r.layer, "head": r.head} for c, r in zip(names, refs)]
    starts = _matching(attrs, sources or ComponentCriteria(kind="Embed"), "source")
    ends = _matching(attrs, targets or ComponentCriteria(kind="Logit"), "target")
    stage = np.array([write_stage(r.kind, r.layer) for r in refs])
    if not len(live):
        raise NoPath(NO_PATH)
    if not (stage[e_pre] < stage[e_post]).all():
        return _yen_fallback(df, live, e_share, pair_of, sources, targets, k, through, max_length, split_channels)
    bits = np.array([sum(1 << i for i, c in enumerate(through) if c.matches(a)) for a in attrs], dtype=np.int64)
    if int(np.bitwise_or.reduce(bits, initial=0)) != (1 << len(through)) - 1:  # a criterion no component meets
        raise NoPath(NO_PATH)
    potential = _potential(e_pre, e_post, e_share, stage, starts, ends)
    if potential.max() <= 0:
        raise NoPath(NO_PATH)
    entering = np.sort(potential[ends[e_post] & (potential > 0)])[::-1]
    tau = float(entering[min(k, len(entering)) - 1])
    floor = float(potential[potential > 0].min())
    while True:
        keep = potential >= tau * (1 - 1e-9)
        found = _k_best(e_pre[keep], e_post[keep], e_share[keep], stage, starts, ends, bits, (1 << len(through)) - 1, k, max_length)
        if len(found) == k:
            if found[-1][0] >= tau * (1 - 1e-9):
                break  # every path stronger than the k-th uses only edges of potential >= tau: exact
            tau = found[-1][0]  # stronger paths than the k-th may use weaker edges: once more down to it
        elif tau <= floor:
            break  # every edge was searched
        else:
            tau = max(tau / 100, floor)
    if not found:
        raise NoPath(NO_PATH)
    hops = np.flatnonzero(keep)
    return _path_rows(found, [hops[h] for _, h in found], live, e_pre, e_post, e_share, names, df, score, pair_of)


def _component_codes(pre: pd.Series, post: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Integer codes of both ends into one index of component ids. Categorical columns (a fetch
    from a run's packed columns) are recoded through their categories, never compared as strings."""
    if isinstance(pre.dtype, pd.CategoricalDtype) and isinstance(post.dtype, pd.CategoricalDtype):
        names = pre.cat.categories.union(post.cat.categories)
        return (names.get_indexer(pre.cat.categories)[pre.cat.codes.to_numpy()].astype(np.int64),
                names.get_indexer(post.cat.categories)[post.cat.codes.to_numpy()].astype(np.int64), names.astype(str))
    codes, uniques = pd.factorize(pd.concat([pre, post], ignore_index=True))
    return codes[: len(pre)].astype(np.int64), codes[len(pre):].astype(np.int64), pd.Index(uniques).astype(str)


def _unique_inverse(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for non-negative integer keys below ``bound``, by a
    lookup table when the bound is small (a run's component pairs: ~10x faster over 1M edges)."""
    if bound > 1 << 24:
        uniques, inverse = np.unique(keys, return_inverse=True)
        return uniques, inverse.reshape(-1)
    uniques = np.flatnonzero(np.bincount(keys, minlength=bound))
    table = np.zeros(bound, dtype=np.int64)
    table[uniques] = np.arange(len(uniques))
    return uniques, table[keys]


def _matching(attrs: list[dict[str, Any]], crit: ComponentCriteria, what: str) -> np.ndarray:
    hit = np.array([crit.matches(a) for a in attrs], dtype=bool)
    if not hit.any():
        raise NoPath(f"no {what} component matches {crit}")
    return hit


def _k_best(pre: np.ndarray, post: np.ndarray, share: np.ndarray, stage: np.ndarray, starts: np.ndarray, ends: np.ndarray,
            bits: np.ndarray, full: int, k: int, max_length: int | None) -> list[tuple[float, list[int]]]:
    """The ``k`` strongest source-to-target paths of a DAG (edges ``pre -> post`` forward in
    ``stage``) that pass every criterion of ``full`` (``bits``: the criteria each node meets,
    counted for the nodes inside a path) in at most ``max_length`` hops: (strength, edge indices),
    strongest first. One sweep over the edges by the stage they reach; a node's partial paths are
    final before any edge leaves it. Kept per (node, criteria met, length when bounded): the k
    strongest partial paths, as entries (strength, mask, length, entering edge, parent entry)."""
    lengths = (max_length + 1) if max_length is not None else 1
    cap = 64  # grown by doubling
    ent_val, ent_mask, ent_len = np.empty(cap), np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
    ent_edge, ent_parent = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
    size = 0
    node_first = np.zeros(len(stage), dtype=np.int64)
    node_count = np.zeros(len(stage), dtype=np.int64)
    order = np.argsort(stage[post], kind="stable")
    for block in _blocks(stage[post][order]):
        e = order[block]
        p = pre[e]
        count = node_count[p]
        total = int(count.sum())
        e_from = np.repeat(e, count)  # one candidate per (edge, partial path at its pre)
        parent = np.repeat(node_first[p], count) + np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        seed = e[starts[p]]  # and one per edge leaving a source: the path is that hop
        edge = np.concatenate([e_from, seed])
        parent = np.concatenate([parent, np.full(len(seed), -1)])
        val = share[edge] * np.concatenate([ent_val[parent[:total]], np.ones(len(seed))])
        mask = np.concatenate([ent_mask[parent[:total]] | bits[pre[e_from]], np.zeros(len(seed), dtype=np.int64)])
        length = np.concatenate([ent_len[parent[:total]] + 1, np.ones(len(seed), dtype=np.int64)])
        if max_length is not None:
            fits = length <= max_length
            edge, parent, val, mask, length = edge[fits], parent[fits], val[fits], mask[fits], length[fits]
        if not len(edge):
            continue
        node = post[edge]
        key = (node * (full + 1) + mask) * lengths + (length if max_length is not None else 0)
        ranked = np.lexsort((-val, key))
        sorted_key = key[ranked]
        group_start = np.r_[0, np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1]
        rank = np.arange(len(ranked)) - np.repeat(group_start, np.diff(np.r_[group_start, len(ranked)]))
        kept = ranked[rank < k]  # sorted by node first: a node's entries are contiguous
        if size + len(kept) > cap:
            cap = max(2 * cap, size + len(kept))
            ent_val = np.resize(ent_val, cap)
            ent_mask, ent_len, ent_edge, ent_parent = (np.resize(a, cap) for a in (ent_mask, ent_len, ent_edge, ent_parent))
        new = slice(size, size + len(kept))
        ent_val[new], ent_mask[new], ent_len[new], ent_edge[new], ent_parent[new] = val[kept], mask[kept], length[kept], edge[kept], parent[kept]
        nodes, first, counts = np.unique(node[kept], return_index=True, return_counts=True)
        node_first[nodes], node_count[nodes] = first + size, counts
        size += len(kept)
    done = np.flatnonzero(ends[post[ent_edge[:size]]] & (ent_mask[:size] == full))
    best = done[np.argsort(-ent_val[done], kind="stable")[:k]]
    found = []
    for entry in best:
        chain, at = [], int(entry)
        while at >= 0:
            chain.append(int(ent_edge[at]))
            at = int(ent_parent[at])
        found.append((float(ent_val[entry]), chain[::-1]))
    return found


def _path_rows(found: list[tuple[float, list[int]]], hops: list[np.ndarray], live: np.ndarray, e_pre: np.ndarray, e_post: np.ndarray,
               e_share: np.ndarray, names: pd.Index, df: pd.DataFrame, score: np.ndarray, pair_of: np.ndarray | None) -> pd.DataFrame:
    """The result frame of :func:`top_paths_frame` (``hops``: each path's edges, as indices into
    the live edges ``e_*``): per-hop signed scores summed over channels and the channels' names."""
    used = np.unique(np.concatenate(hops))
    channel = df["channel"]
    if pair_of is None:  # split: an edge is a row
        per_edge = {int(h): ([str(channel.iloc[int(live[h])])], float(score[live[h]])) for h in used}
    else:
        rows = np.flatnonzero(np.isin(pair_of, live[used]))
        by_pair: dict[int, tuple[list[str], float]] = {}
        for r in rows:
            chans, total = by_pair.get(int(pair_of[r]), ([], 0.0))
            by_pair[int(pair_of[r])] = ([*chans, str(channel.iloc[int(r)])], total + float(score[r]))
        per_edge = {int(h): by_pair[int(live[h])] for h in used}
    out: list[dict[str, Any]] = []
    for (strength, _), path in zip(found, hops):
        nodes = [str(names[e_pre[path[0]]]), *(str(names[e_post[h]]) for h in path)]
        out.append({
            "rank": len(out) + 1,
            "strength": strength,
            "length": len(path),
            "path": " -> ".join(nodes),
            "nodes": nodes,
            "shares": [float(e_share[h]) for h in path],
            "scores": [per_edge[int(h)][1] for h in path],
            "channels": ["+".join(sorted(per_edge[int(h)][0])) for h in path],
        })
    return pd.DataFrame(out, columns=PATH_COLUMNS)


def _yen_fallback(df: pd.DataFrame, live: np.ndarray, e_share: np.ndarray, pair_of: np.ndarray | None,
                  sources: ComponentCriteria | None, targets: ComponentCriteria | None, k: int,
                  through: Sequence[ComponentCriteria], max_length: int | None, split_channels: bool) -> pd.DataFrame:
    """Yen's algorithm over the edges that carry a share, for frames whose edges do not all run forward."""
    if split_channels:
        rows, share = live, e_share
    else:
        assert pair_of is not None
        share_of_pair = np.zeros(int(pair_of.max()) + 1)
        share_of_pair[live] = e_share
        rows = np.flatnonzero(share_of_pair[pair_of] > 0)
        share = share_of_pair[pair_of[rows]]
    frame = df.iloc[rows].astype({c: str for c in ("componentId_pre", "componentId_post", "channel")}).assign(share=share)
    return _search(_graph_from_shares(frame, split_channels), sources, targets, k, tuple(through), max_length, 100_000)


def _potential(pre: np.ndarray, post: np.ndarray, share: np.ndarray, stage: np.ndarray, starts: np.ndarray,
               ends: np.ndarray) -> np.ndarray:
    """For each edge u->v (forward in ``stage``), the strength of the strongest source-to-target
    path through it: best_in(u) * share * best_out(v), by dynamic programming in forward-pass order."""
    n = len(stage)
    best_in = starts.astype(float)
    best_out = ends.astype(float)
    # edges sorted by the stage they reach (forward) / leave (backward): each stage a contiguous block,
    # its per-node maxima by reduceat over the block sorted by node. A node's stage is its own, so
    # sorting by (stage, node) is sorting by the node's rank in that order: one radix sort.
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), stage))] = np.arange(n)
    fwd = _stable_order(rank[post])
    for block in _blocks(stage[post][fwd]):
        e = fwd[block]
        _max_into(best_in, post[e], best_in[pre[e]] * share[e])
    rank[np.lexsort((np.arange(n), -stage))] = np.arange(n)
    bwd = _stable_order(rank[pre])
    for block in _blocks(-stage[pre][bwd]):
        e = bwd[block]
        _max_into(best_out, pre[e], share[e] * best_out[post[e]])
    return best_in[pre] * share * best_out[post]


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``argsort(keys, kind="stable")`` for non-negative integer keys, as a radix sort when they
    fit 16 bits (a run's components do: ~20x faster than a comparison sort over 1M edges)."""
    if len(keys) and int(keys.max()) < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


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
"""The default pathway query (embedding -> logits, no constraints) keeps this many paths on the run:
a later ``atlas paths --paths <= 50`` reads them (30 ms) instead of fetching the run's edges again
(~0.15 s over 1.1M edges) and searching (~0.1-0.2 s)."""


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
    edges: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The strongest paths of a stored run (edges with ``|score| >= min_weight``), via :func:`top_paths_frame`.
    ``edges``: the run's edge columns when the caller holds them (the explorer keeps them), else fetched.

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
    if edges is None:
        edges = cx.fetch_edge_columns(store, run_id, min_weight=min_weight, categorical=True)
    elif min_weight > 0:
        edges = edges[edges["score"].abs() >= min_weight]
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
