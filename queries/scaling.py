"""Connectome statistics against model size, and which trends hold across seeds.

Per family member (size, seed), from its edges, head lesions and head roles:

- ``effectiveEdges``: how many edges carry 90% of the total ``|score|`` (concentration, no threshold);
- ``strictness`` and ``modularity`` of its hierarchy (:func:`queries.hierarchy.compute_hierarchy`
  over edges with ``|score|`` >= 1% of the largest);
- ``redundancy``: how many heads effectively share the recipe's role, the participation ratio
  ``(sum e)^2 / sum e^2`` of the lesion effects ``|e|`` of the heads that have it (induction score >
  0.5): ``k`` heads that matter equally count ``k``, one head that carries it all counts 1;
- ``inductionHeads``: heads with induction score > 0.5 (the motif the recipe is for);
- ``finalLoss``.

A trend is the Spearman correlation of a statistic with size within one seed; it is **robust**
when every seed's correlation has the same sign and |rho| >= 0.5 (with three sizes rho is one of
-1, -0.5, 0.5, 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from atlas.errors import ValidationError
from atlas.stats import spearman
from queries.development import share_for_mass

__all__ = ["member_statistics", "trends", "STATISTICS"]

STATISTICS = ("effectiveEdges", "strictness", "modularity", "redundancy", "inductionHeads", "finalLoss")


def member_statistics(size: int, seed: int, edges: pd.DataFrame, lesions: pd.DataFrame, roles: dict[str, dict[str, float]],
                      final_loss: float) -> dict[str, Any]:
    """The statistics of one member (see module docstring)."""
    from queries.graph import edges_to_graph
    from queries.hierarchy import compute_hierarchy

    strength = edges["score"].abs()
    hierarchy = compute_hierarchy(edges_to_graph(edges), min_weight=0.01 * float(strength.max()) if len(edges) else 0.0)
    from atlas.ids import local_id

    role = {name for name, r in roles.items() if r["inductionScore"] > 0.5}
    effects = lesions.loc[lesions["componentId"].map(local_id).isin(role), "effect"].abs().to_numpy()
    return {
        "size": int(size), "seed": int(seed), "nEdges": int(len(edges)),
        "effectiveEdges": int(round(share_for_mass(strength.to_numpy()) * len(edges))),
        "strictness": float(hierarchy.summary["strictness"]), "modularity": float(hierarchy.summary["modularity"]),
        "redundancy": float(effects.sum() ** 2 / (effects**2).sum()) if len(effects) and (effects**2).sum() > 0 else 0.0,
        "inductionHeads": int(sum(1 for r in roles.values() if r["inductionScore"] > 0.5)),
        "finalLoss": float(final_loss),
    }


def trends(table: pd.DataFrame, statistics: Sequence[str] = STATISTICS) -> pd.DataFrame:
    """Per statistic: Spearman with size in each seed, and whether the trend is robust across seeds."""
    seeds = sorted(table["seed"].unique())
    if len(seeds) < 2 or table.groupby("seed")["size"].nunique().min() < 3:
        raise ValidationError("scaling trends need at least three sizes in each of at least two seeds")
    rows = []
    for stat in statistics:
        rhos = []
        for seed in seeds:
            sub = table[table["seed"] == seed].sort_values("size")
            values = sub[stat].to_numpy(dtype=float)
            rhos.append(spearman(sub["size"], values) if np.std(values) > 0 else 0.0)
        signs = {np.sign(r) for r in rhos}
        robust = len(signs) == 1 and 0 not in signs and min(abs(r) for r in rhos) >= 0.5
        direction = ("grows" if rhos[0] > 0 else "shrinks") if robust else "no robust trend"
        rows.append({"statistic": stat, **{f"rhoSeed{s}": r for s, r in zip(seeds, rhos)}, "robust": robust, "trend": direction})
    return pd.DataFrame(rows)
