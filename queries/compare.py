"""Comparing connectomes: two runs of one model, of checkpoints of one training run, or of two models.

1. Components are put in correspondence, and the output says how (``figures["alignment"]``):
   - ``same model``: the runs share their model;
   - ``names``: the same local ids (``L1.H3``) on both sides, the right pairing for checkpoints of one
     training run (the same component, followed through training);
   - ``functional``: an alignment computed elsewhere from what the components compute on shared
     stimuli (``ingest.alignment``; stored as ``ALIGNED_WITH {similarity, p, q, significant, method}``),
     possibly leaving components unmatched;
   - ``structure``: relative depth (layer + 1) / (n_layers + 1) and, where probed, role scores, by the
     Hungarian algorithm on Euclidean distance (``score = 1 / (1 + d)``): a structural guess that
     forces every component into a match, for when the models cannot be run.
2. Edges are compared on the aligned graph only: edges of either run that touch a component without a
   match are left out and counted (``nUnalignedA`` / ``nUnalignedB``).
3. ``spearman``: rank correlation of the shared edges' scores; ``weightedJaccard``: over the union of
   each run's top-N edges by |score|, sum min(|a|, |b|) / sum max(|a|, |b|) (a missing edge counts 0);
   ``gained`` / ``lost``: top-N edges of one run that are not top-N in the other.
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
from atlas.ids import local_id, training_run_of
from atlas.store import Store
from queries.fetch import fetch_components, fetch_edges, require_run

__all__ = ["Comparison", "compare_edges", "align_components", "compare_runs", "write_alignment", "same_training_run", "ROLE_KEYS"]

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


ALIGNMENT_METHOD = "structure"


@dataclass(frozen=True)
class Comparison:
    """Two runs compared: ``figures`` (shared edges, Spearman, weighted Jaccard, gained/lost, the
    runs and models, whether components were aligned), the per-edge ``changes``, and the
    component ``alignment`` when the runs' components differ (None when they are the same)."""

    figures: dict[str, Any]
    changes: pd.DataFrame
    alignment: pd.DataFrame | None


def compare_runs(store: Store, run_a: str, run_b: str, top: int = 50, *, alignment: pd.DataFrame | None = None,
                 align: str = "auto") -> Comparison:
    """Compare two stored runs on their aligned graph (see module docstring; read-only: keep an
    alignment with :func:`write_alignment`).

    Args:
        alignment: matched pairs (``componentId_a, componentId_b``, ...) computed elsewhere, e.g. a
            functional alignment; used as given.
        align: without ``alignment``: ``auto`` (same model, else names when both sides have the same
            components, else an alignment stored for these two models, else refuse), ``names`` or ``structure``.

    Raises:
        ValidationError: no way to align the runs, or nothing aligned.
    """
    if align not in ("auto", "names", "structure", "functional"):
        raise ValidationError(f"unknown alignment {align!r}: auto, names, functional or structure")
    ra, rb = require_run(store, run_a), require_run(store, run_b)
    ea, eb = fetch_edges(store, run_a), fetch_edges(store, run_b)
    if ea.empty or eb.empty:
        raise ValidationError("both runs need edges to compare")
    ca, cb = fetch_components(store, ra.model_id), fetch_components(store, rb.model_id)
    same_names = set(ca["componentId"].map(_local)) == set(cb["componentId"].map(_local))
    how = "functional"
    if alignment is None:
        if ra.model_id == rb.model_id:
            how = "same model"
        elif align == "structure":
            alignment, how = align_components(ca, cb).assign(method=ALIGNMENT_METHOD), "structure"
        elif align == "names" or (align == "auto" and same_names and same_training_run(ra.model_id, rb.model_id)):
            if not same_names:
                raise ValidationError(f"{ra.model_id} and {rb.model_id} have different components: align them by function or structure")
            how = "names"
        else:
            stored = cx.fetch_alignment(store, ra.model_id, rb.model_id)
            if stored.empty:
                raise ValidationError(f"{ra.model_id} and {rb.model_id} are different models with no stored alignment: align them by "
                                      "function (atlas compare --align functional), by structure (--align structure) or, for models of "
                                      "one shape, by component names (--align names)")
            alignment, how = stored, str(stored["method"].iloc[0])
    if alignment is not None:
        if "matched" in alignment.columns:  # candidates the null did not reject align nothing
            alignment = alignment[alignment["matched"].astype(bool)].reset_index(drop=True)
        rename = {x: _local(y) for x, y in zip(alignment["componentId_a"], alignment["componentId_b"])}
        matched_b = set(alignment["componentId_b"])
        n_a, n_b = len(ea), len(eb)
        ea = ea[ea["componentId_pre"].isin(rename) & ea["componentId_post"].isin(rename)]
        eb = eb[eb["componentId_pre"].isin(matched_b) & eb["componentId_post"].isin(matched_b)]
        if ea.empty or eb.empty:
            raise ValidationError(f"no edge of run {run_a} or {run_b} lies between aligned components")
        figures, changes = compare_edges(ea, eb, top, rename)
        figures.update({"nUnalignedA": n_a - len(ea), "nUnalignedB": n_b - len(eb)})
    else:
        figures, changes = compare_edges(ea, eb, top)
        figures.update({"nUnalignedA": 0, "nUnalignedB": 0})
    figures.update({"runA": run_a, "runB": run_b, "modelA": ra.model_id, "modelB": rb.model_id, "aligned": alignment is not None,
                    "alignment": how})
    return Comparison(figures, changes, alignment)


def same_training_run(model_a: str, model_b: str) -> bool:
    """Whether two model ids are checkpoints of one training run (``NAME`` and ``NAME/step-S``)."""
    return training_run_of(model_a) == training_run_of(model_b)


def write_alignment(store: Store, comparison: Comparison) -> int:
    """Keep a comparison's component alignment as ``ALIGNED_WITH {score, method}`` (0 when the runs
    needed none: same components)."""
    if comparison.alignment is None:
        return 0
    fig = comparison.figures
    return cx.write_alignment(store, fig["modelA"], fig["modelB"], comparison.alignment, str(fig["alignment"]))
