"""Post-LN encoders (TransformerLens's ``HookedEncoder``): the model interface of the edge methods.

A post-LN block normalises the stream *after* each sublayer::

    x_0 = embed(tokens)                       (token + position + segment embeddings, then a norm)
    m_l = x_l + sum_h head_lh(x_l) + b_O      (heads read x_l as it is: no norm before attention)
    n_l = ln1(m_l);  x_{l+1} = ln2(n_l + mlp_l(n_l))

so no later input is a sum of earlier outputs, and the pre-LN definition of an edge (``v`` reads
``u``'s output added to the stream) does not apply. The atlas uses the definition that reduces to
it when the norms are absent: the edge ``u -> v`` is ``u``'s effect on ``v``'s input through the
*wire*, the adds and norms between them, with every other component's output frozen at its clean
value. For each sender the wire is recomputed with only that output changed (a few norms per
layer: cheap), giving every receiver's input change ``d_v(u)``; then

- patching runs the clean model with only ``v``'s input moved by ``d_v(u)`` (a head's q/k/v
  through ``W_Q/W_K/W_V``: affine, so exact; an MLP's through ``W_in`` at ``hook_pre``; the output at
  the last block's ``hook_normalized_resid_post``), many edges per forward by tiling the prompts;
- EAP scores ``g_v . J_v(u) delta_u``: the gradient at ``v``'s input times the wire's Jacobian
  applied to ``u``'s output change (a Jacobian-vector product), the first-order term of patching.

Integrated gradients through the wire are not offered (the registry says so); the metric reads the
encoder's output (:class:`ingest.model.encoder.SimilarityTask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atlas.errors import ValidationError
from atlas.schema import ComponentKind, ModelFamily
from ingest.edges.interface import GradientScores, ModelInterface, Progress
from ingest.model.graph import ModelGraph, Receiver
from ingest.model.outputs import head_outputs
from ingest.model.tasks import PromptBatch

__all__ = ["EncoderInterface", "sender_outputs", "wire_inputs"]


@dataclass(frozen=True)
class _Wired:
    """What patched encoder runs need: per sender, its change at every reading point of the wire."""

    changes: dict[int, list[torch.Tensor]]


class EncoderInterface(ModelInterface):
    """Post-LN encoders: sender outputs after their sublayer, receivers' input changes through the
    wire (see the module docstring)."""

    family = ModelFamily.ENCODER

    def sender_outputs(self, model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
        return sender_outputs(model, graph, tokens)

    def prepare_patching(self, model: Any, graph: ModelGraph, batch: PromptBatch, delta: torch.Tensor) -> _Wired:
        with torch.no_grad():
            clean = sender_outputs(model, graph, batch.clean)
            base = wire_inputs(model, graph, clean)
            changes: dict[int, list[torch.Tensor]] = {}
            for s in graph.senders:
                outs = clean.clone()
                outs[:, :, s.index] += delta[:, :, s.index]
                changes[s.index] = [a - b for a, b in zip(wire_inputs(model, graph, outs), base, strict=True)]
        return _Wired(changes)

    def patched_metrics(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, prepared: Any,
                        part: list[tuple[int, int] | None]) -> np.ndarray:
        n_b, copies = batch.clean.shape[0], len(part)
        adds: dict[str, torch.Tensor] = {}
        for k, edge in enumerate(part):
            if edge is None:
                continue
            s, r = graph.senders[edge[0]], graph.receivers[edge[1]]
            name = _hook_for(model, r)
            d = _moved(model, r, prepared.changes[s.index][_point(r, graph.n_layers)])
            if name not in adds:
                shape = (copies * n_b, *(d.shape[1:] if r.kind is not ComponentKind.HEAD else (d.shape[1], graph.n_heads, d.shape[2])))
                adds[name] = torch.zeros(shape, dtype=d.dtype, device=d.device)
            rows = slice(k * n_b, (k + 1) * n_b)
            if r.kind is ComponentKind.HEAD:
                adds[name][rows, :, r.head] += d
            else:
                adds[name][rows] += d
        tiled = batch.repeat(copies)
        tiled = PromptBatch(tiled.clean, tiled.corrupted, tiled.targets, tiled.mask, {"target": batch.meta["target"].repeat(copies, 1)})
        captured: dict[str, torch.Tensor] = {}

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act + adds[hook.name]

        def grab(act: torch.Tensor, hook: Any) -> torch.Tensor:
            captured["out"] = act
            return act

        with torch.no_grad():
            model.run_with_hooks(tiled.clean, return_type=None, fwd_hooks=[(n, add) for n in adds] + [(_last(graph), grab)])
            return task.metric(captured["out"], tiled).reshape(copies, n_b).double().cpu().numpy()

    def gradient_scores(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, alphas: list[float],
                        progress: Progress | None, interpolate: str, per_prompt: bool) -> GradientScores:
        if alphas != [1.0] or interpolate != "inputs":
            raise ValidationError("encoders are scored with eap or patching: integrated gradients through post-LN wires are not offered")
        if per_prompt:
            raise ValidationError("encoders keep no per-prompt scores")
        with torch.no_grad():
            clean = sender_outputs(model, graph, batch.clean)
            delta = sender_outputs(model, graph, batch.corrupted) - clean
        if progress:
            progress(2)
        store: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act.retain_grad()
            store[hook.name] = act
            return act

        def leaf(act: torch.Tensor, hook: Any) -> torch.Tensor:  # the weights are frozen: gradients start here
            return act.detach().requires_grad_(True)

        names = sorted({_hook_for(model, r) for r in graph.receivers})
        with torch.enable_grad():
            model.run_with_hooks(batch.clean, return_type=None, fwd_hooks=[("hook_full_embed", leaf)] + [(n, keep) for n in names])
            task.metric(store[_last(graph)], batch).mean().backward()
        if progress:
            progress(1)
        score = np.zeros((len(graph.senders), len(graph.receivers)))
        scored = np.zeros(score.shape, dtype=bool)
        for s in graph.senders:
            direction = torch.zeros_like(clean)
            direction[:, :, s.index] = delta[:, :, s.index]
            moved = torch.func.jvp(lambda o: tuple(wire_inputs(model, graph, o)), (clean,), (direction,))[1]
            for r in graph.receivers:
                if s.write_stage >= r.read_stage:
                    continue
                g = store[_hook_for(model, r)].grad
                assert g is not None
                change = _moved(model, r, moved[_point(r, graph.n_layers)])
                if r.kind is ComponentKind.HEAD:
                    g = g[:, :, r.head]
                score[s.index, r.index] = float((g * change).sum())
                scored[s.index, r.index] = True
        return score, scored, None


def sender_outputs(model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
    """Every sender's output ``[b, p, s, d_model]``: the embedding's (after its norm), each head's
    ``z_h W_O[h]`` (the attention bias ``b_O`` is part of the wire) and each MLP's."""
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> torch.Tensor:
        store[hook.name] = act.detach()
        return act

    names = ["hook_full_embed"] + [f"blocks.{l}.attn.hook_z" for l in range(graph.n_layers)] + [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers)]
    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(n, grab) for n in names])
    outs = [store["hook_full_embed"]]
    for l in range(graph.n_layers):
        outs.extend(head_outputs(model, l, store[f"blocks.{l}.attn.hook_z"]).unbind(dim=2))
        outs.append(store[f"blocks.{l}.hook_mlp_out"])
    stacked = torch.stack(outs, dim=2)
    assert stacked.shape[2] == len(graph.senders)
    return stacked


def wire_inputs(model: Any, graph: ModelGraph, outs: torch.Tensor) -> list[torch.Tensor]:
    """Every reading point's input computed from the senders' outputs ``[b, p, s, d]`` through the adds
    and norms alone: ``[x_0, n_0, x_1, n_1, ..., x_L]`` (``x_l`` read by layer ``l``'s heads, ``n_l`` by
    its MLP, ``x_L`` the output)."""
    x = outs[:, :, 0]
    points = []
    s = 1
    for l in range(graph.n_layers):
        block = model.blocks[l]
        points.append(x)
        m = x + outs[:, :, s: s + graph.n_heads].sum(dim=2) + block.attn.b_O
        s += graph.n_heads
        n = block.ln1(m)
        points.append(n)
        x = block.ln2(n + outs[:, :, s])
        s += 1
    points.append(x)
    return points


def _last(graph: ModelGraph) -> str:
    """The hook the metric reads: the last block's normalised output."""
    return f"blocks.{graph.n_layers - 1}.hook_normalized_resid_post"


def _point(receiver: Receiver, n_layers: int) -> int:
    """Which entry of :func:`wire_inputs` a receiver reads."""
    if receiver.kind is ComponentKind.HEAD:
        return 2 * receiver.layer
    if receiver.kind is ComponentKind.MLP:
        return 2 * receiver.layer + 1
    return 2 * n_layers


def _hook_for(model: Any, receiver: Receiver) -> str:
    l = receiver.layer
    if receiver.kind is ComponentKind.HEAD:
        return f"blocks.{l}.attn.hook_{receiver.channel.value}"
    if receiver.kind is ComponentKind.MLP:
        return f"blocks.{l}.mlp.hook_pre"
    return f"blocks.{model.cfg.n_layers - 1}.hook_normalized_resid_post"


def _moved(model: Any, receiver: Receiver, d: torch.Tensor) -> torch.Tensor:
    """What adding ``d`` (``[..., p, d_model]``) to ``receiver``'s input adds at its hook."""
    if receiver.kind is ComponentKind.HEAD:
        attn = model.blocks[receiver.layer].attn
        w = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[receiver.channel.value][receiver.head]
        return d @ w  # q = x W_Q + b_Q: affine, so the move is exact
    if receiver.kind is ComponentKind.MLP:
        return d @ model.blocks[receiver.layer].mlp.W_in
    return d
