"""Interventions: ablation values, node lesions, and circuits run with every other edge ablated.

Ablations (what replaces a component's output):
  - ``corrupt``: its output on the corrupted prompt (activation patching);
  - ``zero``: nothing;
  - ``mean``: its mean output over a reference prompt set, per position;
  - ``resample``: its output on another prompt drawn from the reference set.

Node lesion (a lesion study): one component's output is replaced everywhere downstream and the
metric change is its effect; many lesions share a pass by tiling the prompts, one lesion per copy.

Circuit faithfulness (Wang et al. 2022; Conmy et al. 2023):
  1. Keep a set C of edges. In one forward pass, every receiver input v reads
     ``resid_v - sum_{u -> v not in C} (a_u(current) - a_u(ablated))``: edges outside C carry the
     ablated value, edges inside C carry whatever the sender outputs in this very pass.
  2. faithfulness = (m(C) - m(empty)) / (m(all edges) - m(empty)); m(all edges) is the clean run and,
     for ``corrupt`` ablation, m(empty) is the corrupted run. The three metrics are also kept per
     prompt (``promptMetricCircuit`` / ``Full`` / ``Empty``), so one can see which prompts the
     circuit carries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from atlas.errors import ValidationError
from atlas.schema import Ablation, ComponentKind, choices
from ingest.edges.decoder import mlp_in_hook, qkv_input_change
from ingest.edges.interface import restores_model, sender_outputs
from ingest.model.graph import ModelGraph
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_outputs
from ingest.model.tasks import PromptBatch, Task

__all__ = ["ABLATIONS", "ablated_outputs", "compute_node_lesions", "circuit_metric", "circuit_metrics", "faithfulness"]

ABLATIONS = tuple(choices(Ablation))


def ablated_outputs(
    model: Any, graph: ModelGraph, batch: PromptBatch, ablation: str, reference: torch.Tensor | None = None, seed: int = 0
) -> torch.Tensor:
    """``[batch, pos, sender, d_model]`` outputs that replace each sender's under ``ablation``.

    Args:
        reference: ``[n_ref, pos]`` reference prompts for ``mean`` and ``resample``.
    """
    if ablation not in ABLATIONS:
        raise ValidationError(f"unknown ablation {ablation!r}: choose one of {list(ABLATIONS)}")
    with torch.no_grad():
        if ablation == "corrupt":
            return sender_outputs(model, graph, batch.corrupted)
        clean = sender_outputs(model, graph, batch.clean)
        if ablation == "zero":
            return torch.zeros_like(clean)
        if reference is None or reference.shape[1] != batch.clean.shape[1]:
            raise ValidationError(f"{ablation} ablation needs reference prompts of the same length as the task's")
        ref = sender_outputs(model, graph, reference)
        if ablation == "mean":
            return ref.mean(dim=0, keepdim=True).expand_as(clean).clone()
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, ref.shape[0], (clean.shape[0],), generator=gen)  # drawn on the host: the same draw on every device
        return ref[pick.to(ref.device)]


def _lesion_hooks(model: Any, graph: ModelGraph, ablated: torch.Tensor, lesioned: list[int], b: int) -> list[tuple[str, Any]]:
    """Hooks lesioning sender ``lesioned[e]`` in batch copy ``e`` (prompts tiled copy-major)."""
    e = len(lesioned)
    senders = graph.senders
    z_store: dict[int, torch.Tensor] = {}
    hooks: list[tuple[str, Any]] = []
    dev = ablated.device
    rows = torch.arange(e * b, device=dev)
    copy_of_row = rows // b
    prompt_of_row = rows % b
    kinds = {senders[i].kind for i in lesioned}

    def mask_for(pred: Callable[[Any], bool]) -> torch.Tensor:
        return torch.tensor([pred(senders[lesioned[c]]) for c in copy_of_row.tolist()], device=dev)

    if ComponentKind.EMBED in kinds:
        embed_idx = next(s.index for s in senders if s.kind is ComponentKind.EMBED)
        m = mask_for(lambda s: s.kind is ComponentKind.EMBED)

        def embed_hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            new = ablated[prompt_of_row, :, embed_idx]
            return torch.where(m[:, None, None], new, act)

        hooks.append((hook_name("resid_pre", 0), embed_hook))
    for layer in range(graph.n_layers):
        head_copies = [(c, senders[i]) for c, i in enumerate(lesioned) if senders[i].kind is ComponentKind.HEAD and senders[i].layer == layer]
        if head_copies:
            first = next(s.index for s in senders if s.kind is ComponentKind.HEAD and s.layer == layer)
            hmask = torch.zeros(e * b, graph.n_heads, dtype=ablated.dtype, device=dev)
            for c, s in head_copies:
                hmask[c * b : (c + 1) * b, s.head] = 1

            def keep_z(act: torch.Tensor, hook: Any, layer: int = layer) -> torch.Tensor:
                z_store[layer] = act
                return act

            def attn_hook(act: torch.Tensor, hook: Any, layer: int = layer, first: int = first, hmask: torch.Tensor = hmask) -> torch.Tensor:
                out = head_outputs(model, layer, z_store[layer])
                abl = ablated[prompt_of_row, :, first : first + graph.n_heads]
                return act + torch.einsum("bh,bphd->bpd", hmask, abl - out)

            hooks.append((hook_name("z", layer), keep_z))
            hooks.append((hook_name("attn_out", layer), attn_hook))
        mlp_copies = [c for c, i in enumerate(lesioned) if senders[i].kind is ComponentKind.MLP and senders[i].layer == layer]
        if mlp_copies:
            idx = next(s.index for s in senders if s.kind is ComponentKind.MLP and s.layer == layer)
            mm = torch.zeros(e * b, dtype=torch.bool, device=dev)
            for c in mlp_copies:
                mm[c * b : (c + 1) * b] = True

            def mlp_hook(act: torch.Tensor, hook: Any, idx: int = idx, mm: torch.Tensor = mm) -> torch.Tensor:
                return torch.where(mm[:, None, None], ablated[prompt_of_row, :, idx], act)

            hooks.append((hook_name("mlp_out", layer), mlp_hook))
    return hooks


@restores_model
def compute_node_lesions(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, ablated: torch.Tensor,
    progress: Callable[[int], None] | None = None, budget: int = 32_000_000,
) -> pd.DataFrame:
    """Effect on the mean metric of lesioning each sender (embedding, every head, every MLP).

    Returns a frame ``componentId, kind, layer, effect`` with ``effect = m(lesioned) - m(clean)``.
    """
    b, p, _, d = ablated.shape
    chunk = max(1, budget // (b * p * d * max(graph.n_heads, 1)))
    with torch.no_grad():
        base = float(task.metric(model(batch.clean), batch).mean())
        effects: list[float] = []
        order = [s.index for s in graph.senders]
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            tiled = batch.repeat(len(part))
            logits = model.run_with_hooks(tiled.clean, fwd_hooks=_lesion_hooks(model, graph, ablated, part, b))
            effects.extend((task.metric(logits, tiled).view(len(part), b).mean(dim=1) - base).double().tolist())
            if progress:
                progress(len(part))
    return pd.DataFrame(
        {
            "componentId": [s.component_id for s in graph.senders],
            "kind": [s.kind.value for s in graph.senders],
            "layer": [s.layer for s in graph.senders],
            "effect": effects,
        }
    )


def circuit_metric(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, ablated: torch.Tensor, keep: set[tuple[int, int]]
) -> float:
    """Mean metric with every edge outside ``keep`` (sender, receiver indices) carrying its ablated value."""
    return float(circuit_metrics(model, graph, task, batch, ablated, keep).mean())


@restores_model
def circuit_metrics(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, ablated: torch.Tensor, keep: set[tuple[int, int]]
) -> torch.Tensor:
    """:func:`circuit_metric` per prompt (``[batch]``)."""
    senders, n_l = graph.senders, graph.n_layers
    current: dict[int, torch.Tensor] = {}  # sender index -> its output in this pass
    by_recv: dict[int, list[int]] = {}
    for r in graph.receivers:
        by_recv[r.index] = [s.index for s in graph.visible(r) if (s.index, r.index) not in keep]

    def d_of(indices: list[int]) -> torch.Tensor:
        return sum((current[i] - ablated[:, :, i] for i in indices), torch.zeros_like(ablated[:, :, 0]))

    embed_idx = senders[0].index
    hooks: list[tuple[str, Any]] = []

    def record_embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
        current[embed_idx] = act  # resid_pre of layer 0 is exactly the embedding (+ position)
        return act

    hooks.append((hook_name("resid_pre", 0), record_embed))
    resid: dict[int, torch.Tensor] = {}
    for layer in range(n_l):
        attn = model.blocks[layer].attn
        heads = [r for r in graph.receivers if r.kind is ComponentKind.HEAD and r.layer == layer]

        def keep_resid(act: torch.Tensor, hook: Any, layer: int = layer) -> torch.Tensor:
            resid[layer] = act
            return act

        hooks.append((hook_name("resid_pre", layer), keep_resid))
        for c in "qkv":
            recv = sorted((r for r in heads if r.channel.value == c), key=lambda r: r.head or 0)

            def qkv_hook(act: torch.Tensor, hook: Any, layer: int = layer, c: str = c, recv: list[Any] = recv) -> torch.Tensor:
                corr = torch.stack([d_of(by_recv[r.index]) for r in recv], dim=2)  # [b, p, h, d]
                if not bool(corr.abs().any()):
                    return act
                w = getattr(model.blocks[layer].attn, f"W_{c.upper()}")
                return act + qkv_input_change(model.blocks[layer].ln1, w, resid[layer], -corr)

            hooks.append((hook_name(c, layer), qkv_hook))

        def record_heads(act: torch.Tensor, hook: Any, layer: int = layer, attn: Any = attn) -> torch.Tensor:
            out = head_outputs(model, layer, act)
            for s in senders:
                if s.kind is ComponentKind.HEAD and s.layer == layer:
                    current[s.index] = out[:, :, s.head]
            return act

        hooks.append((hook_name("z", layer), record_heads))
        if graph.has_mlp:
            mlp_recv = next(r for r in graph.receivers if r.kind is ComponentKind.MLP and r.layer == layer)
            mlp_send = next(s for s in senders if s.kind is ComponentKind.MLP and s.layer == layer)

            def mlp_in(act: torch.Tensor, hook: Any, r: Any = mlp_recv) -> torch.Tensor:
                return act - d_of(by_recv[r.index])

            def mlp_out(act: torch.Tensor, hook: Any, s: Any = mlp_send) -> torch.Tensor:
                current[s.index] = act
                return act

            hooks.append((hook_name("mlp_in", layer), mlp_in))
            hooks.append((hook_name("mlp_out", layer), mlp_out))
    logits_recv = graph.receivers[-1]

    def final(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act - d_of(by_recv[logits_recv.index])

    hooks.append((hook_name("resid_post", n_l - 1), final))
    with mlp_in_hook(model), torch.no_grad():
        logits = model.run_with_hooks(batch.clean, fwd_hooks=hooks)
    return task.metric(logits, batch).detach()


def faithfulness(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, ablated: torch.Tensor, keep: set[tuple[int, int]]
) -> dict[str, float]:
    """Share of the full-vs-empty metric gap that the circuit ``keep`` recovers (see module docstring)."""
    from ingest.edges.methods import all_edges

    per = {name: circuit_metrics(model, graph, task, batch, ablated, edges)
           for name, edges in (("Full", set(all_edges(graph))), ("Empty", set()), ("Circuit", keep))}
    full, empty, kept = (float(per[k].mean()) for k in ("Full", "Empty", "Circuit"))
    gap = full - empty
    if abs(gap) < 1e-12:
        raise ValidationError("the ablation does not change the metric: faithfulness is undefined")
    return {"faithfulness": (kept - empty) / gap, "metricCircuit": kept, "metricFull": full, "metricEmpty": empty,
            **{f"promptMetric{k}": v.double().tolist() for k, v in per.items()}}
