"""Pre-LN decoders (TransformerLens's ``HookedTransformer``): the model interface of the edge methods.

Every receiver's input is a sum of earlier senders' outputs read through the receiver's own norm, so
patching the edge ``u -> v`` moves ``v``'s input by ``u``'s output change and nothing else.

Per-head receiver gradients come without TransformerLens's per-head input copies
(``use_split_qkv_input``, 3-5x slower): the gradient at ``hook_q`` (``[b, p, h, d_head]``) is mapped
back through ``W_Q[h]`` to the layer-norm output and through the layer norm's vector-Jacobian
product at the recorded residual, giving ``dm/d(resid copy read by head h's query)``. Sender outputs
of heads are ``hook_z @ W_O[h]``; biases are equal in clean and corrupted runs and drop out.

The gradient methods keep those gradients factored while they sum over integration steps
(:class:`HeadGradSum`, :class:`NeuronGradSum`): the norm's Jacobian splits into a part linear in the
step's gradient (multiplied by ``W`` once, after the last step) and a rank-one correction per step
read off the forward's own activations, so a step costs the forward and backward and little more.
Neuron senders meet neuron receivers in rank one (:class:`_NeuronSenders`), with no product over
``d_model`` per edge. Everything is laid out sender- and receiver-major, so the final contraction
is one matrix product per receiver group with no copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from atlas.errors import ModelError
from atlas.frames import validate_edges
from atlas.schema import Channel, ComponentKind, ModelFamily
from ingest.edges.interface import GradientScores, ModelInterface, Progress
from ingest.model.device import accumulate
from ingest.model.graph import ModelGraph, Receiver
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_outputs
from ingest.model.tasks import PromptBatch, Task

__all__ = ["DecoderInterface", "HeadGradSum", "NeuronGradSum", "sender_outputs", "qkv_input_change", "mlp_in_hook"]


class DecoderInterface(ModelInterface):
    """Pre-LN decoders: sender outputs from ``hook_z``/``hook_mlp_out``/..., receiver gradients
    through the norms' closed-form VJPs, patches as input changes at ``hook_q/k/v``, ``hook_mlp_in``,
    ``hook_pre`` and the last residual."""

    family = ModelFamily.DECODER

    def sender_outputs(self, model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
        return sender_outputs(model, graph, tokens)

    def prepare_patching(self, model: Any, graph: ModelGraph, batch: PromptBatch, delta: torch.Tensor) -> Any:
        return delta  # a pre-LN receiver's input moves by the sender's change itself

    def patched_metrics(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, prepared: Any,
                        part: list[tuple[int, int] | None]) -> np.ndarray:
        with mlp_in_hook(model), torch.no_grad():
            return _patch_chunk(model, graph, task, batch, prepared, part)

    def gradient_scores(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, alphas: list[float],
                        progress: Progress | None, interpolate: str, per_prompt: bool) -> GradientScores:
        return _gradient_scores(model, graph, task, batch, alphas, progress, interpolate, per_prompt)

    def positional_frame(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, alphas: list[float],
                         progress: Progress | None, interpolate: str) -> pd.DataFrame:
        """The position-resolved edge frame (see :func:`_positional_scores`)."""
        return _positional_scores(model, graph, task, batch, alphas, progress, interpolate)


@contextlib.contextmanager
def mlp_in_hook(model: Any) -> Iterator[None]:
    """Temporarily turn on ``hook_mlp_in`` (a cheap clone of the MLP input) and restore it."""
    old = bool(model.cfg.use_hook_mlp_in)
    if not model.cfg.attn_only and not old:
        model.set_use_hook_mlp_in(True)
    try:
        yield
    finally:
        if not model.cfg.attn_only and not old:
            model.set_use_hook_mlp_in(False)


def _positional_in_residual(model: Any) -> bool:
    return model.cfg.positional_embedding_type == "standard"


def sender_outputs(model: Any, graph: ModelGraph, tokens: torch.Tensor,
                   posts: dict[int, torch.Tensor] | None = None) -> Float[torch.Tensor, "batch pos sender d_model"]:
    """Each sender's output into the residual stream, stacked in sender-index order (no grad).
    ``posts``, if given, receives each neuron layer's selected post-activations ``[b, p, k]``."""
    names = {hook_name("embed")}
    if _positional_in_residual(model):
        names.add(hook_name("pos_embed"))
    neurons, features = graph.neurons(), graph.features()
    for layer in range(graph.n_layers):
        names.add(hook_name("z", layer))
        if graph.has_mlp:
            names.add(hook_name("mlp_out", layer))
        if layer in neurons:
            names.add(hook_name("post", layer))
        if layer in features:
            names.add(hook_name("resid_pre" if graph.parallel else "resid_mid", layer))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        outs = [cache[hook_name("embed")] + (cache[hook_name("pos_embed")] if hook_name("pos_embed") in names else 0.0)]
        for layer in range(graph.n_layers):
            outs.extend(head_outputs(model, layer, cache[hook_name("z", layer)]).unbind(dim=2))
            if graph.has_mlp:
                outs.append(cache[hook_name("mlp_out", layer)])
            if layer in neurons:
                outs.extend(_neuron_outputs(model, layer, neurons[layer], cache[hook_name("post", layer)]).unbind(dim=2))
                if posts is not None:
                    posts[layer] = cache[hook_name("post", layer)][:, :, neurons[layer]]
            if layer in features:
                mlp_in = cache[hook_name("resid_pre" if graph.parallel else "resid_mid", layer)]
                acts = graph.saes[layer].encode(_dictionary_site(model, graph, layer, mlp_in, cache[hook_name("mlp_out", layer)]))
                outs.extend(_feature_outputs(graph, layer, acts, cache[hook_name("mlp_out", layer)]).unbind(dim=2))
    out = torch.stack(outs).permute(1, 2, 0, 3)  # sender-major in memory: the scores contract over (b, p, d)
    assert out.shape[2] == len(graph.senders)
    return out


def _neuron_outputs(model: Any, layer: int, neurons: list[int], post: torch.Tensor) -> torch.Tensor:
    """What each listed neuron writes into the residual stream: ``post[..., n] * W_out[n]`` -> [b, p, k, d]."""
    w_out = model.blocks[layer].mlp.W_out[neurons]  # [k, d_model]
    return post[:, :, neurons, None] * w_out[None, None]


def _dictionary_site(model: Any, graph: ModelGraph, layer: int, mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
    """What layer ``layer``'s dictionary reads: ``ln2`` of the MLP input (transcoder) or the MLP output (SAE)."""
    sae = graph.saes[layer]
    return model.blocks[layer].ln2(mlp_in) if sae.is_transcoder else mlp_out


def _feature_outputs(graph: ModelGraph, layer: int, acts: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
    """Each selected feature's write ``f_i * W_dec[i]``, then the error term, which is the MLP's output
    minus those writes and the decoder bias (so it also holds the unselected features): [b, p, k + 1, d]."""
    sae = graph.saes[layer]
    fs = graph.features()[layer]
    writes = acts[:, :, fs, None] * sae.W_dec[fs][None, None]
    error = mlp_out - writes.sum(2) - sae.b_dec
    return torch.cat([writes, error[:, :, None]], dim=2)


def _feature_cotangents(model: Any, graph: ModelGraph, layer: int, mlp_in: torch.Tensor, pre_grad: torch.Tensor) -> torch.Tensor:
    """``dm/dpre_i * dpre_i/d(mlp input)`` for each selected feature ``i``: [b, p, k, d].

    A transcoder's pre-activation is linear in ``ln2(x)`` (``W_enc[:, i]``); an SAE's goes through
    the MLP first, differentiated by autograd on one copy of the MLP input per feature."""
    sae = graph.saes[layer]
    fs = graph.features()[layer]
    block = model.blocks[layer]
    g = pre_grad[:, :, fs]  # [b, p, k]
    if sae.is_transcoder:
        cot = g[..., None] * sae.W_enc[:, fs].T[None, None]
    else:
        b, p, d = mlp_in.shape
        with torch.enable_grad():
            site = block.ln2(mlp_in.detach())[:, :, None, :].expand(b, p, len(fs), d).reshape(b, p * len(fs), d).clone().requires_grad_(True)
            out = block.mlp(site).reshape(b, p, len(fs), -1)
            centred = out - sae.b_dec if sae.apply_b_dec_to_input else out
            pre = torch.einsum("bpkd,dk->bpk", centred, sae.W_enc[:, fs])
            (cot,) = torch.autograd.grad(pre, site, grad_outputs=g)
        cot = cot.reshape(b, p, len(fs), d)
    return _layer_norm_vjp(block.ln2, mlp_in, cot)


def _norm_stats(ln: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor | None] | None:
    """``(scale [..., 1], xhat [..., d], centred, gain or None)`` of one of TransformerLens's norms at
    ``x`` (``ln(x) = xhat * gain + bias``), in the precision sums are accumulated in; ``None`` for
    any other norm (the callers then differentiate it by autograd)."""
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

    if type(ln) not in (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre):
        return None
    norm: Any = ln  # a TransformerLens norm: eps, and w but for the Pre variants
    centre = type(ln) in (LayerNorm, LayerNormPre)
    x = accumulate(x.detach())
    xc = x - x.mean(-1, keepdim=True) if centre else x
    scale = (xc.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    return scale, xc / scale, centre, accumulate(norm.w.detach()) if hasattr(norm, "w") else None


@dataclass
class _FactoredSum:
    """Input gradients of a receiver group summed over integration steps, kept factored: the part
    linear in each step's gradient (``a``, summed) and each step's rank-one correction
    (``along``: the normalised residual and its coefficient). Subclasses say how they are spread
    over ``d_model`` (``dense``)."""

    weight: torch.Tensor  # the projection read through the norm, the gain on its rows
    a: torch.Tensor  # summed over steps
    along: list[tuple[torch.Tensor, torch.Tensor]]  # per step: (xhat [n, d], its coefficient)
    centre: bool
    batch_shape: tuple[int, int]

    def add_(self, other: _FactoredSum) -> _FactoredSum:
        self.a.add_(other.a)
        self.along.extend(other.along)
        return self


@dataclass
class HeadGradSum(_FactoredSum):
    """The q/k/v input gradients of one layer's heads, summed over integration steps and kept
    factored: the dense ``[3 heads, n, d]`` tensor is built once, after the last step.

    For a norm ``ln(x) = xhat * gain + bias`` with scale ``sigma``, the gradient reaching the copy of
    the residual that head ``r`` reads is ``P(W_r' a_r)`` with ``a_r = dq_r / sigma`` (the gradient
    at ``hook_q``/``k``/``v``), ``W_r' = gain * W_r`` and ``P(g) = g - mean(g) - xhat * mean(g * xhat)``
    (no mean for RMS norms). Summed over steps ``t``, the first two terms are linear in ``a`` and
    ``xhat``-free: one matrix product of ``sum_t a_t`` for all steps; the last needs, per step, the
    scalar ``c_t = (xhat_t W_r') . a_t``, which is the head's own q (k, v) less its biases when the
    projection reads the norm's output (:func:`_projected_input`), so no step multiplies by ``W``.
    """

    # weight [3h, d, e]; a [3h, n, e]; along: (xhat [n, d], c [3h, n]) per step

    @property
    def width(self) -> int:
        return int(self.a.shape[0])

    def dense(self) -> torch.Tensor:
        """``[b, p, 3 heads, d]``, a view of a receiver-major ``[3 heads, b, p, d]`` tensor."""
        out = torch.bmm(self.a, self.weight.transpose(1, 2))  # [3h, n, d]
        if self.centre:
            out.sub_(out.mean(-1, keepdim=True))
        d = out.shape[-1]
        for xhat, c in self.along:
            out.addcmul_(c[..., None] / d, xhat, value=-1.0)
        return out.view(out.shape[0], *self.batch_shape, d).permute(1, 2, 0, 3)


@dataclass
class NeuronGradSum(_FactoredSum):
    """The input gradients of one layer's selected neurons, summed over integration steps and kept
    factored (as :class:`HeadGradSum`, with one column of ``W_in`` per neuron instead of a head's
    ``W_Q``): neuron ``n``'s gradient at position ``i`` is ``abar[i, n] W''_n - sum_t xhat_t[i] c_t[i, n] / d``
    with ``a_t = (dm/dpre) / sigma_t``, ``W' = gain * W_in``, ``W''`` its columns less their means
    (none for RMS norms) and ``c_t = a_t * (xhat_t @ W')``. Rank one per position and step, so a
    neuron sender (itself ``dpost * W_out[s]``) meets it without either being spread over ``d_model``
    (:class:`_NeuronSenders`)."""

    # weight [d, k]; a [n, k]; along: (xhat [n, d], c [n, k]) per step

    @property
    def width(self) -> int:
        return int(self.a.shape[1])

    def centred_weight(self) -> torch.Tensor:
        return self.weight - self.weight.mean(0, keepdim=True) if self.centre else self.weight

    def dense(self) -> torch.Tensor:
        """``[b, p, k, d]``, a view of a receiver-major ``[k, b, p, d]`` tensor."""
        out = self.a.T[:, :, None] * self.centred_weight().T[:, None, :]  # [k, n, d]
        d = out.shape[-1]
        for xhat, c in self.along:
            out.addcmul_(c.T[:, :, None] / d, xhat[None], value=-1.0)
        return out.view(out.shape[0], *self.batch_shape, d).permute(1, 2, 0, 3)


def _neuron_input_grads(model: Any, layer: int, ns: list[int], store: dict[str, torch.Tensor]) -> NeuronGradSum | None:
    """One step's :class:`NeuronGradSum` for ``layer``'s neurons ``ns``; ``None`` for a norm other than
    TransformerLens's (the caller then spreads the gradients densely)."""
    block = model.blocks[layer]
    stats = _norm_stats(block.ln2, store[f"mlp{layer}"])
    if stats is None:
        return None
    scale, xhat, centre, gain = stats
    pre_grad = _grad(store[f"pre{layer}"])[:, :, ns]  # [b, p, k]
    b, p, k = pre_grad.shape
    a = (accumulate(pre_grad) / scale).reshape(b * p, k)
    weight = accumulate(block.mlp.W_in[:, ns].detach())
    if gain is not None:
        weight = weight * gain[:, None]
    xhat = xhat.reshape(b * p, -1)
    return NeuronGradSum(weight, a, [(xhat, a * (xhat @ weight))], centre, (b, p))


def _projected_input(model: Any, layer: int, store: dict[str, torch.Tensor], xhat: torch.Tensor,
                     weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``xhat @ W'`` for every head and channel, ``[n, 3h, e]``: what each head's projection makes of
    the normalised residual before the norm's bias and the projection's own.

    Read off the forward's own ``hook_q``/``hook_k``/``hook_v`` (minus ``b_Q`` and ``bias @ W_Q``)
    where each projection reads exactly the norm's output: TransformerLens's standard and
    grouped-query attention, no shortformer position embedding on q and k, float32 or wider.
    Otherwise one matrix product."""
    from transformer_lens.components import Attention, GroupedQueryAttention

    attn = model.blocks[layer].attn
    cfg = model.cfg
    n = xhat.shape[0]
    acts = [store[f"{c}{layer}"].detach() for c in "qkv"]
    if (type(attn) in (Attention, GroupedQueryAttention) and cfg.positional_embedding_type != "shortformer"
            and not cfg.use_split_qkv_input and not getattr(cfg, "use_attn_in", False)
            and not getattr(cfg, "load_in_4bit", False) and all(t.dtype in (torch.float32, torch.float64) for t in acts)):
        out = torch.cat(acts, dim=2).reshape(n, weight.shape[0], -1) - torch.cat([attn.b_Q, attn.b_K, attn.b_V])
        if bias is not None:
            out = out - torch.einsum("d,hde->he", bias, torch.cat([attn.W_Q, attn.W_K, attn.W_V]))
        return out
    return torch.einsum("nd,hde->nhe", xhat, weight)


def _head_input_grads(model: Any, layer: int, store: dict[str, torch.Tensor]) -> torch.Tensor | HeadGradSum:
    """``dm/d(resid copy read by head h's q, k or v)`` for every head of ``layer``, channel-major:
    for TransformerLens's norms a :class:`HeadGradSum` (one step's; no per-head copy of the
    residual, no product with ``W`` until the steps are summed), for any other norm the dense
    ``[b, p, 3 heads, d]`` tensor through :func:`_layer_norm_vjp`."""
    block = model.blocks[layer]
    attn = block.attn
    dqkv = torch.cat([_grad(store[f"{c}{layer}"]) for c in "qkv"], dim=2)  # [b, p, 3h, e]
    w = torch.cat([attn.W_Q, attn.W_K, attn.W_V])  # [3h, d, e]
    x = store[f"x{layer}"]
    stats = _norm_stats(block.ln1, x)
    if stats is None:
        return _layer_norm_vjp(block.ln1, x, torch.einsum("bphe,hde->bphd", dqkv, w))
    scale, xhat, centre, gain = stats
    b, p, r, e = dqkv.shape
    a = accumulate(dqkv) / scale[..., None]  # [b, p, 3h, e]
    weight = accumulate(w.detach())
    if gain is not None:
        weight = weight * gain[None, :, None]
    xhat = xhat.reshape(b * p, -1)
    bias = getattr(block.ln1, "b", None)
    projected = _projected_input(model, layer, store, xhat, weight, None if bias is None else accumulate(bias.detach()))
    c = torch.einsum("nre,nre->rn", projected, a.reshape(b * p, r, e))
    return HeadGradSum(weight, a.reshape(b * p, r, e).transpose(0, 1).contiguous(), [(xhat, c)], centre, (b, p))


def _layer_norm_vjp(ln: torch.nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """``d(ln(x_copy)) / d(x_copy)`` applied to ``cotangent`` for per-head copies of ``x``.

    ``x`` is ``[b, p, d]``, ``cotangent`` ``[b, p, n, d]``: one cotangent per head copy. Closed forms
    for TransformerLens's norms (the statistics of ``x`` are shared by every copy, so they are
    computed once), with ``g = cotangent * w`` (``w = 1`` for the ``Pre`` variants):
      - LayerNorm: ``(g - mean(g) - xhat * mean(g * xhat)) / sigma``, ``xhat = (x - mean x) / sigma``;
      - RMSNorm: ``(g - xhat * mean(g * xhat)) / rms``, ``xhat = x / rms``;
      - identity: ``g``.
    Any other norm falls back to autograd on the expanded copies (tested equal).
    """
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

    x = x.detach()
    if isinstance(ln, torch.nn.Identity):
        return cotangent
    if type(ln) in (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre):
        centre = type(ln) in (LayerNorm, LayerNormPre)
        xc = x - x.mean(-1, keepdim=True) if centre else x
        norm: Any = ln  # a TransformerLens norm: eps, and w but for the Pre variants
        scale = (xc.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        xhat = (xc / scale)[:, :, None, :]
        g = cotangent * norm.w if hasattr(norm, "w") else cotangent
        out = g - xhat * (g * xhat).mean(-1, keepdim=True)
        if centre:
            out = out - g.mean(-1, keepdim=True)
        return out / scale[:, :, None, :]
    return _layer_norm_vjp_autograd(ln, x, cotangent)


def _layer_norm_vjp_autograd(ln: torch.nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """The generic path of :func:`_layer_norm_vjp`: autograd through ``ln`` on per-head copies."""
    with torch.enable_grad():
        xc = x.detach()[:, :, None, :].expand_as(cotangent).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ln(xc), xc, grad_outputs=cotangent)
    return grad


def _receiver_grads(
    model: Any,
    graph: ModelGraph,
    task: Task,
    batch: PromptBatch,
    embed: torch.Tensor,
    groups: list[ReceiverGroup],
    extra_hooks: list[tuple[str, Any]] | None = None,
    capture_senders: bool = False,
    per_query: Callable[[ReceiverGroup, int, torch.Tensor], None] | None = None,
    factored: bool = False,
    posts: dict[int, torch.Tensor] | None = None,
) -> tuple[list[Any], torch.Tensor | None]:
    """One forward+backward from the token embedding ``embed``; gradients at every receiver input.

    Returns, for each of ``groups`` (from :func:`_receiver_groups`) in order, its gradients
    ``[b, p, len(group.receivers), d_model]`` in the group's receiver order, and, with
    ``capture_senders``, the senders' outputs in this pass (as :func:`sender_outputs`).

    ``per_query(group, j, grads)`` is called, for every head group and query position ``j``, with
    the part of the group's input gradients ``[b, p, r, d_model]`` that flows through the heads'
    outputs at ``j`` (:func:`_query_resolved`); the parts sum over ``j`` to the group's gradients.
    With ``factored``, a head group's gradients may come as a :class:`HeadGradSum` and a neuron
    group's as a :class:`NeuronGradSum` (to be summed over steps before ``dense()``). ``posts``
    receives the captured neurons' post-activations, as :func:`sender_outputs` gives them.
    """
    store: dict[str, torch.Tensor] = {}
    embed_leaf = embed.detach().clone().requires_grad_(True)

    def replace_embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return embed_leaf

    def keep(name: str, retain: bool) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            if retain:
                act.retain_grad()
            store[name] = act
            return act

        return fn

    def splice(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """Route the gradient at the MLP output through the dictionary's features as well (a side
        branch: the value is unchanged and nothing upstream receives gradient twice)."""
        sae, fs = graph.saes[layer], features[layer]

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            site = _dictionary_site(model, graph, layer, store[f"mlp{layer}"].detach(), act.detach())
            pre = sae.pre(site).detach().requires_grad_(True)
            store[f"fpre{layer}"] = pre
            f = sae.activation(pre)
            store[f"f{layer}"] = f.detach()
            recon = f[:, :, fs] @ sae.W_dec[fs]
            return act + (recon - recon.detach())

        return fn

    hooks: list[tuple[str, Any]] = [(hook_name("embed"), replace_embed), *(extra_hooks or [])]
    neurons, features = graph.neurons(), graph.features()
    for layer in range(graph.n_layers):
        hooks.append((hook_name("resid_pre", layer), keep(f"x{layer}", False)))
        for c in "qkv":
            hooks.append((hook_name(c, layer), keep(f"{c}{layer}", True)))
        if graph.has_mlp:
            hooks.append((hook_name("mlp_in", layer), keep(f"mlp{layer}", True)))
        if layer in neurons:
            hooks.append((hook_name("pre", layer), keep(f"pre{layer}", True)))
            if capture_senders:
                hooks.append((hook_name("post", layer), keep(f"post{layer}", False)))
    if per_query is not None:
        for layer in range(graph.n_layers):
            hooks.append((hook_name("attn_scores", layer), keep(f"scores{layer}", True)))
            hooks.append((hook_name("z", layer), keep(f"mixed{layer}", True)))
    hooks.append((hook_name("resid_post", graph.n_layers - 1), keep("final", True)))
    for layer in range(graph.n_layers):
        if capture_senders:
            hooks.append((hook_name("z", layer), keep(f"z{layer}", False)))
            if graph.has_mlp:
                hooks.append((hook_name("mlp_out", layer), keep(f"out{layer}", False)))
        if layer in features:  # after keep(): the stored MLP output is the MLP's own
            hooks.append((hook_name("mlp_out", layer), splice(layer)))
    with torch.enable_grad():
        logits = model.run_with_hooks(batch.clean, fwd_hooks=hooks)
        task.metric(logits, batch).mean().backward(retain_graph=per_query is not None)
    senders = None
    if capture_senders:
        with torch.no_grad():
            # resid_pre of layer 0 is the embedding plus the positions in the residual (if any)
            outs = [store["x0"].detach()]
            for layer in range(graph.n_layers):
                outs.extend(head_outputs(model, layer, store[f"z{layer}"].detach()).unbind(dim=2))
                if graph.has_mlp:
                    outs.append(store[f"out{layer}"].detach())
                if layer in neurons:
                    outs.extend(_neuron_outputs(model, layer, neurons[layer], store[f"post{layer}"].detach()).unbind(dim=2))
                    if posts is not None:
                        posts[layer] = store[f"post{layer}"].detach()[:, :, neurons[layer]]
                if layer in features:
                    outs.extend(_feature_outputs(graph, layer, store[f"f{layer}"], store[f"out{layer}"].detach()).unbind(dim=2))
            senders = torch.stack(outs).permute(1, 2, 0, 3)  # as sender_outputs lays them out

    def gradient(group: ReceiverGroup) -> torch.Tensor | HeadGradSum | NeuronGradSum:
        layer = group.layer
        if group.kind is ComponentKind.HEAD:  # q, k, v of every head, channel-major (the group's order)
            heads = _head_input_grads(model, layer, store)
            return heads if factored or not isinstance(heads, HeadGradSum) else heads.dense()
        if group.kind is ComponentKind.MLP:
            return _grad(store[f"mlp{layer}"])[:, :, None, :]
        if group.kind is ComponentKind.NEURON:
            ns = neurons[layer]
            factors = _neuron_input_grads(model, layer, ns, store) if factored else None
            if factors is not None:
                return factors
            cot = _grad(store[f"pre{layer}"])[:, :, ns, None] * model.blocks[layer].mlp.W_in[:, ns].T[None, None]  # [b, p, k, d]
            return _layer_norm_vjp(model.blocks[layer].ln2, store[f"mlp{layer}"], cot)
        if group.kind is ComponentKind.FEATURE:
            return _feature_cotangents(model, graph, layer, store[f"mlp{layer}"].detach(), _grad(store[f"fpre{layer}"]))
        return _grad(store["final"])[:, :, None, :]

    grads = [gradient(group) for group in groups]
    for group, grad in zip(groups, grads, strict=True):
        width = grad.width if isinstance(grad, HeadGradSum | NeuronGradSum) else grad.shape[2]
        assert width == len(group.receivers), (group.kind, group.layer, width)
    if per_query is not None:
        for group in groups:
            if group.kind is ComponentKind.HEAD:
                _query_resolved(model, group, store, per_query)
    return grads, senders


def _grad(t: torch.Tensor) -> torch.Tensor:
    """The gradient a backward pass left on ``t`` (retained: an internal invariant)."""
    assert t.grad is not None
    return t.grad


def _query_resolved(model: Any, group: ReceiverGroup, store: dict[str, torch.Tensor],
                    per_query: Callable[[ReceiverGroup, int, torch.Tensor], None]) -> None:
    """Split a layer's q/k/v input gradients by the query position ``j`` whose output they reach.

    A query at ``i`` reaches only the output at ``i``. A key at ``i`` reaches the output at ``j``
    only through the attention score ``(j, i)``, and a value at ``i`` only through ``z_j``: so the
    gradient at ``hook_k`` (``hook_v``) through ``j`` is the gradient of the scores (of ``z``) with
    every row but ``j`` zeroed, pulled back by autograd through whatever lies between (rotary,
    q/k norms, soft-capping, ALiBi, masks: nothing is re-derived here). The parts sum to the whole.
    """
    layer = group.layer
    attn = model.blocks[layer].attn
    scores, mixed = store[f"scores{layer}"], store[f"mixed{layer}"]
    q_grad = store[f"q{layer}"].grad
    assert scores.grad is not None and mixed.grad is not None and q_grad is not None
    for j in range(scores.shape[-2]):
        row = torch.zeros_like(scores)
        row[:, :, j] = scores.grad[:, :, j]
        (k_grad,) = torch.autograd.grad(scores, store[f"k{layer}"], grad_outputs=row, retain_graph=True)
        at_j = torch.zeros_like(mixed)
        at_j[:, j] = mixed.grad[:, j]
        (v_grad,) = torch.autograd.grad(mixed, store[f"v{layer}"], grad_outputs=at_j, retain_graph=True)
        query = torch.zeros_like(q_grad)
        query[:, j] = q_grad[:, j]
        cot = torch.cat([torch.einsum("bphe,hde->bphd", g, w)
                         for g, w in ((query, attn.W_Q), (k_grad, attn.W_K), (v_grad, attn.W_V))], dim=2)
        per_query(group, j, _layer_norm_vjp(model.blocks[layer].ln1, store[f"x{layer}"], cot))


@dataclass(frozen=True)
class ReceiverGroup:
    """Receivers whose input gradients one einsum produces: the q, k, v inputs of every head of a
    layer (channel-major, then head), one MLP, a layer's selected neurons or features, or the logits."""

    kind: ComponentKind
    layer: int
    receivers: tuple[Receiver, ...]


def _receiver_groups(graph: ModelGraph) -> list[ReceiverGroup]:
    """The receivers of ``graph`` grouped and ordered as :func:`_receiver_grads` returns gradients."""
    out: list[ReceiverGroup] = []
    by_layer: dict[int, list[Receiver]] = {}
    mlps: dict[int, Receiver] = {}
    neurons: dict[int, list[Receiver]] = {}
    features: dict[int, list[Receiver]] = {}
    logits: Receiver | None = None
    for r in graph.receivers:
        if r.kind is ComponentKind.HEAD:
            by_layer.setdefault(r.layer, []).append(r)
        elif r.kind is ComponentKind.MLP:
            mlps[r.layer] = r
        elif r.kind is ComponentKind.NEURON:
            neurons.setdefault(r.layer, []).append(r)  # in graph order, as the gradients stack them
        elif r.kind is ComponentKind.FEATURE:
            features.setdefault(r.layer, []).append(r)
        elif r.kind is ComponentKind.ERROR:
            continue  # scored from the MLP's and the features' columns (see _error_columns)
        else:
            logits = r
    order = {Channel.Q: 0, Channel.K: 1, Channel.V: 2}
    for layer in range(graph.n_layers):
        heads = sorted(by_layer[layer], key=lambda r: (order[r.channel], r.head or 0))
        out.append(ReceiverGroup(ComponentKind.HEAD, layer, tuple(heads)))
        if layer in mlps:
            out.append(ReceiverGroup(ComponentKind.MLP, layer, (mlps[layer],)))
        if layer in neurons:
            out.append(ReceiverGroup(ComponentKind.NEURON, layer, tuple(neurons[layer])))
        if layer in features:
            out.append(ReceiverGroup(ComponentKind.FEATURE, layer, tuple(features[layer])))
    assert logits is not None
    out.append(ReceiverGroup(ComponentKind.LOGITS, graph.n_layers, (logits,)))
    return out



def _gradient_scores(
    model: Any,
    graph: ModelGraph,
    task: Task,
    batch: PromptBatch,
    alphas: list[float],
    progress: Progress | None,
    interpolate: str = "inputs",
    per_prompt: bool = False,
) -> GradientScores:
    """Shared body of EAP (alphas = [1]) and EAP-IG (alphas = 1/k..1, over inputs or activations).

    Per prompt (``per_prompt``): prompt ``i``'s score is ``B * sum_{pos, d} delta_i . g_i`` (``g`` is the
    gradient of the *mean* metric, so ``B g_i`` is prompt ``i``'s own), whose mean over the ``B``
    prompts is the edge's score."""
    corr_posts: dict[int, torch.Tensor] = {}
    clean_posts: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        corr_out = sender_outputs(model, graph, batch.corrupted, corr_posts)
        emb_clean = model.embed(batch.clean)
        emb_corr = model.embed(batch.corrupted)
    if progress:
        progress(1)
    groups = _receiver_groups(graph)
    raw = _raw_sender_acts(model, graph, batch) if interpolate == "activations" else None
    clean_out: torch.Tensor | None = None
    grad_sum: list[Any] = []
    with mlp_in_hook(model):
        for alpha in alphas:
            embed = emb_corr + alpha * (emb_clean - emb_corr)
            extra = _interpolation_hooks(graph, raw, alpha) if raw is not None else None
            # over inputs, alpha = 1 is the clean run itself: take the clean sender outputs from it
            capture = raw is None and alpha == 1.0
            grads, senders = _receiver_grads(model, graph, task, batch, embed, groups, extra, capture_senders=capture,
                                             factored=True, posts=clean_posts)
            if senders is not None:
                clean_out = senders
            # summed in float32 at least (bfloat16 weights give bfloat16 gradients)
            grads = [g if isinstance(g, HeadGradSum | NeuronGradSum) else accumulate(g.detach()) for g in grads]
            if not grad_sum:
                grad_sum = grads
            else:  # in place, keeping each sum's (receiver-major) layout; the first step's tensors are this pass's own
                for s, g in zip(grad_sum, grads, strict=True):
                    s.add_(g)
            if progress:
                progress(1)
    if clean_out is None:
        clean_out = sender_outputs(model, graph, batch.clean, clean_posts)
    if progress:
        progress(1)
    delta = accumulate(corr_out) - accumulate(clean_out)  # [b, p, s, d], in float32 at least
    del corr_out, clean_out
    # score = delta . mean gradient: one matrix product per receiver group on [sender, batch*pos*d],
    # on the model's device; the scores come back to the host once
    delta_flat = delta.permute(2, 0, 1, 3).reshape(delta.shape[2], -1)
    device = delta.device
    score_t = torch.zeros((len(graph.senders), len(graph.receivers)), dtype=torch.float64, device=device)
    scored = np.zeros(score_t.shape, dtype=bool)
    n_b = delta.shape[0]
    prompts_t = torch.zeros((len(graph.senders), n_b, len(graph.receivers)), dtype=torch.float64, device=device) if per_prompt else None
    pairs = None if per_prompt else _NeuronSenders(model, graph, corr_posts, clean_posts, delta_flat)
    for group, total in zip(groups, grad_sum, strict=True):
        recv = group.receivers
        k = graph.n_visible(recv[0].read_stage)
        cols = [r.index for r in recv]
        scored[:k, cols] = True
        if pairs is not None and isinstance(total, NeuronGradSum) and pairs.visible(k):
            pairs.score(total, k, cols, score_t, len(alphas))  # neuron senders in rank one, the rest dense
            continue
        g = total.dense() if isinstance(total, HeadGradSum | NeuronGradSum) else total  # the mean over the steps: divided by their number below
        g_flat = g.permute(2, 0, 1, 3).reshape(g.shape[2], -1)  # a view for receiver-major sums
        score_t[:k, cols] = (delta_flat[:k] @ g_flat.T).double() / len(alphas)
        if prompts_t is not None:
            d_b = delta[:, :, :k].permute(2, 0, 1, 3).reshape(k, n_b, -1)
            g_b = g.permute(2, 0, 1, 3).reshape(len(cols), n_b, -1)
            prompts_t[:k, :, cols] = (n_b * torch.einsum("sbx,rbx->sbr", d_b, g_b)).double() / len(alphas)
    score = score_t.cpu().numpy()
    prompts = prompts_t.cpu().numpy() if prompts_t is not None else None
    _error_columns(graph, score, scored)
    if prompts is not None:
        for b in range(n_b):  # the error columns, prompt by prompt (views: filled in place)
            _error_columns(graph, prompts[:, b, :], scored.copy())
    return score, scored, prompts


class _NeuronSenders:
    """The neuron senders of a graph in rank one (``delta_s = dpost[:, s] W_out[s]``), to meet a
    :class:`NeuronGradSum` without a product over ``d_model`` per edge: for visible neuron senders
    ``S`` and the receivers' sum ``(abar, W'', steps (xhat_t, c_t))``,

        score[S, n] = (W_out[S] . W''_n) * (dpost[:, S]^T abar)[S, n] - sum_t (u_t^T c_t)[S, n] / d,
        u_t = dpost[:, S] * (xhat_t @ W_out[S]^T),

    which is ``sum_{i, d} delta_s[i] g_n[i]`` rearranged (tested equal to the dense product). The
    graph's other senders meet the dense gradients as every receiver does."""

    def __init__(self, model: Any, graph: ModelGraph, corr: dict[int, torch.Tensor], clean: dict[int, torch.Tensor],
                 delta_flat: torch.Tensor) -> None:
        device = delta_flat.device
        neuron = [sd.index for sd in graph.senders if sd.kind is ComponentKind.NEURON]
        self.rows = torch.tensor(neuron, dtype=torch.long, device=device)
        other = [sd.index for sd in graph.senders if sd.kind is not ComponentKind.NEURON]
        self.other = torch.tensor(other, dtype=torch.long, device=device)
        self._other_delta: torch.Tensor | None = None
        self._delta_flat = delta_flat
        if not neuron:
            return
        layers = sorted(corr)
        # the graph's neuron senders are laid out layer by layer in the order of graph.neurons()
        assert [sd.layer for sd in graph.senders if sd.kind is ComponentKind.NEURON] == [l for l in layers for _ in graph.neurons()[l]]
        self.dpost = torch.cat([(accumulate(corr[l]) - accumulate(clean[l])).reshape(-1, corr[l].shape[-1]) for l in layers], dim=1)
        self.w_out = torch.cat([accumulate(model.blocks[l].mlp.W_out[graph.neurons()[l]].detach()) for l in layers])

    def visible(self, k: int) -> bool:
        return bool(len(self.rows)) and bool((self.rows < k).any())

    def score(self, total: NeuronGradSum, k: int, cols: list[int], score_t: torch.Tensor, steps: int) -> None:
        """Fill ``score_t[:k, cols]`` for the neuron receivers ``cols``."""
        m = int((self.rows < k).sum())
        dpost, w_out, rows = self.dpost[:, :m], self.w_out[:m], self.rows[:m]
        d = w_out.shape[1]
        pair = (w_out @ total.centred_weight()) * (dpost.T @ total.a)  # [m, k_n]
        for xhat, c in total.along:
            pair -= (dpost * (xhat @ w_out.T)).T @ c / d
        col = torch.tensor(cols, dtype=torch.long, device=score_t.device)
        score_t[rows[:, None], col[None, :]] = pair.double() / steps
        j = int((self.other < k).sum())
        if j:
            if self._other_delta is None:  # the graph's other senders, gathered once
                self._other_delta = self._delta_flat[self.other]
            g = total.dense()
            g_flat = g.permute(2, 0, 1, 3).reshape(g.shape[2], -1)
            score_t[self.other[:j, None], col[None, :]] = (self._other_delta[:j] @ g_flat.T).double() / steps


def _positional_scores(
    model: Any,
    graph: ModelGraph,
    task: Task,
    batch: PromptBatch,
    alphas: list[float],
    progress: Progress | None,
    interpolate: str = "inputs",
) -> pd.DataFrame:
    """:func:`_gradient_scores` resolved by position: the edge ``u@i -> v@j`` is ``u``'s output at
    position ``i``, read by ``v``'s input at ``i``, as it reaches ``v``'s output at ``j``. Only a
    head's key and value reach another position (``i <= j`` in causal models, any pair in
    bidirectional ones); every other edge has ``i == j``; edges into the logits are kept at scored
    positions only (elsewhere the metric reads nothing). The scores of one ``(u, v, channel)`` sum,
    over its position pairs, to the position-free edge's score."""
    with torch.no_grad():
        corr_out = sender_outputs(model, graph, batch.corrupted)
        clean_out = sender_outputs(model, graph, batch.clean)
        emb_clean = model.embed(batch.clean)
        emb_corr = model.embed(batch.corrupted)
    if progress:
        progress(2)
    delta = accumulate(corr_out) - accumulate(clean_out)  # [b, p, s, d], in float32 at least
    n_pos = delta.shape[1]
    groups = _receiver_groups(graph)
    score = torch.zeros((len(graph.senders), len(graph.receivers), n_pos, n_pos), dtype=torch.float64, device=delta.device)
    scored = np.zeros((len(graph.senders), len(graph.receivers)), dtype=bool)

    def visible(group: ReceiverGroup) -> tuple[int, list[int]]:
        return graph.n_visible(group.receivers[0].read_stage), [r.index for r in group.receivers]

    def per_query(group: ReceiverGroup, j: int, grads: torch.Tensor) -> None:
        k, cols = visible(group)
        score[:k, cols, :, j] += torch.einsum("bisd,bird->sri", delta[:, :, :k], accumulate(grads)).double()

    raw = _raw_sender_acts(model, graph, batch) if interpolate == "activations" else None
    with mlp_in_hook(model):
        for alpha in alphas:
            embed = emb_corr + alpha * (emb_clean - emb_corr)
            extra = _interpolation_hooks(graph, raw, alpha) if raw is not None else None
            grads, _ = _receiver_grads(model, graph, task, batch, embed, groups, extra, per_query=per_query, factored=True)
            for group, grad in zip(groups, grads, strict=True):
                k, cols = visible(group)
                scored[:k, cols] = True
                if group.kind is ComponentKind.HEAD:
                    continue  # per_query gave its every (i, j)
                dense = grad.dense() if isinstance(grad, NeuronGradSum) else accumulate(grad.detach())
                same = torch.einsum("bisd,bird->sri", delta[:, :, :k], dense).double()
                for i in range(n_pos):
                    score[:k, cols, i, i] += same[:, :, i]
            if progress:
                progress(1)
    score /= len(alphas)
    values = score.cpu().numpy()
    for i in range(n_pos):
        for j in range(n_pos):
            _error_columns(graph, values[:, :, i, j], scored)  # (marks the error columns scored, the same each time)
    return _positional_frame(graph, values, scored, batch, causal=model.cfg.attention_dir == "causal")


def _positional_frame(graph: ModelGraph, score: np.ndarray, scored: np.ndarray, batch: PromptBatch, causal: bool) -> pd.DataFrame:
    """The edge frame (with ``srcPos``, ``dstPos``) of a ``[sender, receiver, i, j]`` score array:
    the position pairs each receiver can have (see :func:`_positional_scores`)."""
    n_pos = score.shape[2]
    i, j = np.meshgrid(np.arange(n_pos), np.arange(n_pos), indexing="ij")
    diagonal = i == j
    across = (i <= j) if causal else np.ones_like(diagonal)
    read = batch.mask.any(dim=0).cpu().numpy()
    pairs = np.zeros((len(graph.receivers), n_pos, n_pos), dtype=bool)
    for r in graph.receivers:
        if r.channel in (Channel.K, Channel.V):
            pairs[r.index] = across
        elif r.kind is ComponentKind.LOGITS:
            pairs[r.index] = diagonal & read[:, None]
        else:
            pairs[r.index] = diagonal
    keep = scored[:, :, None, None] & pairs[None]
    bad = keep & ~np.isfinite(score)
    if bad.any():
        s, r, _, _ = np.argwhere(bad)[0]
        raise ModelError(
            f"{int(bad.sum())} position-resolved edge scores are not finite (NaN or Inf), e.g. {graph.senders[s].component_id} -> "
            f"{graph.receivers[r].component_id}: the model's weights or activations hold NaN/Inf on these prompts; nothing was written")
    src, dst, pi, pj = np.nonzero(keep)
    sender_ids = np.array([x.component_id for x in graph.senders], dtype=object)
    receiver_ids = np.array([x.component_id for x in graph.receivers], dtype=object)
    channels = np.array([x.channel.value for x in graph.receivers], dtype=object)
    frame = pd.DataFrame({
        "componentId_pre": sender_ids[src], "componentId_post": receiver_ids[dst], "channel": channels[dst],
        "score": score[src, dst, pi, pj].astype(float), "srcPos": pi.astype(np.int64), "dstPos": pj.astype(np.int64),
    })
    return validate_edges(frame)



def _error_columns(graph: ModelGraph, score: np.ndarray, scored: np.ndarray) -> None:
    """Fill each error receiver's column: the MLP's column minus its features' columns.

    The gradient at the MLP input splits exactly into the path through the features and the path
    through the error term (``err = out - decode(encode(...))``), and scores are linear in it, so the
    error receives what the MLP receives and its features do not.
    """
    by_layer: dict[int, dict[str, list[int]]] = {}
    for r in graph.receivers:
        if r.kind in (ComponentKind.MLP, ComponentKind.FEATURE, ComponentKind.ERROR):
            by_layer.setdefault(r.layer, {}).setdefault(r.kind.value, []).append(r.index)
    for cols in by_layer.values():
        if "error" in cols:
            score[:, cols["error"][0]] = score[:, cols["mlp"][0]] - score[:, cols["feature"]].sum(axis=1)
            scored[:, cols["error"][0]] = scored[:, cols["mlp"][0]]


def _raw_sender_acts(model: Any, graph: ModelGraph, batch: PromptBatch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(clean, corrupted) values at every sender's own hook: ``hook_z`` per layer and ``hook_mlp_out``."""
    names = {hook_name("z", l) for l in range(graph.n_layers)}
    if graph.has_mlp:
        names |= {hook_name("mlp_out", l) for l in range(graph.n_layers)}
    with torch.no_grad():
        _, clean = model.run_with_cache(batch.clean, names_filter=lambda n: n in names)
        _, corr = model.run_with_cache(batch.corrupted, names_filter=lambda n: n in names)
    return {n: (clean[n], corr[n]) for n in names}


def _interpolation_hooks(graph: ModelGraph, raw: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> list[tuple[str, Any]]:
    """Hooks giving every sender the value ``corr + alpha (clean - corr)`` while its gradient flows
    through the computation actually run (straight-through: ``interp + (act - act.detach())``), so
    each receiver's input is exactly linear in alpha."""
    hooks = []
    for name, (clean, corr) in raw.items():
        target = corr + alpha * (clean - corr)

        def fn(act: torch.Tensor, hook: Any, target: torch.Tensor = target) -> torch.Tensor:
            return target + (act - act.detach())

        hooks.append((name, fn))
    return hooks



def qkv_input_change(ln: torch.nn.Module, w: torch.Tensor, resid: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """How each head's q, k or v (at ``hook_q``/``hook_k``/``hook_v``) moves when its copy of the
    residual ``resid`` (``[b, p, d]``) is moved by ``delta`` (``[b, p, h, d]``): ``(ln(x + delta) - ln(x)) W``.

    The difference, not a rebuilt value: whatever a model adds between its layer norm and the
    projection (the shortformer position embedding on q and k, the bias) cancels, so the patch is
    exact for every option and a zero delta changes nothing, bit for bit (``ln`` sees two tensors of
    one shape and layout, so equal rows give equal results).
    """
    x = resid[:, :, None, :].expand_as(delta).contiguous()
    return torch.einsum("bphd,hde->bphe", ln(x + delta) - ln(x), w)


def _patch_chunk(
    model: Any, graph: ModelGraph, task: Task, batch: PromptBatch, delta: torch.Tensor, part: list[tuple[int, int] | None]
) -> np.ndarray:
    """Metric per copy and prompt (``[len(part), batch]``) with each edge of ``part`` patched in its
    own copy of the batch (``None``: a copy left clean)."""
    e = len(part)
    b, p, _, d = delta.shape
    h = graph.n_heads
    dev = delta.device
    tiled = batch.repeat(e)
    head_d: dict[tuple[int, str], torch.Tensor] = {}
    head_mask: dict[tuple[int, str], torch.Tensor] = {}
    add_d: dict[str, torch.Tensor] = {}
    neur_d: dict[int, torch.Tensor] = {}
    neur_col: dict[int, torch.Tensor] = {}
    feat_d: dict[int, torch.Tensor] = {}
    feat_col: dict[int, torch.Tensor] = {}  # the feature index, -2 for the error node, -1 not patched here
    for copy, edge in enumerate(part):
        if edge is None:
            continue
        si, ri = edge
        r = graph.receivers[ri]
        rows = slice(copy * b, (copy + 1) * b)
        if r.kind in (ComponentKind.FEATURE, ComponentKind.ERROR):
            if r.layer not in feat_d:
                feat_d[r.layer] = torch.zeros(e * b, p, d, dtype=delta.dtype, device=dev)
                feat_col[r.layer] = torch.full((e * b,), -1, dtype=torch.long, device=dev)
            feat_d[r.layer][rows] = delta[:, :, si]
            feat_col[r.layer][rows] = -2 if r.feature is None else int(r.feature)
        elif r.kind is ComponentKind.NEURON:
            if r.layer not in neur_d:
                neur_d[r.layer] = torch.zeros(e * b, p, d, dtype=delta.dtype, device=dev)
                neur_col[r.layer] = torch.full((e * b,), -1, dtype=torch.long, device=dev)
            neur_d[r.layer][rows] = delta[:, :, si]
            neur_col[r.layer][rows] = int(r.neuron)  # type: ignore[arg-type]
        elif r.kind is ComponentKind.HEAD:
            key = (r.layer, r.channel.value)
            if key not in head_d:
                head_d[key] = torch.zeros(e * b, p, h, d, dtype=delta.dtype, device=dev)
                head_mask[key] = torch.zeros(e * b, h, dtype=torch.bool, device=dev)
            head_d[key][rows, :, r.head] = delta[:, :, si]
            head_mask[key][rows, r.head] = True
        else:
            name = hook_name("mlp_in", r.layer) if r.kind is ComponentKind.MLP else hook_name("resid_post", graph.n_layers - 1)
            if name not in add_d:
                add_d[name] = torch.zeros(e * b, p, d, dtype=delta.dtype, device=dev)
            add_d[name][rows] += delta[:, :, si]

    resid: dict[int, torch.Tensor] = {}  # layer -> resid_pre in this pass
    mlp_in: dict[int, torch.Tensor] = {}  # layer -> MLP input in this pass

    def keep(into: dict[int, torch.Tensor], layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            into[layer] = act
            return act

        return fn

    def patch_head(layer: int, c: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        block = model.blocks[layer]
        w = getattr(block.attn, f"W_{c.upper()}")

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            change = qkv_input_change(block.ln1, w, resid[layer], head_d[(layer, c)])
            return torch.where(head_mask[(layer, c)][:, None, :, None], act + change, act)

        return fn

    def add(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act + add_d[name]

        return fn

    def patch_neuron(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        block = model.blocks[layer]

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            cols = neur_col[layer]
            rows_ = (cols >= 0).nonzero().squeeze(-1)
            x = mlp_in[layer][rows_]  # [r, p, d]
            change = block.ln2(x + neur_d[layer][rows_]) - block.ln2(x)  # exactly 0 for a zero delta
            w = block.mlp.W_in[:, cols[rows_]].T  # [r, d]
            act = act.clone()
            act[rows_[:, None], torch.arange(act.shape[1], device=act.device)[None, :], cols[rows_][:, None]] += (change * w[:, None, :]).sum(-1)
            return act

        return fn

    def patch_features(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        block, sae = model.blocks[layer], graph.saes[layer]
        selected = graph.features()[layer]

        def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(MLP output, activations of every feature) for MLP input ``x``."""
            out = block.mlp(block.ln2(x))
            return out, sae.encode(block.ln2(x) if sae.is_transcoder else out)

        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            cols = feat_col[layer]
            rows_ = (cols >= 0).nonzero().squeeze(-1)
            errs = (cols == -2).nonzero().squeeze(-1)
            act = act.clone()
            if len(rows_):
                x = mlp_in[layer][rows_]
                (_, f0), (_, f1) = parts(x), parts(x + feat_d[layer][rows_])
                c = cols[rows_]
                change = f1[torch.arange(len(c), device=c.device), :, c] - f0[torch.arange(len(c), device=c.device), :, c]  # [r, p]
                act[rows_] += change[..., None] * sae.W_dec[c][:, None, :]
            if len(errs):
                x = mlp_in[layer][errs]
                (o0, f0), (o1, f1) = parts(x), parts(x + feat_d[layer][errs])
                w = sae.W_dec[selected]
                act[errs] += (o1 - f1[..., selected] @ w) - (o0 - f0[..., selected] @ w)
            return act

        return fn

    hooks: list[tuple[str, Any]] = []
    for layer in sorted({k[0] for k in head_d}):
        hooks.append((hook_name("resid_pre", layer), keep(resid, layer)))
    for layer, c in head_d:
        hooks.append((hook_name(c, layer), patch_head(layer, c)))
    for name in add_d:
        hooks.append((name, add(name)))
    for layer in sorted(set(neur_d) | set(feat_d)):  # after any MLP-input patch at the same hook, so the copy sees its own input
        hooks.append((hook_name("mlp_in", layer), keep(mlp_in, layer)))
    for layer in neur_d:
        hooks.append((hook_name("pre", layer), patch_neuron(layer)))
    for layer in feat_d:
        hooks.append((hook_name("mlp_out", layer), patch_features(layer)))
    logits = model.run_with_hooks(tiled.clean, fwd_hooks=hooks)
    return task.metric(logits, tiled).view(e, b).double().cpu().numpy()


