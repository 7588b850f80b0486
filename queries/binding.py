"""Binding circuits: heads where inputs from different sources converge on different channels.

Operational definition (docs/architecture.md, science notes), as far as attribution can take it:
  1. For each head, each input's share = |score on that channel| / all |score| entering the head.
     Inputs with share >= ``min_share`` are significant; calibrated against a null run (an untrained
     copy, ``NAME@0``), an input must also beat the share its own slot (source, head, channel) gets
     there: shares are normalised per head, so a head with few inputs gives each a large share by
     architecture alone (a global quantile of null shares would be dominated by those).
  2. A binding motif is a pair of significant inputs on two different channels from two different
     sources, at least one of them a cross-position mover (an attention head). By default the pair is
     a q-source and a k-source (what decides where the head looks, as the current token and the
     previous-token head do on an induction head); ``channels="any"`` also admits q+v and k+v pairs,
     since which channel carries binding differs between model families. The v-sources are listed,
     and ``moverChannel`` names the channel the cross-position mover arrives on: ``v`` is binding by
     V-composition (the zoo's ``binding`` model), ``k`` is induction-like K-composition (its reverse
     query, the negative control).
  3. Its readers are the components for which the head is a significant input; motifs without
     readers are dropped. Score = share(a) * share(b) * the head's largest share among its readers.
Attribution is a linear estimate that breaks on saturated attention: confirm a candidate with real
patching (``atlas verify``) and, for binding tasks, with a swap of the writer's output between bound
items before calling it binding.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import local_id
from atlas.records import CircuitRecord
from atlas.store import Store
from queries.fetch import fetch_edges

__all__ = ["find_binding", "find_binding_in_edges", "fetch_binding", "write_binding_circuit", "null_shares"]

BINDING_COLUMNS = ["rank", "head", "channels", "sourceA", "channelA", "shareA", "sourceB", "channelB", "shareB", "moverChannel",
                   "vSources", "readers", "score"]


def _input_totals(edges: pd.DataFrame) -> pd.Series:
    """All |score| entering each component (every channel, every source), by component id."""
    return edges["score"].abs().groupby(edges["componentId_post"].to_numpy()).sum()


def _head_inputs(edges: pd.DataFrame, totals: pd.Series) -> pd.DataFrame:
    """``head, channel, source, share`` for every input edge of a head: its |score| over all |score|
    entering the head (``totals``, from :func:`_input_totals`)."""
    weight = edges["score"].abs().to_numpy(dtype=float)
    total = totals.reindex(edges["componentId_post"].to_numpy()).to_numpy()
    into_head = (edges["kind_post"].to_numpy() == "Head") & (total > 0)
    return pd.DataFrame({"head": edges["componentId_post"].to_numpy()[into_head], "channel": edges["channel"].to_numpy()[into_head],
                         "source": edges["componentId_pre"].to_numpy()[into_head], "share": weight[into_head] / total[into_head]})


def _graph_edges(graph: nx.MultiDiGraph) -> pd.DataFrame:
    """A multigraph's edges as an edge frame with both ends' kinds (from the node attributes)."""
    kinds = {n: a.get("kind") for n, a in graph.nodes(data=True)}
    rows = [(u, v, d["channel"], d["score"], kinds[u], kinds[v]) for u, v, d in graph.edges(data=True)]
    return pd.DataFrame(rows, columns=["componentId_pre", "componentId_post", "channel", "score", "kind_pre", "kind_post"])


def find_binding(graph: nx.MultiDiGraph, min_share: float = 0.1, channels: str = "qk",
                 null: dict[tuple[str, str, str], float] | None = None) -> pd.DataFrame:
    """Ranked binding motifs (see module docstring), the best pair per head; one row each.

    Columns: ``rank, head, channels, sourceA, channelA, shareA, sourceB, channelB, shareB, vSources,
    readers, score``.
    """
    if not isinstance(graph, nx.MultiDiGraph):
        raise ValidationError("binding needs the multigraph with one edge per channel")
    return find_binding_in_edges(_graph_edges(graph), min_share, channels, null)


def find_binding_in_edges(edges: pd.DataFrame, min_share: float = 0.1, channels: str = "qk",
                          null: dict[tuple[str, str, str], float] | None = None) -> pd.DataFrame:
    """:func:`find_binding` over an edge frame with ``kind_pre``/``kind_post`` (one row per
    (pre, post, channel), as :func:`queries.fetch.fetch_edges` gives): shares and readers are
    grouped sums over the frame, so a 1M-edge run needs no graph object; the pairs are then
    tried per head among its few significant inputs."""
    if channels not in ("qk", "any"):
        raise ValidationError(f"channels must be 'qk' or 'any', got {channels!r}")
    if not 0 < min_share < 1:
        raise ValidationError(f"min_share must be in (0, 1), got {min_share}")
    threshold = float(min_share)
    allowed = {("k", "q")} if channels == "qk" else {("k", "q"), ("q", "v"), ("k", "v")}
    totals = _input_totals(edges)
    inputs = _head_inputs(edges, totals)
    heads = pd.unique(inputs["head"])
    # readers: a head's targets that take at least `threshold` of their input from it (channels summed)
    weight = edges["score"].abs().to_numpy(dtype=float)
    from_head = edges["componentId_pre"].isin(set(heads)).to_numpy()
    pair = pd.DataFrame({"head": edges["componentId_pre"].to_numpy()[from_head], "reader": edges["componentId_post"].to_numpy()[from_head],
                         "weight": weight[from_head]}).groupby(["head", "reader"], sort=False)["weight"].sum().reset_index()
    total = totals.reindex(pair["reader"].to_numpy()).to_numpy()
    pair["share"] = np.where(total > 0, pair["weight"].to_numpy() / np.where(total > 0, total, 1.0), 0.0)
    readers_of = {h: dict(zip(g["reader"], g["share"])) for h, g in pair[pair["share"] >= threshold].groupby("head", sort=False)}
    strong = inputs[inputs["share"] >= threshold]
    is_source = edges["componentId_pre"].isin(set(strong["source"])).to_numpy()
    kind = dict(zip(edges["componentId_pre"].to_numpy()[is_source], edges["kind_pre"].to_numpy()[is_source]))
    rows = []
    for head, group in strong.groupby("head", sort=False):
        readers = readers_of.get(head)
        if not readers:
            continue
        significant = [(ch, src, s) for ch, src, s in zip(group["channel"], group["source"], group["share"])
                       if null is None or s > null.get((local_id(src), local_id(head), ch), 0.0)]
        best = None
        v_sources = [src for ch, src, _ in sorted(significant, key=lambda t: -t[2]) if ch == "v"]
        for (ca, a, sa), (cb, b, sb) in itertools.combinations(significant, 2):
            if ca == cb or a == b or tuple(sorted((ca, cb))) not in allowed:
                continue
            if "Head" not in (kind.get(a), kind.get(b)):
                continue  # neither input moves information across positions
            score = sa * sb * max(readers.values())
            if best is None or score > best["score"]:
                (ca, a, sa), (cb, b, sb) = sorted([(ca, a, sa), (cb, b, sb)])
                movers = [(s, c) for c, src, s in ((ca, a, sa), (cb, b, sb)) if kind.get(src) == "Head"]
                best = {"head": head, "channels": f"{ca}+{cb}", "sourceA": a, "channelA": ca, "shareA": float(sa),
                        "sourceB": b, "channelB": cb, "shareB": float(sb), "moverChannel": max(movers)[1], "vSources": v_sources,
                        "readers": sorted(readers, key=lambda r: readers[r], reverse=True), "score": float(score)}
        if best is not None:
            rows.append(best)
    frame = pd.DataFrame(rows, columns=BINDING_COLUMNS[1:])
    frame = frame.sort_values("score", ascending=False).reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame.attrs["minShare"] = threshold
    return frame


def null_shares(graph: nx.MultiDiGraph) -> dict[tuple[str, str, str], float]:
    """Each head input's share in a null connectome, keyed by ``(source, head, channel)`` local ids
    (model ids differ between a model and its null): what the architecture alone gives that slot."""
    return _null_from_edges(_graph_edges(graph))


def _null_from_edges(edges: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    inputs = _head_inputs(edges, _input_totals(edges))
    return {(local_id(src), local_id(head), ch): float(share)
            for head, ch, src, share in zip(inputs["head"], inputs["channel"], inputs["source"], inputs["share"])}


def fetch_binding(store: Store, run_id: str, min_share: float = 0.1, channels: str = "qk", null_run: str | None = None) -> pd.DataFrame:
    """:func:`find_binding` over a stored run; with ``null_run`` (e.g. the untrained ``NAME@0`` on
    the same task) an input must also beat its own slot's share there (docs/architecture.md, science notes)."""
    null = _null_from_edges(fetch_edges(store, null_run)) if null_run else None
    frame = find_binding_in_edges(fetch_edges(store, run_id), min_share, channels, null)
    if null_run:
        frame.attrs["nullRun"] = null_run
    return frame


def write_binding_circuit(store: Store, run_id: str, row: dict) -> str:
    """Save one binding motif as ``(:Circuit {kind: "binding"})`` with roles; returns its id."""
    circuit_id = f"{run_id}/binding/{row['head'].rsplit('/', 1)[-1]}"
    members = {row["sourceA"]: f"{row['channelA']}-source", row["sourceB"]: f"{row['channelB']}-source"}
    for r in row["readers"]:
        members.setdefault(r, "reader")
    members[row["head"]] = "binder"
    cx.write_circuit(store, CircuitRecord(circuit_id=circuit_id, run_id=run_id, kind="binding", members=members,
                                          details={"score": float(row["score"]), "channels": row["channels"]}))
    return circuit_id
