"""Fidelity: how well a method's edges recover a zoo model's known circuit and match exact patching.

For a zoo model with a declared ground truth:
  1. ingest a run with the method on the model's evaluation task;
  2. ROC AUC of |score| as a detector of ground-truth edges (Mann-Whitney U, ties counted half),
     and each ground-truth edge's rank by |score| (1 = strongest);
  3. Spearman correlation of the scores with exact activation patching on the same prompts (over
     the same scored edges: structural ones, exactly zero under both, would only add ties).
Only edges a token corruption can move are scored: in ``induction-2l`` and ``binding`` the
previous-token head's query and key read position only (by construction), so those two ground-truth
edges are structural and excluded from the AUC (listed as such in the report); so are the edges of
heads held silent by construction (``binding``'s other layer-0 heads), which are exactly zero.
A zoo entry may declare control tasks with their own ground truth (``binding-reverse``: the
reverse query, solved by induction); ``task=`` evaluates against that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

from atlas import connectome as cx
from atlas.errors import ModelError, ValidationError
from atlas.ids import local_id
from atlas.store import Store

__all__ = ["roc_auc", "ground_truth_labels", "evaluate_model"]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U; ties count half)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValidationError("AUC needs at least one positive and one negative")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ground_truth_labels(edges: pd.DataFrame, truth: list[list[str]], structural: set[tuple[str, str, str]],
                        silent: frozenset[str] = frozenset()) -> pd.DataFrame:
    """The edge frame with ``local`` keys, ``truth`` labels and a ``structural`` flag (the listed
    edges and every edge touching a ``silent`` component)."""
    local = (edges["componentId_pre"].map(local_id), edges["componentId_post"].map(local_id), edges["channel"])
    keys = list(zip(*local))
    truth_set = {tuple(t) for t in truth}
    out = edges.assign(key=keys)
    out["truth"] = [k in truth_set for k in keys]
    out["structural"] = [k in structural or k[0] in silent or k[1] in silent for k in keys]
    missing = truth_set - set(keys)
    if missing:
        raise ValidationError(f"ground-truth edges missing from the run: {sorted(missing)[:5]}")
    return out


def evaluate_model(store: Store, model: str, method: str, home: Path, *, n_prompts: int = 16, steps: int = 5,
                   progress: bool = True, task: str | None = None) -> dict[str, Any]:
    """Ingest ``model`` with ``method`` on its evaluation task and score it (see module docstring)."""
    from ingest.graph import build_graph
    from ingest.jobs import IngestConfig, run_ingest
    from ingest.methods import MethodConfig, compute_patching
    from ingest.models import load_model
    from ingest.tasks import get_task
    from ingest.zoo import ZOO

    if model not in ZOO:
        raise ModelError(f"evaluate needs a zoo model with a known circuit: one of {sorted(ZOO)}")
    entry = ZOO[model]
    task_name = task or entry.evaluation.task or entry.task
    controls = entry.evaluation.controls
    allowed = {entry.evaluation.task or entry.task, entry.task, *controls}
    if task_name not in allowed:
        raise ValidationError(f"{model} has ground truth for tasks {sorted(allowed)}, not {task_name!r}")
    config = IngestConfig(model=model, task=task_name, method=method, n_prompts=n_prompts, steps=steps)
    result = run_ingest(store, config, home, progress=progress)
    edges = cx.fetch_edge_columns(store, result.run_id)
    loaded = load_model(model, home)
    truth = loaded.info.get(controls.get(task_name, "groundTruth"), {})
    if not truth.get("edges"):
        raise ModelError(f"zoo model {model} declares no ground-truth edges for task {task_name}")
    structural = set(entry.evaluation.structural_edges)
    silent = frozenset(entry.evaluation.silent_heads)
    labelled = ground_truth_labels(edges, truth["edges"], structural, silent)
    scored = labelled[~labelled["structural"]]
    auc = roc_auc(scored["score"].abs().to_numpy(), scored["truth"].to_numpy())
    scored = scored.assign(rank=rankdata(-scored["score"].abs().to_numpy(), method="min").astype(int))
    gt_ranks = scored[scored["truth"]].sort_values("rank")
    if method == "patching":
        rho = 1.0
    else:
        task = get_task(task_name, config.metric)
        graph = build_graph(loaded.model, loaded.model_id)
        batch = task.make_batch(loaded.model, n_prompts, config.seed)
        exact = compute_patching(loaded.model, graph, task, batch, MethodConfig())
        key = ["componentId_pre", "componentId_post", "channel"]
        both = scored[key + ["score"]].merge(exact, on=key, suffixes=("", "_exact"))  # structural edges are 0 in both
        rho = float(spearmanr(both["score"], both["score_exact"])[0])
    cx.write_run_figures(store, result.run_id, {"groundTruthAuc": auc, "spearmanVsPatching": rho})
    return {
        "model": model, "method": method, "task": task_name, "runId": result.run_id, "auc": auc, "spearman": rho,
        "nEdges": int(len(scored)), "nTruth": int(scored["truth"].sum()),
        "structuralExcluded": sorted("|".join(k) for k in structural) + [f"every edge of {h} (silent)" for h in sorted(silent)],
        "truthRanks": [{"edge": f"{a} -> {b} [{c}]", "rank": int(r), "score": float(s)}
                       for (a, b, c), r, s in zip(gt_ranks["key"], gt_ranks["rank"], gt_ranks["score"])],
    }
