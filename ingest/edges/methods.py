"""Edge methods: EAP, EAP-IG and exact activation patching, written once over the model interface.

Every method has the signature ``(model, graph, task, batch, config, progress) -> edge frame`` and
scores an edge ``u -> v`` as the change of the task metric (mean over prompts) when ``v`` receives
``u``'s corrupted output instead of its clean one, all positions at once::

    score(u -> v) ~= m(clean with edge u->v corrupted) - m(clean)

EAP (Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery"):
  1. Forward the corrupted prompts; record each sender's output ``a_u`` (no grad).
  2. Forward the clean prompts with activation gradients on; record ``a_u`` and backprop the metric.
  3. For each receiver input ``v`` get ``g_v = dm/d(input of v)``; score = sum_pos (a_u^corr - a_u^clean) . g_v.
EAP-IG (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness"):
  as EAP, but ``g_v`` is the mean over ``k`` forward/backward passes whose input embeddings lie on the
  straight line from the corrupted to the clean prompt (``alpha = 1/k, 2/k, ..., 1``): ``k + 2`` passes.
Exact patching: one forward per edge, batched by tiling the prompts (as many edges per pass as the
  patching budget allows), each copy with its own edge patched and one copy left clean.

How a sender's change reaches a receiver (and the gradients at receivers) is the model family's
business (:mod:`ingest.edges.interface`: pre-LN decoders in :mod:`ingest.edges.decoder`, post-LN
encoders in :mod:`ingest.edges.encoder`). Which methods exist, and what each accepts, is
:mod:`ingest.edges.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ValidationError
from atlas.frames import validate_edges
from ingest.edges.interface import Progress, analysis_mode, copy_elements, edge_frame, interface_for, restores_model
from ingest.model.graph import ModelGraph
from ingest.model.hooks import hook_name
from ingest.model.tasks import PromptBatch, Task

__all__ = [
    "MethodConfig",
    "compute_eap",
    "compute_eap_ig",
    "compute_eap_ig_activations",
    "compute_patching",
    "aggregate_positions",
    "all_edges",
    "select_neurons",
    "select_features",
]


@dataclass(frozen=True)
class MethodConfig:
    """Settings shared by the edge methods.

    Attributes:
        steps: Integration steps of EAP-IG (``k``).
        patch_budget: Elements (floats) one patching forward may allocate for its deltas; bounds memory.
    """

    steps: int = 5
    patch_budget: int = 64_000_000
    per_prompt: bool = False
    """Also keep every edge's score per prompt (column ``promptScores``, one value per prompt whose
    mean is the edge's score): memory and storage grow with the number of prompts."""
    per_position: bool = False
    """Resolve every edge by position (``u@srcPos -> v@dstPos``, columns ``srcPos``/``dstPos``; the
    gradient methods only): see :func:`ingest.edges.decoder._positional_scores`."""
    position_budget: int = 100_000_000
    """Most ``sender x receiver x position x position`` scores a per-position run may hold (float64:
    800 MB at the default); a larger one is refused before any compute, naming the numbers."""
    activation_budget: int | None = None
    """Bytes one pass of a gradient method may hold: more prompts than fit are split into passes whose
    scores are merged exactly (the metric is a mean over prompts). None: the device's default
    (:func:`ingest.model.device.activation_budget`: ``$ATLAS_ACTIVATION_BUDGET``, else a share of
    free memory)."""


def compute_eap(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, config: MethodConfig = MethodConfig(),
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Edge attribution patching: 2 forward passes + 1 forward/backward (see module docstring)."""
    return _gradient_method(model, graph, task, batch, [1.0], progress, config)


def compute_eap_ig(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, config: MethodConfig = MethodConfig(),
    progress: Progress | None = None,
) -> pd.DataFrame:
    """EAP with integrated gradients over ``config.steps`` input interpolations (k + 2 passes)."""
    if config.steps < 1:
        raise ValidationError(f"EAP-IG needs at least 1 step, got {config.steps}")
    alphas = [(i + 1) / config.steps for i in range(config.steps)]
    return _gradient_method(model, graph, task, batch, alphas, progress, config)

def compute_eap_ig_activations(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, config: MethodConfig = MethodConfig(),
    progress: Progress | None = None,
) -> pd.DataFrame:
    """EAP-IG over activations (Hanna et al. 2024's EAP-IG-activations; Marks et al. 2024 use the same
    path for nodes): at step alpha every sender outputs ``corr + alpha (clean - corr)``, so each
    receiver's input moves on the straight line between its corrupted and clean values and the
    integral is complete per receiver; ``k + 2`` passes like EAP-IG over inputs."""
    if config.steps < 1:
        raise ValidationError(f"EAP-IG needs at least 1 step, got {config.steps}")
    alphas = [(i + 0.5) / config.steps for i in range(config.steps)]  # midpoint rule
    return _gradient_method(model, graph, task, batch, alphas, progress, config, interpolate="activations")

def _gradient_method(model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, alphas: list[float], progress: Progress | None,
                     config: MethodConfig, interpolate: str = "inputs") -> pd.DataFrame:
    """The body every gradient method shares: the interface's scores under :func:`analysis_mode`, as an
    edge frame; a batch larger than one pass's budget (``config.activation_budget``) is computed in
    passes and merged exactly (:func:`ingest.edges.shards.merge_prompt_shards`), whatever the caller asks."""
    from ingest.edges.shards import merge_prompt_shards, plan_ranges, prompt_chunk

    chunk = prompt_chunk(model, graph, batch, config.activation_budget)
    if chunk < batch.n_prompts:
        ranges = plan_ranges(batch.n_prompts, -(-batch.n_prompts // chunk), "prompts")
        frames = [_gradient_method(model, graph, task, batch.select(a, b), alphas, progress, config, interpolate) for a, b in ranges]
        return merge_prompt_shards(frames, [b - a for a, b in ranges])
    interface = interface_for(model)
    with analysis_mode(model):
        if config.per_position:
            if config.per_prompt:
                raise ValidationError("per-position and per-prompt scores together would hold edges x positions^2 x prompts: choose one")
            n_pos = batch.clean.shape[1]
            need = len(graph.senders) * len(graph.receivers) * n_pos * n_pos
            if need > config.position_budget:
                raise ValidationError(
                    f"per-position scores would hold {len(graph.senders)} senders x {len(graph.receivers)} receivers x {n_pos}^2 position pairs "
                    f"= {need:,} values (budget {config.position_budget:,}): use shorter prompts or a coarser granularity")
            return interface.positional_frame(model, graph, task, batch, alphas, progress, interpolate)
        score, scored, prompts = interface.gradient_scores(model, graph, task, batch, alphas, progress, interpolate, config.per_prompt)
    return edge_frame(graph, score, scored, prompts)


def all_edges(graph: ModelGraph) -> list[tuple[int, int]]:
    """Every (sender index, receiver index) pair of the graph, receiver-major."""
    return [(s.index, r.index) for r in graph.receivers for s in graph.visible(r)]

def compute_patching(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, config: MethodConfig = MethodConfig(),
    progress: Progress | None = None, edges: list[tuple[int, int]] | None = None,
    delta: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Exact activation patching of every edge (or of ``edges``, as (sender, receiver) indices), for
    any model family.

    Many edges share a forward pass: the prompts are tiled once per edge in a chunk (as many copies
    as ``config.patch_budget`` allows) and each copy receives its own sender change at its own
    receiver input (:meth:`ingest.edges.interface.ModelInterface.patched_metrics`); one more copy is
    left clean, so a zero change scores exactly 0 (a separate forward at another batch size rounds
    differently, ~1e-16).

    Args:
        delta: ``[batch, pos, sender, d_model]`` replacement-minus-clean sender outputs; default
            corrupted-minus-clean. Path patching with zero/mean/resample ablations passes its own.
    """
    if config.per_position:
        raise ValidationError("exact patching is not resolved by position (one forward per edge and position pair); "
                              "use eap, eap-ig or eap-ig-act for per-position edges")
    interface = interface_for(model)
    edges = all_edges(graph) if edges is None else list(edges)
    with analysis_mode(model):
        if delta is None:
            with torch.no_grad():
                delta = interface.sender_outputs(model, graph, batch.corrupted) - interface.sender_outputs(model, graph, batch.clean)
        prepared = interface.prepare_patching(model, graph, batch, delta)
        chunk = max(1, min(len(edges), config.patch_budget // copy_elements(model, graph, batch) - 1))
        b = batch.clean.shape[0]
        score = np.zeros((len(graph.senders), len(graph.receivers)))
        scored = np.zeros(score.shape, dtype=bool)
        prompts = np.zeros((len(graph.senders), b, len(graph.receivers))) if config.per_prompt else None
        for start in range(0, len(edges), chunk):
            part = edges[start : start + chunk]
            metrics = interface.patched_metrics(model, graph, task, batch, prepared, [*part, None])  # [copy, prompt]
            effects = metrics[:-1] - metrics[-1]
            for (si, ri), eff in zip(part, effects, strict=True):
                score[si, ri] = eff.mean()
                scored[si, ri] = True
                if prompts is not None:
                    prompts[si, :, ri] = eff
            if progress:
                progress(len(part))
    return edge_frame(graph, score, scored, prompts)


def aggregate_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """The position-free edges of a position-resolved frame: each ``(u, v, channel)``'s scores summed
    over its position pairs (for attribution, exactly the position-free score)."""
    out = frame.groupby(["componentId_pre", "componentId_post", "channel"], sort=False, as_index=False)["score"].sum()
    return validate_edges(out)


@restores_model
def _node_attribution_passes(model: Any, task: Task, batch: PromptBatch, names: set[str],
                             with_grad: set[str]) -> tuple[Any, dict[str, torch.Tensor]]:
    """The two passes of EAP node attribution: activations at ``names`` on the corrupted prompts
    (a cache), and on the clean prompts with the metric's gradient at ``with_grad`` (``.grad``)."""
    with torch.no_grad():
        _, corr = model.run_with_cache(batch.corrupted, names_filter=lambda n: n in names)
    store: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if hook.name in with_grad:
            act.retain_grad()
        store[hook.name] = act
        return act

    with torch.enable_grad():
        emb = model.embed(batch.clean).detach().requires_grad_(True)
        logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook_name("embed"), lambda a, hook: emb), *[(n, keep) for n in names]])
        task.metric(logits, batch).mean().backward()
    return corr, store


def select_neurons(model: Any, task: Task, batch: PromptBatch, k: int) -> tuple[dict[int, list[int]], pd.DataFrame]:
    """The ``k`` most important neurons of each MLP by node attribution (EAP on neurons):
    ``|sum_{batch, pos} (post_corr - post_clean) * dm/dpost|`` (mean over prompts), one forward on
    the corrupted prompts and one forward/backward on the clean ones. Returns (layer -> neurons,
    the scores of every neuron)."""
    if k < 1:
        raise ValidationError(f"--top-neurons must be at least 1, got {k}")
    if model.cfg.attn_only:
        raise ValidationError("neuron granularity needs a model with MLPs")
    names = {hook_name("post", l) for l in range(model.cfg.n_layers)}
    corr, store = _node_attribution_passes(model, task, batch, names, names)
    rows, chosen = [], {}
    for l in range(model.cfg.n_layers):
        name = hook_name("post", l)
        score = ((corr[name] - store[name].detach()) * store[name].grad).sum(dim=1).mean(dim=0)  # [d_mlp]
        top = torch.topk(score.abs(), min(k, score.numel())).indices.tolist()
        chosen[l] = sorted(top)
        rows += [{"layer": l, "neuron": n, "score": float(score[n]), "selected": n in top} for n in range(score.numel())]
    return chosen, pd.DataFrame(rows)


def select_features(model: Any, saes: dict[int, Any], task: Task, batch: PromptBatch, k: int) -> tuple[dict[int, list[int]], pd.DataFrame]:
    """The features of each layer's dictionary active on the batch (clean or corrupted, any
    position), at most ``k`` of them by EAP node attribution ``|sum (f_corr - f_clean) * W_dec[i] .
    dm/d(mlp_out)|`` (mean over prompts). Returns (layer -> features, every active feature's score)."""
    if k < 1:
        raise ValidationError(f"--top-features must be at least 1, got {k}")
    names = {hook_name(s, l) for l in saes for s in ("mlp_out", "resid_mid", "resid_pre")}
    corr, store = _node_attribution_passes(model, task, batch, names, {n for n in names if n.endswith("mlp_out")})
    rows, chosen = [], {}
    parallel = bool(model.cfg.parallel_attn_mlp)
    for l, sae in sorted(saes.items()):
        def acts(cache: Any) -> torch.Tensor:
            mlp_in = cache[hook_name("resid_pre" if parallel else "resid_mid", l)].detach()
            out = cache[hook_name("mlp_out", l)].detach()
            return sae.encode(model.blocks[l].ln2(mlp_in) if sae.is_transcoder else out)

        with torch.no_grad():
            f_clean, f_corr = acts(store), acts(corr)
            grad_f = store[hook_name("mlp_out", l)].grad @ sae.W_dec.T  # [b, p, d_sae]
            score = ((f_corr - f_clean) * grad_f).sum(dim=1).mean(dim=0)
            active = ((f_clean > 0) | (f_corr > 0)).flatten(0, 1).any(0)
        idx = torch.nonzero(active).flatten()
        if len(idx) == 0:
            raise ValidationError(f"no feature of dictionary {sae.dictionary_id} is active on these prompts")
        top = idx[torch.topk(score[idx].abs(), min(k, len(idx))).indices].tolist()
        chosen[l] = sorted(top)
        rows += [{"layer": l, "feature": int(i), "score": float(score[i]), "selected": int(i) in top} for i in idx.tolist()]
    return chosen, pd.DataFrame(rows)
