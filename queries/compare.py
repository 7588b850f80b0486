"""Comparing connectomes: two runs of one model, of checkpoints of one training run, or of two models.

1. Components are put in correspondence, and the output says how (``figures["alignment"]``):
   - ``same model``: the runs share their model;
   - ``names``: the same local ids (``L1.H3``) on both sides, the right pairing for checkpoints of one
     training run (the same component, followed through training);
   - ``functional``: an alignment computed elsewhere from what the components compute on shared
     stimuli (``ingest.toolbox.alignment``; stored as ``ALIGNED_WITH {similarity, p, q, significant, method}``),
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
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.frames import strongest_first
from atlas.ids import local_id, training_run_of
from atlas.stats import spearman
from atlas.store import Store
from queries.fetch import fetch_components, fetch_edge_columns, require_run

__all__ = ["Comparison", "compare_edges", "align_components", "compare_runs", "write_alignment", "same_training_run", "ROLE_KEYS"]

ROLE_KEYS = ("prevTokenScore", "inductionScore", "duplicateTokenScore")


def _local(cid: str) -> str:
    return local_id(cid)


class _Side(NamedTuple):
    """One run's edges as codes: ends into their distinct ids (given as local ids), channels into
    their names, and the scores."""

    pre: np.ndarray
    pre_ids: list[str]
    post: np.ndarray
    post_ids: list[str]
    channel: np.ndarray
    channel_names: list[str]
    score: np.ndarray


def _side(edges: pd.DataFrame, rename: dict[str, str] | None) -> _Side:
    """Code a run's edges, mapping each distinct component to its local id once (renamed where
    ``rename`` says), not once per edge."""
    def local(column: pd.Series) -> tuple[np.ndarray, list[str]]:
        codes, uniques = pd.factorize(column)
        return codes, [rename.get(u, _local(u)) if rename else _local(u) for u in map(str, uniques)]

    channel, names = pd.factorize(edges["channel"])
    return _Side(*local(edges["componentId_pre"]), *local(edges["componentId_post"]), channel, [str(c) for c in names],
                 edges["score"].to_numpy(dtype=float))


def compare_edges(a: pd.DataFrame, b: pd.DataFrame, top: int = 50, rename_a: dict[str, str] | None = None, *,
                  changes: int | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Compare two edge frames (see module docstring). Returns (figures, per-edge changes, largest
    ``|delta|`` first; only the ``changes`` largest when given, else every edge of either side).

    ``rename_a`` maps run A's component ids to run B's local ids (from an alignment). An edge is
    keyed by (local pre, local post, channel), as integers over one vocabulary of both runs: two
    1.1M-edge runs compare in about a second (ids as strings per edge took ~10 s).
    """
    if top < 1 or (changes is not None and changes < 1):
        raise ValidationError(f"top and changes must be at least 1, got {top} and {changes}")
    sides = (_side(a, rename_a), _side(b, None))
    vocab = pd.Index(pd.unique(np.array([i for s in sides for i in (*s.pre_ids, *s.post_ids)], dtype=object)))
    channels = pd.Index(pd.unique(np.array([c for s in sides for c in s.channel_names], dtype=object)))
    key_a, key_b = ((vocab.get_indexer(s.pre_ids)[s.pre].astype(np.int64) * len(vocab) + vocab.get_indexer(s.post_ids)[s.post]) * len(channels)
                    + channels.get_indexer(s.channel_names)[s.channel] for s in sides)
    union, score_a, score_b = _merge_sums(key_a, sides[0].score, key_b, sides[1].score)
    has_a, has_b = ~np.isnan(score_a), ~np.isnan(score_b)
    shared = has_a & has_b
    rho = spearman(score_a[shared], score_b[shared]) if shared.sum() > 2 else float("nan")
    abs_a, abs_b = np.abs(np.nan_to_num(score_a)), np.abs(np.nan_to_num(score_b))
    top_a, top_b = _top_rows(abs_a, has_a, top), _top_rows(abs_b, has_b, top)  # rows of ``union``
    in_top = np.union1d(top_a, top_b)
    denom = np.maximum(abs_a[in_top], abs_b[in_top]).sum()
    jaccard = float(np.minimum(abs_a[in_top], abs_b[in_top]).sum() / denom) if denom > 0 else float("nan")
    delta = np.nan_to_num(score_b) - np.nan_to_num(score_a)
    gained, lost = np.setdiff1d(top_b, top_a), np.setdiff1d(top_a, top_b)
    status = np.full(len(union), "", dtype=object)
    status[gained], status[lost] = "gained", "lost"
    order = strongest_first(np.abs(delta), np.arange(len(union)), changes)
    frame = pd.DataFrame({"edge": _edge_names(union[order], vocab, channels), "scoreA": score_a[order], "scoreB": score_b[order],
                            "delta": delta[order], "status": status[order]})
    figures = {
        "nEdgesA": int(has_a.sum()), "nEdgesB": int(has_b.sum()), "nShared": int(shared.sum()), "spearman": rho,
        "top": top, "weightedJaccard": jaccard,
        "gained": sorted(map(str, _edge_names(union[gained], vocab, channels))),
        "lost": sorted(map(str, _edge_names(union[lost], vocab, channels))),
    }
    return figures, frame


def _merge_sums(key_a: np.ndarray, score_a: np.ndarray, key_b: np.ndarray, score_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct keys of both sides, ascending, and each side's summed score per key (NaN where
    the side lacks it): one hash pass over both sides' keys, then sums by bincount."""
    codes, uniques = pd.factorize(np.concatenate([key_a, key_b]))
    order = np.argsort(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    out = []
    for part, score in ((codes[: len(key_a)], score_a), (codes[len(key_a):], score_b)):
        at = rank[part]
        sums = np.bincount(at, weights=score, minlength=len(order))
        out.append(np.where(np.bincount(at, minlength=len(order)) > 0, sums, np.nan))
    return uniques[order], out[0], out[1]


def _top_rows(magnitude: np.ndarray, present: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest ``magnitude`` among ``present`` ones (ties: the earlier rows), as a
    sorted array: a partition, not a sort of every edge."""
    rows = np.flatnonzero(present)
    if len(rows) <= k:
        return rows
    values = magnitude[rows]
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = rows[values > kth]
    return np.sort(np.concatenate([above, rows[values == kth][: k - len(above)]]))


def _edge_names(keys: np.ndarray, vocab: pd.Index, channels: pd.Index) -> pd.api.extensions.ExtensionArray:
    """``PRE -> POST [channel]`` for edge keys of :func:`compare_edges`, joined by Arrow (no Python
    string per edge)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pair, channel = np.divmod(keys, len(channels))
    pre, post = np.divmod(pair, len(vocab))
    ids = pa.array([str(v) for v in vocab], type=pa.string())
    tags = pa.array([f" [{c}]" for c in channels], type=pa.string())
    joined = pc.binary_join_element_wise(ids.take(pa.array(pre)), ids.take(pa.array(post)), " -> ")
    return pd.array(pc.binary_join_element_wise(joined, tags.take(pa.array(channel)), ""), dtype="str")


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
    from scipy.optimize import linear_sum_assignment

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
                 align: str = "auto", changes: int | None = None) -> Comparison:
    """Compare two stored runs on their aligned graph (see module docstring; read-only: keep an
    alignment with :func:`write_alignment`).

    Args:
        alignment: matched pairs (``componentId_a, componentId_b``, ...) computed elsewhere, e.g. a
            functional alignment; used as given.
        align: without ``alignment``: ``auto`` (same model, else names when both sides have the same
            components, else an alignment stored for these two models, else refuse), ``names`` or ``structure``.
        changes: keep only the largest ``changes`` per-edge changes (None: every edge of either run;
            naming all 2M edges of two 1M-edge runs is most of a comparison's time).

    Raises:
        ValidationError: no way to align the runs, or nothing aligned.
    """
    if align not in ("auto", "names", "structure", "functional"):
        raise ValidationError(f"unknown alignment {align!r}: auto, names, functional or structure")
    ra, rb = require_run(store, run_a), require_run(store, run_b)
    ea, eb = fetch_edge_columns(store, run_a, categorical=True), fetch_edge_columns(store, run_b, categorical=True)
    if ea.empty or eb.empty:
        raise ValidationError("both runs need edges to compare")
    how = "functional"
    if alignment is None:
        if ra.model_id == rb.model_id:
            how = "same model"  # one model: nothing to align, its components need not be fetched
            return _compared(compare_edges(ea, eb, top, changes=changes), 0, 0, ra, rb, None, how)
        ca, cb = fetch_components(store, ra.model_id), fetch_components(store, rb.model_id)
        same_names = set(ca["componentId"].map(_local)) == set(cb["componentId"].map(_local))
        if align == "structure":
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
        n_a, n_b = n_a - len(ea), n_b - len(eb)
        return _compared(compare_edges(ea, eb, top, rename, changes=changes), n_a, n_b, ra, rb, alignment, how)
    return _compared(compare_edges(ea, eb, top, changes=changes), 0, 0, ra, rb, None, how)


def _compared(result: tuple[dict[str, Any], pd.DataFrame], unaligned_a: int, unaligned_b: int, ra: Any, rb: Any,
              alignment: pd.DataFrame | None, how: str) -> Comparison:
    figures, changes = result
    figures.update({"nUnalignedA": unaligned_a, "nUnalignedB": unaligned_b, "runA": ra.run_id, "runB": rb.run_id, "modelA": ra.model_id,
                    "modelB": rb.model_id, "aligned": alignment is not None, "alignment": how})
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
