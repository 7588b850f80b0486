"""Comparing connectomes: two runs of one architecture (checkpoints, tasks, methods) or of two models.

Same architecture (the same local component ids, e.g. two training checkpoints):
  1. edges are matched by their local ids (``L0.H0 -> L1.H2 [k]``, model prefix dropped);
  2. ``spearman``: rank correlation of the shared edges' scores;
  3. ``weightedJaccard``: over the union of each run's top-N edges by |score|,
     sum min(|a|, |b|) / sum max(|a|, |b|) (a missing edge counts 0);
  4. ``gained`` / ``lost``: top-N edges of one run that are not top-N in the other.
Different architectures: components are first aligned within each kind by relative depth
(layer + 1) / (n_layers + 1) and, where probed, role scores (previous-token, induction,
duplicate-token), with the Hungarian algorithm on Euclidean distance (``score = 1 / (1 + d)``);
edges of run A are renamed through the alignment and compared as above. Across training
checkpoints this shows when a circuit appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import local_id
from atlas.store import Store
from queries.fetch import fetch_components, fetch_edges, require_run

__all__ = ["Comparison", "compare_edges", "align_components", "compare_runs", "write_alignment", "ROLE_KEYS"]

ROLE_KEYS = ("prevTokenScore", "inductionScore", "duplicateTokenScore")


def _local(cid: str) -> str:
    return local_id(cid)


def _keyed(edges: pd.DataFrame, rename: dict[str, str] | None = None) -> pd.Series:
    pre = edges["componentId_pre"].map(lambda c: rename.get(c, _local(c)) if rename else _local(c))
    post = edges["componentId_post"].map(lambda c: rename.get(c, _local(c)) if rename else _local(c))
    keys = pre + " -> " + post + " [" + edges["channel"] + "]"
    return pd.Series(edges["score"].to_numpy(dtype=float), index=keys).groupby(level=0).sum()


def compare_edges(a: pd.DataFrame, b: pd.DataFrame, top: int = 50, rename_a: dict[str, str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Compare two edge frames (see module docstring). Returns (figures, per-edge changes).

    ``rename_a`` maps run A's component ids to run B's local ids (from an alignment).
    """
    if top < 1:
        raise ValidationError(f"top must be at least 1, got {top}")
    sa, sb = _keyed(a, rename_a), _keyed(b)
    shared = sa.index.intersection(sb.index)
    rho = float(spearmanr(sa[shared], sb[shared])[0]) if len(shared) > 2 else float("nan")
    top_a = set(sa.abs().nlargest(top).index)
    top_b = set(sb.abs().nlargest(top).index)
    union = sorted(top_a | top_b)
    va = sa.reindex(union).fillna(0.0).abs().to_numpy()
    vb = sb.reindex(union).fillna(0.0).abs().to_numpy()
    denom = np.maximum(va, vb).sum()
    jaccard = float(np.minimum(va, vb).sum() / denom) if denom > 0 else float("nan")
    changes = pd.DataFrame({"edge": sa.index.union(sb.index)})
    changes["scoreA"] = sa.reindex(changes["edge"]).to_numpy()
    changes["scoreB"] = sb.reindex(changes["edge"]).to_numpy()
    changes["delta"] = changes["scoreB"].fillna(0.0) - changes["scoreA"].fillna(0.0)
    changes["status"] = np.where(changes["edge"].isin(top_b - top_a), "gained",
                                 np.where(changes["edge"].isin(top_a - top_b), "lost", ""))
    changes = changes.reindex(changes["delta"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    figures = {
        "nEdgesA": int(len(sa)), "nEdgesB": int(len(sb)), "nShared": int(len(shared)), "spearman": rho,
        "top": top, "weightedJaccard": jaccard,
        "gained": sorted(top_b - top_a), "lost": sorted(top_a - top_b),
    }
    return figures, changes


def _features(comps: pd.DataFrame) -> pd.DataFrame:
    """Relative depth over the whole model, and role scores (0 where not probed), per component."""
    layers = pd.to_numeric(comps["layer"], errors="coerce").fillna(-1.0).astype(float)
    top = layers.max() + 1 if len(layers) else 1.0
    feats = pd.DataFrame({"depth": ((layers + 1) / (top + 1)).to_numpy()}, index=comps["componentId"].to_numpy())
    for key in ROLE_KEYS:
        feats[key] = comps[key].astype(float).fillna(0.0).to_numpy() if key in comps.columns else 0.0
    return feats


def align_components(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One-to-one alignment of two models' components within each kind (see module docstring).

    Both frames need ``componentId``, ``kind`` and ``layer``; role-score columns are used when present.
    Returns ``componentId_a, componentId_b, kind, distance, score``.
    """
    rows = []
    all_a, all_b = _features(a), _features(b)
    for kind in sorted(set(a["kind"]) & set(b["kind"])):
        fa = all_a.loc[a.loc[a["kind"] == kind, "componentId"].to_numpy()]
        fb = all_b.loc[b.loc[b["kind"] == kind, "componentId"].to_numpy()]
        cost = np.sqrt(((fa.to_numpy()[:, None, :] - fb.to_numpy()[None, :, :]) ** 2).sum(-1))
        ia, ib = linear_sum_assignment(cost)
        for i, j in zip(ia, ib):
            rows.append({"componentId_a": fa.index[i], "componentId_b": fb.index[j], "kind": kind,
                         "distance": float(cost[i, j]), "score": 1.0 / (1.0 + float(cost[i, j]))})
    return pd.DataFrame(rows, columns=["componentId_a", "componentId_b", "kind", "distance", "score"])


ALIGNMENT_METHOD = "depth+roles"


@dataclass(frozen=True)
class Comparison:
    """Two runs compared: ``figures`` (shared edges, Spearman, weighted Jaccard, gained/lost, the
    runs and models, whether components were aligned), the per-edge ``changes``, and the
    component ``alignment`` when the runs' components differ (None when they are the same)."""

    figures: dict[str, Any]
    changes: pd.DataFrame
    alignment: pd.DataFrame | None


def compare_runs(store: Store, run_a: str, run_b: str, top: int = 50) -> Comparison:
    """Compare two stored runs, aligning components when they differ (read-only: keep an alignment
    with :func:`write_alignment`)."""
    ra, rb = require_run(store, run_a), require_run(store, run_b)
    ea, eb = fetch_edges(store, run_a), fetch_edges(store, run_b)
    if ea.empty or eb.empty:
        raise ValidationError("both runs need edges to compare")
    ca, cb = fetch_components(store, ra.model_id), fetch_components(store, rb.model_id)
    same = set(ca["componentId"].map(_local)) == set(cb["componentId"].map(_local))
    rename = None
    alignment = None
    if not same:
        alignment = align_components(ca, cb)
        rename = {x: _local(y) for x, y in zip(alignment["componentId_a"], alignment["componentId_b"])}
        unmatched = set(ea["componentId_pre"]) | set(ea["componentId_post"])
        ea = ea[ea["componentId_pre"].isin(rename) & ea["componentId_post"].isin(rename)]
        if ea.empty:
            raise ValidationError(f"no component of run {run_a} could be aligned with run {run_b} ({len(unmatched)} unmatched)")
    figures, changes = compare_edges(ea, eb, top, rename)
    figures.update({"runA": run_a, "runB": run_b, "modelA": ra.model_id, "modelB": rb.model_id, "aligned": not same})
    return Comparison(figures, changes, alignment)


def write_alignment(store: Store, comparison: Comparison) -> int:
    """Keep a comparison's component alignment as ``ALIGNED_WITH {score, method}`` (0 when the runs
    needed none: same components)."""
    if comparison.alignment is None:
        return 0
    fig = comparison.figures
    return cx.write_alignment(store, fig["modelA"], fig["modelB"], comparison.alignment, ALIGNMENT_METHOD)
