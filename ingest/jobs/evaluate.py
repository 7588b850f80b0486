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
reverse query, solved by induction); ``task=`` evaluates against that. Any other model is evaluated
against a truth the user gives or the atlas ships (:func:`load_truth_spec`):
  - an edge list, scored edge by edge as above;
  - a component list (a published circuit's heads and MLPs, e.g. ``ioi-gpt2-small``), scored node by
    node: a component's importance is ``|sum of its outgoing edge scores|`` (its first-order effect:
    the change of the metric when its output alone is corrupted), the AUC is over every head and MLP,
    and the reference is exact node patching (one forward per component, its output corrupted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from atlas import connectome as cx
from atlas.errors import ModelError, ValidationError
from atlas.ids import local_id
from atlas.stats import spearman
from atlas.store import Store

__all__ = ["roc_auc", "ground_truth_labels", "evaluate_model", "load_truth", "load_truth_spec", "Truth", "SHIPPED_TRUTH", "shipped_truths"]

SHIPPED_TRUTH = Path(__file__).resolve().parent.parent / "model" / "truth"
"""Published circuits the atlas ships as truth files (``--truth NAME``), each with its citation."""


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


def load_truth(path: Path) -> list[list[str]]:
    """A ground-truth edge list: ``[{"source": "L0.H0", "target": "L1.H1", "channel": "k"}, ...]`` in
    the local ids the atlas prints (``EMBED``, ``LOGITS``, ``L1.MLP``, ...).

    Raises:
        ValidationError: an unreadable file or a malformed entry (one line naming it).
    """
    import json

    from atlas.ids import parse_component_id

    try:
        items = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValidationError(f"cannot read the ground truth {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the ground truth {path} is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not items:
        raise ValidationError(f"the ground truth {path} must be a non-empty JSON list of edges")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"source", "target", "channel"} <= set(item):
            raise ValidationError(f"ground-truth edge {i} in {path} needs 'source', 'target' and 'channel'")
        source, target, channel = (str(item[k]) for k in ("source", "target", "channel"))
        for end in (source, target):
            try:
                parse_component_id(f"m/{end}")
            except ValidationError:
                raise ValidationError(f"ground-truth edge {i} in {path}: {end!r} is not a local component id (EMBED, L0.H1, L1.MLP, LOGITS, ...)") from None
        if channel not in ("q", "k", "v", "in"):
            raise ValidationError(f"ground-truth edge {i} in {path}: channel {channel!r} is not one of q, k, v, in")
        out.append([source, target, channel])
    return out


def evaluate_model(store: Store, model: str, method: str, home: Path, *, n_prompts: int = 16, steps: int = 5,
                   progress: bool = True, task: str | None = None, truth_file: str | Path | None = None, metric: str = "logit",
                   dtype: str | None = None, ablation: str | None = None) -> dict[str, Any]:
    """Ingest ``model`` with ``method`` on its evaluation task and score it (see module docstring).

    With ``truth_file`` (:func:`load_truth_spec`: a file or a shipped name) any model and task are evaluated
    against that truth (no structural exclusions: a listed edge or component is a claim the user makes);
    a component truth that names its task needs no ``task``.

    ``ablation`` (``zero``, ``mean``, ``resample``, ``corrupt``) scores by lesions instead of an attribution
    method, as ACDC does: path patching of every edge (edge truth) or of every component (component truth)
    with that replacement, a lesion run written beside the attribution runs (its figures kept on it)."""
    from ingest.edges.methods import MethodConfig, compute_patching
    from ingest.jobs.run import IngestConfig, run_ingest
    from ingest.model.context import load_context
    from ingest.model.encoder import SimilarityTask, encoder_graph
    from ingest.model.family import is_encoder
    from ingest.model.loading import load_model
    from ingest.model.zoo import ZOO

    given = load_truth_spec(truth_file) if truth_file is not None else None
    if given is not None:
        truth_edges = given.edges or []
        task = task or given.task
        if task is None:
            raise ValidationError("--truth needs --task: the task the listed circuit performs")
        task_name, structural, silent = task, set(), frozenset[str]()
        truth_source = str(truth_file)
    else:
        if model not in ZOO:
            raise ModelError(f"evaluate needs a zoo model with a known circuit ({', '.join(sorted(ZOO))}), or --truth EDGES.json "
                             "with --task for any other model")
        entry = ZOO[model]
        task_name = task or entry.evaluation.task or entry.task
        controls = entry.evaluation.controls
        allowed = {entry.evaluation.task or entry.task, entry.task, *controls}
        if task_name not in allowed:
            raise ValidationError(f"{model} has ground truth for tasks {sorted(allowed)}, not {task_name!r}")
        structural = set(entry.evaluation.structural_edges)
        silent = frozenset(entry.evaluation.silent_heads)
        truth_source = f"zoo:{model}"
    from ingest.model.device import default_dtype

    if ablation is not None:
        return _evaluate_lesions(store, model, task_name, ablation, given, structural, silent, truth_source, n_prompts, metric, home, progress)
    config = IngestConfig(model=model, task=task_name, method=method, n_prompts=n_prompts, steps=steps, metric=metric,
                          dtype=dtype or default_dtype())
    result = run_ingest(store, config, home, progress=progress)
    edges = cx.fetch_edge_columns(store, result.run_id)
    loaded = load_model(config.model, home, allow_encoder=True, dtype=config.dtype)
    if given is not None and given.components is not None:
        return _evaluate_components(store, result.run_id, loaded, edges, given, method, task_name, n_prompts, config, home)
    if truth_file is None:
        truth = loaded.info.get(ZOO[model].evaluation.controls.get(task_name, "groundTruth"), {})
        if not truth.get("edges"):
            raise ModelError(f"zoo model {model} declares no ground-truth edges for task {task_name}")
        truth_edges = truth["edges"]

    def exact() -> pd.DataFrame:
        if is_encoder(loaded.model):
            sim = SimilarityTask(Path(task_name))
            graph, batch, task_obj = encoder_graph(loaded.model, loaded.model_id), sim.make_batch(loaded.model, n_prompts, config.seed).to(loaded.device), sim
        else:
            ctx = load_context(model, task_name, n_prompts, config.seed, home, metric=config.metric, loaded=loaded)
            graph, batch, task_obj = ctx.graph, ctx.batch, ctx.task
        return compute_patching(loaded.model, graph, task_obj, batch, MethodConfig())

    figures = _edge_figures(edges, truth_edges, structural, silent, None if method == "patching" else exact)
    cx.write_run_figures(store, result.run_id, {"groundTruthAuc": figures["auc"], "spearmanVsPatching": figures["spearman"]})
    return {"model": model, "modelId": loaded.model_id, "method": method, "task": task_name, "runId": result.run_id, "truth": truth_source,
            **figures}


@dataclass(frozen=True)
class Truth:
    """A ground truth: ``edges`` (``[source, target, channel]`` local ids) or ``components`` (local ids)."""

    source: str
    edges: list[list[str]] | None = None
    components: list[str] | None = None
    citation: str | None = None
    task: str | None = None


def shipped_truths() -> dict[str, Path]:
    """The truth files the atlas ships, by name."""
    return {f.stem: f for f in sorted(SHIPPED_TRUTH.glob("*.json"))}


def load_truth_spec(spec: str | Path) -> Truth:
    """A truth by shipped name (``ioi-gpt2-small``, ``greater-than-gpt2-small``) or file: an edge list
    (see :func:`load_truth`), a list of component ids, or an object with ``components`` or ``roles``
    (role -> component ids) and optionally ``citation`` and ``task``.

    Raises:
        ValidationError: an unknown name, an unreadable file or a malformed entry (one line naming it).
    """
    import json

    from atlas.ids import parse_component_id

    shipped = shipped_truths()
    path = Path(spec)
    if not path.exists() and str(spec) in shipped:
        path = shipped[str(spec)]
    elif not path.exists():
        raise ValidationError(f"ground truth {spec} is neither a file nor a shipped circuit ({', '.join(shipped)})")
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValidationError(f"cannot read the ground truth {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the ground truth {path} is not valid JSON: {exc}") from exc
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        return Truth(str(spec), edges=load_truth(path))
    citation, task = None, None
    if isinstance(data, dict):
        citation, task = data.get("citation"), data.get("task")
        if "components" in data:
            data = data["components"]
        elif isinstance(data.get("roles"), dict):
            data = [c for members in data["roles"].values() for c in members]
    if not isinstance(data, list) or not data or not all(isinstance(c, str) for c in data):
        raise ValidationError(f"the ground truth {path} must list edges ({{source, target, channel}}) or component ids (L9.H6, L8.MLP, ...)")
    for c in data:
        try:
            parse_component_id(f"m/{c}")
        except ValidationError:
            raise ValidationError(f"ground-truth component {c!r} in {path} is not a local component id (L0.H1, L1.MLP, ...)") from None
    return Truth(str(spec), components=sorted(set(data)), citation=citation, task=task)


def node_importance(edges: pd.DataFrame) -> pd.Series:
    """Each sender's ``|sum of outgoing edge scores|``, indexed by local id (heads, MLPs and the embedding)."""
    sums = edges.groupby("componentId_pre")["score"].sum()
    return sums.abs().rename(index=local_id)


def _evaluate_components(store: Store, run_id: str, loaded: Any, edges: pd.DataFrame, truth: Truth, method: str, task_name: str,
                         n_prompts: int, config: Any, home: Path) -> dict[str, Any]:
    """Node-level evaluation against a component truth (see module docstring)."""
    from ingest.model.context import load_context

    ctx = load_context(config.model, task_name, n_prompts, config.seed, home, metric=config.metric, loaded=loaded)
    figures = _component_figures(node_importance(edges), truth.components or [], loaded.model_id, _exact_node_effects(ctx))
    cx.write_run_figures(store, run_id, {"groundTruthAuc": figures["auc"], "spearmanVsPatching": figures["spearman"]})
    return {"model": config.model, "modelId": loaded.model_id, "method": method, "task": task_name, "runId": run_id, "truth": truth.source,
            "citation": truth.citation, "nodeImportance": "|sum of the component's outgoing edge scores|; reference: exact patching of the component's output",
            **figures}


def _edge_figures(frame: pd.DataFrame, truth_edges: list[list[str]], structural: set[Any], silent: frozenset[str],
                  exact: Any = None) -> dict[str, Any]:
    """AUC of ``|score|`` against the truth edges, each true edge's rank, and Spearman against exact
    patching (``exact()``: the patched edge frame; None: the scores are exact patching's own)."""
    labelled = ground_truth_labels(frame, truth_edges, structural, silent)
    scored = labelled[~labelled["structural"]]
    auc = roc_auc(scored["score"].abs().to_numpy(), scored["truth"].to_numpy())
    scored = scored.assign(rank=rankdata(-scored["score"].abs().to_numpy(), method="min").astype(int))
    true = scored[scored["truth"]].sort_values("rank")
    rho = 1.0
    if exact is not None:
        key = ["componentId_pre", "componentId_post", "channel"]
        both = scored[key + ["score"]].merge(exact(), on=key, suffixes=("", "_exact"))  # structural edges are 0 in both
        rho = spearman(both["score"], both["score_exact"])
    return {"auc": auc, "spearman": rho, "nEdges": int(len(scored)), "nTruth": int(scored["truth"].sum()),
            "structuralExcluded": sorted("|".join(k) for k in structural) + [f"every edge of {h} (silent)" for h in sorted(silent)],
            "truthRanks": [{"edge": f"{a} -> {b} [{c}]", "rank": int(r), "score": float(s)}
                           for (a, b, c), r, s in zip(true["key"], true["rank"], true["score"])]}


def _component_figures(importance: pd.Series, components: list[str], model_id: str, exact: pd.Series) -> dict[str, Any]:
    """AUC of each head's and MLP's importance (local id -> magnitude) against the truth components,
    their ranks, and Spearman against ``exact`` (exact node patching's magnitudes)."""
    importance = importance[importance.index != "EMBED"]  # a circuit's heads and MLPs: the embedding is in every circuit
    missing = sorted(set(components) - set(importance.index))
    if missing:
        raise ValidationError(f"ground-truth components missing from the run of {model_id}: {missing[:5]}")
    labels = importance.index.isin(components)
    both = pd.concat([importance.rename("fast"), exact.rename("exact")], axis=1, join="inner")
    ranks = pd.Series(rankdata(-importance.to_numpy(), method="min").astype(int), index=importance.index)
    return {"level": "components", "auc": roc_auc(importance.to_numpy(), labels), "spearman": spearman(both["fast"], both["exact"]),
            "nComponents": int(len(importance)), "nTruth": int(labels.sum()), "structuralExcluded": [],
            "truthRanks": [{"component": c, "rank": int(ranks[c]), "score": float(importance[c])} for c in sorted(components, key=lambda c: ranks[c])]}


def _exact_node_effects(ctx: Any) -> pd.Series:
    """``|effect|`` of exactly patching each component's output with its corrupted one, by local id."""
    from ingest.edges.interventions import ablated_outputs, compute_node_lesions

    lesions = compute_node_lesions(ctx.loaded.model, ctx.graph, ctx.task, ctx.batch, ablated_outputs(ctx.loaded.model, ctx.graph, ctx.batch, "corrupt"))
    return lesions.assign(local=lesions["componentId"].map(local_id)).set_index("local")["effect"].abs()


def _evaluate_lesions(store: Store, model: str, task_name: str, ablation: str, given: Truth | None, structural: set[Any],
                      silent: frozenset[str], truth_source: str, n_prompts: int, metric: str, home: Path, progress: bool) -> dict[str, Any]:
    """``evaluate --ablation``: the lesion run's |effect| as the score, against the truth and against exact
    patching (corrupted outputs; equal to it for ``--ablation corrupt``)."""
    from ingest.edges.methods import compute_patching
    from ingest.jobs.studies import LesionConfig, run_lesion
    from ingest.model.context import load_context
    from ingest.model.zoo import ZOO

    components = given is not None and given.components is not None
    config = LesionConfig(model=model, task=task_name, ablation=ablation, scope="node" if components else "edge", metric=metric,
                          n_prompts=n_prompts).validate()
    result = run_lesion(store, config, home, progress=progress)
    frame = cx.fetch_ablation_edges(store, result.run_id)
    ctx = load_context(model, task_name, n_prompts, config.seed, home, metric=metric)
    if components:
        assert given is not None
        effect = frame.assign(local=frame["componentId_pre"].map(local_id)).set_index("local")["score"].abs()
        figures = _component_figures(effect, given.components or [], ctx.loaded.model_id, _exact_node_effects(ctx))
    else:
        if given is not None:
            truth_edges = given.edges or []
        else:
            info = ctx.loaded.info.get(ZOO[model].evaluation.controls.get(task_name, "groundTruth"), {})
            if not info.get("edges"):
                raise ModelError(f"zoo model {model} declares no ground-truth edges for task {task_name}")
            truth_edges = info["edges"]
        figures = _edge_figures(frame, truth_edges, structural, silent, lambda: compute_patching(ctx.loaded.model, ctx.graph, ctx.task, ctx.batch))
    cx.write_run_figures(store, result.run_id, {"groundTruthAuc": figures["auc"], "spearmanVsPatching": figures["spearman"]})
    return {"model": model, "modelId": ctx.loaded.model_id, "method": f"lesion ({ablation})", "task": task_name, "runId": result.run_id,
            "truth": truth_source, "citation": given.citation if given is not None else None, "ablation": ablation, **figures}
