"""Motif census: 3-node motifs of a connectome against degree-preserving randomised graphs.

Method (Milo et al. 2002, "Network motifs"):
  1. Keep significant edges (|score| >= ``min_weight``, channels merged) as a directed graph.
  2. Count triads (the counts of networkx ``triadic_census``, from sparse matrix products); name
     the four feed-forward ones:
     chain ``021C`` (a->b->c), convergence ``021U`` (a->c<-b), divergence ``021D`` (a<-b->c) and the
     feed-forward loop ``030T`` (a->b->c plus a->c).
  3. Randomise ``n_random`` times by directed double-edge swaps, which keep every node's in- and
     out-degree; z = (count - mean) / std over the random graphs.
"""

from __future__ import annotations

import sys

import networkx as nx
import numpy as np
import pandas as pd

from atlas.errors import ValidationError
from atlas.store import Store
from queries.graph import collapse, fetch_graph

__all__ = ["MOTIFS", "motif_census", "fetch_motifs", "null_note"]

MOTIFS = {"021C": "chain", "021U": "convergence", "021D": "divergence", "030T": "feed-forward loop"}


def _counts(g: nx.DiGraph) -> dict[str, int]:
    """The four motifs' triad counts, as ``networkx.triadic_census`` gives them, from sparse
    products of the adjacency matrix (networkx's census walks every triad in Python: 7 s for
    11k edges, and the census runs once per random graph).

    With S the one-way arcs (an arc whose reverse is absent) and Adj the pairs joined either way:
    chain a->b->c counts the paths of S S between non-adjacent ends; convergence and divergence
    count pairs of one-way arcs into (out of) one node whose other ends are not adjacent; the
    feed-forward loop counts paths of S S closed by a one-way arc a->c."""
    from scipy import sparse

    nodes = list(g)
    index = {n: i for i, n in enumerate(nodes)}
    arcs = np.array([(index[u], index[v]) for u, v in g.edges() if u != v], dtype=np.int64).reshape(-1, 2)
    a = sparse.csr_matrix((np.ones(len(arcs), dtype=np.int64), (arcs[:, 0], arcs[:, 1])), shape=(len(nodes), len(nodes)))
    mutual = a.multiply(a.T).tocsr()
    one_way = (a - mutual).tocsr()
    one_way.eliminate_zeros()
    adjacent = ((a + a.T) - mutual).tocsr()
    paths = one_way @ one_way  # paths[a, c]: the b with a->b->c, both arcs one-way
    out_deg, in_deg = np.asarray(one_way.sum(axis=1)).ravel(), np.asarray(one_way.sum(axis=0)).ravel()
    pairs_out, pairs_in = one_way.T @ one_way, one_way @ one_way.T  # shared sources / shared targets
    return {
        "021C": int(paths.sum() - paths.multiply(adjacent).sum()),
        "021U": int((in_deg * (in_deg - 1)).sum() // 2 - pairs_in.multiply(adjacent).sum() // 2),
        "021D": int((out_deg * (out_deg - 1)).sum() // 2 - pairs_out.multiply(adjacent).sum() // 2),
        "030T": int(paths.multiply(one_way).sum()),
    }


def motif_census(graph: nx.MultiDiGraph | nx.DiGraph, min_weight: float = 0.0, n_random: int = 100, seed: int = 0, *,
                 progress: bool = False) -> pd.DataFrame:
    """Counts of the four motifs with their z-scores against degree-preserving random graphs.

    Columns: ``motif``, ``code``, ``count``, ``randomMean``, ``randomStd``, ``zScore`` (NaN when the
    random counts do not vary), ``rewired``: the mean share of edges the randomisations moved (0
    means the graph admits no degree-preserving rewiring, as small layered graphs often do not), and
    ``null``: ``defined``, ``no rewiring`` (no null to compare against) or ``constant`` (the random
    graphs all hold this motif equally often, so a z-score has no scale).
    """
    g = collapse(graph, min_weight) if isinstance(graph, nx.MultiDiGraph) else nx.DiGraph(graph)
    g = nx.DiGraph(g.edges())
    if g.number_of_edges() < 3:
        raise ValidationError("a motif census needs at least 3 edges")
    observed = _counts(g)
    rng = np.random.default_rng(seed)
    samples = []
    moved = []
    from tqdm.auto import tqdm

    for _ in tqdm(range(n_random), desc="random graphs", unit="graph", file=sys.stderr, leave=False, disable=None if progress else True):
        r = g.copy()
        try:
            nx.directed_edge_swap(r, nswap=max(1, r.number_of_edges()), max_tries=100 * r.number_of_edges(), seed=int(rng.integers(2**31)))
        except (nx.NetworkXError, nx.NetworkXAlgorithmError):
            pass  # too few swappable edge pairs: the graph is (nearly) its own randomisation
        samples.append(_counts(r))
        moved.append(sum(1 for e in r.edges() if not g.has_edge(*e)) / g.number_of_edges())
    rows = []
    rewired = float(np.mean(moved)) if moved else 0.0
    for code, name in MOTIFS.items():
        values = np.array([s[code] for s in samples], dtype=float)
        mean, std = float(values.mean()), float(values.std())
        null = "no rewiring" if rewired == 0 else "constant" if std == 0 else "defined"
        rows.append({"motif": name, "code": code, "count": observed[code], "randomMean": mean, "randomStd": std,
                     "zScore": (observed[code] - mean) / std if std > 0 else float("nan"), "rewired": rewired, "null": null})
    return pd.DataFrame(rows)


def null_note(census: pd.DataFrame) -> str | None:
    """A header line saying where the census's null is undefined, or None when every z-score stands."""
    if census.empty or (census["null"] == "defined").all():
        return None
    if (census["null"] == "no rewiring").all():
        return ("null undefined: no degree-preserving rewiring of this graph exists (0% of edges moved), so no z-score "
                "is defined; the counts stand alone")
    constant = census.loc[census["null"] == "constant", "motif"].tolist()
    return f"null undefined for {', '.join(constant)}: every random graph holds it equally often, so its z-score is not defined"


def fetch_motifs(store: Store, run_id: str, min_weight: float = 0.0, n_random: int = 100, seed: int = 0, *,
                 progress: bool = False) -> pd.DataFrame:
    """:func:`motif_census` over a stored run (``progress``: a bar over the random graphs on stderr)."""
    return motif_census(fetch_graph(store, run_id, min_weight=min_weight, properties=False), min_weight, n_random, seed, progress=progress)
