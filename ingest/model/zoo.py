"""The model zoo: small models with circuits known by construction, trained locally and deterministically.

``induction-2l``: a 2-layer attention-only transformer whose layer-0 head 0 is a *sharp*
previous-token head by construction and whose layer-1 heads learn induction.

Why this recipe (docs/architecture.md, science notes): trained naively, layer 0 stays a broad "recent tokens" head
while induction already works, and fixed-offset repeats let the model skip layer 0 by position.
So, following the clamped-head fallback of Singh et al. (2024):
  1. The positional embedding is fixed: 16 sinusoid pairs with generic frequencies in the last 32
     residual dimensions; token embeddings are kept out of that subspace.
  2. Head L0.H0's query/key read only that subspace, hand-set so that ``q_p . k_p' =
     g * sum_j cos(w_j (p - 1 - p'))``, which peaks at ``p' = p - 1``; they stay frozen. Its OV
     circuit (what it copies) is learned.
  3. Training data: i.i.d. random tokens with one repeated segment of random length (4-24) at random
     offsets, loss on the repeated tokens only (Bietti et al. 2023 style), so no fixed offset helps.
  4. Everything else is learned with Adam (no weight decay) from a fixed seed, on the CPU.
The ground truth is the textbook circuit (Elhage et al. 2021; Olsson et al. 2022): embed -> L0.H0
(q, k positional; v token), L0.H0 -> induction head k (K-composition), embed -> induction head q
and v, induction head -> logits. Which layer-1 head(s) become induction heads is measured after
training (induction score) and recorded next to the weights.

``binding``: attribute-first pairs ``A1 E1 A2 E2 ... Q E2 -> A2`` (docs/architecture.md, science notes: entity-first
prompts are solved by plain induction). The same clamped previous-token head copies A_k onto E_k;
a layer-1 head must find E_k by its token (q, k from the embedding) and read the attribute from its
*value* (V-composition). Slots are random among fillers, so no position helps. Reverse queries
``Q A2 -> E2`` are trained too: they are plain induction (the previous-token head on the *key*) and
serve as the negative control. Verified by patching: swapping L0.H0's output between two entities,
as seen by layer 1 on one channel, must flip forward answers on v only and reverse answers on k only.

``modadd-1l``: one layer with a ReLU MLP on ``a b = -> (a + b) mod 23``; heads move a and b to ``=``
and the MLP computes the sum (lesioning it drops accuracy to chance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atlas.errors import ModelError
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_output

__all__ = ["ZooEntry", "Evaluation", "ZOO", "BINDING", "BIND_Q", "binding_prompts", "binding_swap", "zoo_entry", "load_zoo_model", "load_zoo_checkpoint", "train_zoo_model", "head_role_scores", "SHIPPED_DIR"]

SHIPPED_DIR = Path(__file__).resolve().parent / "zoo_weights"


@dataclass(frozen=True)
class Evaluation:
    """How ``atlas evaluate`` scores a zoo model against its ground truth.

    Attributes:
        task: The evaluation task (default: the model's own task).
        structural_edges: ``(sender, receiver, channel)`` local ids that no token corruption moves
            (e.g. a head whose q/k read position only); left out of the ranking.
        silent_heads: Heads held silent by construction; their edges are exact zeros, left out.
        controls: Control task -> the info key of its ground truth (e.g. the reverse-query control).
    """

    task: str | None = None
    structural_edges: tuple[tuple[str, str, str], ...] = ()
    silent_heads: tuple[str, ...] = ()
    controls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: how to build and train it, its default task and its ground truth."""

    name: str
    description: str
    task: str
    has_mlp: bool
    ground_truth: str
    config: Callable[[], dict[str, Any]]
    train: Callable[..., dict[str, Any]]
    default_steps: int
    evaluation: Evaluation = field(default_factory=Evaluation)
    truth: Callable[[Any], dict[str, Any]] | None = None
    """Measures the trained model's roles and returns ``{"roles": ..., "groundTruth": {"edges": ...}}``."""


# --- induction-2l -----------------------------------------------------------------------------
_IND: dict[str, Any] = {"d_vocab": 64, "n_ctx": 64, "d_model": 64, "n_heads": 4, "d_head": 32, "n_freq": 16, "gain": 2.0}


def _induction_config() -> dict[str, Any]:
    return {
        "n_layers": 2,
        "d_model": _IND["d_model"],
        "n_ctx": _IND["n_ctx"],
        "d_head": _IND["d_head"],
        "n_heads": _IND["n_heads"],
        "d_vocab": _IND["d_vocab"],
        "attn_only": True,
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "act_fn": None,
        "seed": 0,
    }


def _set_prev_token_head(model: Any, n_freq: int = _IND["n_freq"], gain: float = _IND["gain"]) -> dict[str, torch.Tensor]:
    """Hand-set W_pos and L0.H0's QK (see module docstring); returns gradient masks (1 = trainable)."""
    nf, d, c, dh = n_freq, model.cfg.d_model, model.cfg.n_ctx, model.cfg.d_head
    p0 = d - 2 * nf
    gen = torch.Generator().manual_seed(1234)
    omega = torch.sort(torch.rand(nf, generator=gen) * math.pi * 0.9 + 0.05)[0]
    angle = torch.arange(c, dtype=torch.float)[:, None] * omega[None]
    w_pos = torch.zeros(c, d)
    w_pos[:, p0::2] = torch.cos(angle)
    w_pos[:, p0 + 1 :: 2] = torch.sin(angle)
    shift = torch.zeros(2 * nf, 2 * nf)  # maps pos_p to pos_{p-1}, pair by pair
    for j, w in enumerate(omega.tolist()):
        cs, sn = math.cos(w), math.sin(w)
        shift[2 * j : 2 * j + 2, 2 * j : 2 * j + 2] = torch.tensor([[cs, -sn], [sn, cs]])
    scale = math.sqrt(gain * math.sqrt(dh))
    attn = model.blocks[0].attn
    with torch.no_grad():
        model.W_pos.copy_(w_pos)
        for t in (attn.W_Q, attn.W_K):
            t[0].zero_()
        attn.b_Q[0].zero_()
        attn.b_K[0].zero_()
        attn.W_Q[0, p0:, : 2 * nf] = shift * scale
        attn.W_K[0, p0:, : 2 * nf] = torch.eye(2 * nf) * scale
        model.W_E[:, p0:] = 0
    masks = {
        "pos_embed.W_pos": torch.zeros_like(model.W_pos),
        "blocks.0.attn.W_Q": torch.ones_like(attn.W_Q),
        "blocks.0.attn.W_K": torch.ones_like(attn.W_K),
        "blocks.0.attn.b_Q": torch.ones_like(attn.b_Q),
        "blocks.0.attn.b_K": torch.ones_like(attn.b_K),
        "embed.W_E": torch.ones_like(model.W_E),
    }
    for key in ("blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.b_Q", "blocks.0.attn.b_K"):
        masks[key][0] = 0
    masks["embed.W_E"][:, p0:] = 0
    return masks


def induction_batch(gen: torch.Generator, batch: int, n_ctx: int, d_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens with one repeated segment of random length at random offsets; returns (tokens, loss mask).

    ``mask[b, t]`` is true where token ``t + 1`` is the second copy of a segment token (predictable
    by induction), excluding the segment's first token.
    """
    tokens = torch.randint(0, d_vocab, (batch, n_ctx), generator=gen)
    mask = torch.zeros(batch, n_ctx, dtype=torch.bool)
    lengths = torch.randint(4, 25, (batch,), generator=gen).tolist()
    for i, length in enumerate(lengths):
        first = int(torch.randint(0, n_ctx - 2 * length + 1, (1,), generator=gen))
        second = int(torch.randint(first + length, n_ctx - length + 1, (1,), generator=gen))
        tokens[i, second : second + length] = tokens[i, first : first + length]
        mask[i, second : second + length - 1] = True
    return tokens, mask


def _clamp_prev_token_head(model: Any, **kwargs: Any) -> list[torch.Tensor]:
    """Hand-set the previous-token head and freeze it; returns the parameters left to train."""
    masks = _set_prev_token_head(model, **kwargs)
    params = dict(model.named_parameters())
    params["pos_embed.W_pos"].requires_grad_(False)
    for name, mask in masks.items():
        if params[name].requires_grad:
            params[name].register_hook(lambda g, m=mask: g * m)
    return [p for p in params.values() if p.requires_grad]


def _train_induction(model: Any, steps: int, progress: Callable[[int], None] | None = None, seed: int = 0,
                     checkpoint_every: int = 0, on_checkpoint: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    opt = torch.optim.Adam(_clamp_prev_token_head(model), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg

    def loss_fn() -> torch.Tensor:
        tokens, mask = induction_batch(gen, 64, cfg.n_ctx, cfg.d_vocab)
        logp = torch.log_softmax(model(tokens)[:, :-1], dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
        return -(logp * mask[:, :-1]).sum() / mask[:, :-1].sum()

    return _train_loop(model, opt, loss_fn, steps, progress, checkpoint_every, on_checkpoint)


def _train_loop(model: Any, opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor], steps: int,
                progress: Callable[[int], None] | None, checkpoint_every: int,
                on_checkpoint: Callable[[int, Any], None] | None) -> dict[str, Any]:
    """Optimise ``loss_fn`` for ``steps`` steps with checkpoints and progress; freeze the model after."""
    last = float("nan")
    for step in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(loss.detach())
        if progress:
            progress(1)
        if checkpoint_every and on_checkpoint and (step + 1) % checkpoint_every == 0:
            on_checkpoint(step + 1, model)
    for p in model.parameters():
        p.requires_grad_(False)
    return {"finalLoss": last}


def head_role_scores(model: Any, seed: int = 7, n: int = 32, half: int = 16) -> dict[str, dict[str, float]]:
    """Previous-token and induction scores of every head on repeated random tokens.

    prevTokenScore = mean attention from position t to t-1 (t >= 1); induction score = mean
    attention from a token in the second copy to the token after its first occurrence.
    """
    gen = torch.Generator().manual_seed(seed)
    half = min(half, model.cfg.n_ctx // 2)
    first = torch.randint(0, model.cfg.d_vocab, (n, half), generator=gen)
    tokens = torch.cat([first, first], dim=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    out: dict[str, dict[str, float]] = {}
    for layer in range(model.cfg.n_layers):
        pat = cache[hook_name("pattern", layer)]  # [b, h, q, k]
        prev = torch.diagonal(pat, offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
        ind = torch.diagonal(pat, offset=-(half - 1), dim1=-2, dim2=-1)[:, :, 1:].mean(dim=(0, 2))
        for h in range(model.cfg.n_heads):
            out[f"L{layer}.H{h}"] = {"prevTokenScore": float(prev[h]), "inductionScore": float(ind[h])}
    return out


def _induction_truth(model: Any) -> dict[str, Any]:
    roles = head_role_scores(model)
    return {"roles": roles, "groundTruth": _induction_ground_truth(roles)}


def _induction_ground_truth(roles: dict[str, dict[str, float]]) -> dict[str, Any]:
    induction = [k for k, v in roles.items() if k.startswith("L1.") and v["inductionScore"] >= 0.3]
    edges = [
        ["EMBED", "L0.H0", "q"], ["EMBED", "L0.H0", "k"], ["EMBED", "L0.H0", "v"],
    ]
    for head in induction:
        edges += [["L0.H0", head, "k"], ["EMBED", head, "q"], ["EMBED", head, "v"], [head, "LOGITS", "in"]]
    return {"prevTokenHead": "L0.H0", "inductionHeads": induction, "edges": edges}


# --- modadd-1l -------------------------------------------------------------------------------
MODADD_P = 23


def _modadd_config() -> dict[str, Any]:
    return {
        "n_layers": 1, "d_model": 64, "n_ctx": 3, "d_head": 16, "n_heads": 4, "d_mlp": 256,
        "d_vocab": MODADD_P + 1, "act_fn": "relu", "normalization_type": None,
        "positional_embedding_type": "standard", "seed": 0,
    }


def modadd_data(p: int = MODADD_P) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``[a, b, =]`` prompt (``=`` is token p) and its answer ``(a + b) mod p``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def _train_modadd(model: Any, steps: int, progress: Callable[[int], None] | None = None, seed: int = 0,
                  checkpoint_every: int = 0, on_checkpoint: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Full-batch AdamW on all p^2 prompts (the task is to be *solved*, not to generalise)."""
    tokens, answers = modadd_data()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)

    def loss_fn() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(tokens)[:, -1], answers)

    return _train_loop(model, opt, loss_fn, steps, progress, checkpoint_every, on_checkpoint)


@torch.no_grad()
def modadd_accuracy(model: Any, lesion_mlp: bool = False) -> float:
    """Accuracy on all prompts; with ``lesion_mlp`` the MLP's output is zeroed."""
    tokens, answers = modadd_data()
    hooks = [(hook_name("mlp_out", 0), lambda act, hook: torch.zeros_like(act))] if lesion_mlp else []
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
    return float((logits.argmax(-1) == answers).float().mean())


@torch.no_grad()
def _modadd_truth(model: Any) -> dict[str, Any]:
    tokens, _ = modadd_data()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    pat = cache[hook_name("pattern", 0)][:, :, 2, :2]  # from '=' to a and b: [batch, head, 2]
    roles = {f"L0.H{h}": {"attnToA": float(pat[:, h, 0].mean()), "attnToB": float(pat[:, h, 1].mean())} for h in range(model.cfg.n_heads)}
    movers = [h for h, r in roles.items() if r["attnToA"] + r["attnToB"] >= 0.5]
    edges = [["L0.MLP", "LOGITS", "in"]]
    for h in movers:
        edges += [["EMBED", h, "v"], [h, "L0.MLP", "in"]]
    return {"roles": roles, "accuracy": modadd_accuracy(model), "accuracyMlpLesioned": modadd_accuracy(model, lesion_mlp=True),
            "groundTruth": {"movers": movers, "edges": edges}}


# --- binding --------------------------------------------------------------------------------
# Vocabulary: entities, attributes, filler tokens, then the query marker Q. Prompts are
# attribute-first pairs "A_k E_k" at random slots among fillers, then "Q x": a forward query
# (x = entity E_k -> A_k) or a reverse query (x = attribute A_k -> E_k).
BINDING: dict[str, Any] = {"n_ent": 16, "n_attr": 16, "n_fill": 16, "body": 16, "min_pairs": 2, "max_pairs": 4,
         "d_model": 96, "n_heads": 4, "d_head": 32, "n_freq": 16, "gain": 2.0}
BIND_Q = BINDING["n_ent"] + BINDING["n_attr"] + BINDING["n_fill"]


def _binding_config() -> dict[str, Any]:
    return {
        "n_layers": 2, "d_model": BINDING["d_model"], "n_ctx": BINDING["body"] + 2, "d_head": BINDING["d_head"],
        "n_heads": BINDING["n_heads"], "d_vocab": BIND_Q + 1, "attn_only": True, "normalization_type": None,
        "positional_embedding_type": "standard", "act_fn": None, "seed": 0,
    }


@dataclass(frozen=True)
class BindingPrompts:
    """A batch of binding prompts with where everything sits.

    ``tokens [b, n_ctx]``; ``answer [b]``; ``forward [b]`` (entity query) ; ``pairs [b, max_pairs, 2]``
    the (attribute, entity) *positions* of each pair (-1 where the prompt has fewer pairs);
    ``queried [b]`` which pair is asked about.
    """

    tokens: torch.Tensor
    answer: torch.Tensor
    forward: torch.Tensor
    pairs: torch.Tensor
    queried: torch.Tensor


def binding_prompts(gen: torch.Generator, batch: int, forward: float | bool = 0.5, n_pairs: int | None = None) -> BindingPrompts:
    """Random attribute-first binding prompts (see ``BINDING``); ``forward`` = share of entity queries."""
    ne, na, nf, body, mp = BINDING["n_ent"], BINDING["n_attr"], BINDING["n_fill"], BINDING["body"], BINDING["max_pairs"]
    tokens = torch.zeros(batch, body + 2, dtype=torch.long)
    answer = torch.zeros(batch, dtype=torch.long)
    pairs = torch.full((batch, mp, 2), -1, dtype=torch.long)
    queried = torch.zeros(batch, dtype=torch.long)
    p_fwd = float(forward)
    is_fwd = torch.rand(batch, generator=gen) < p_fwd
    counts = torch.randint(BINDING["min_pairs"], mp + 1, (batch,), generator=gen) if n_pairs is None else torch.full((batch,), n_pairs)
    for i in range(batch):
        k = int(counts[i])
        ents = torch.randperm(ne, generator=gen)[:k]
        attrs = ne + torch.randperm(na, generator=gen)[:k]
        n_filler = body - 2 * k
        fillers = ne + na + torch.randint(0, nf, (n_filler,), generator=gen)
        order = torch.randperm(k + n_filler, generator=gen).tolist()  # items < k are pairs
        pos, f = 0, 0
        for item in order:
            if item < k:
                tokens[i, pos], tokens[i, pos + 1] = attrs[item], ents[item]
                pairs[i, item] = torch.tensor([pos, pos + 1])
                pos += 2
            else:
                tokens[i, pos] = fillers[f]
                f += 1
                pos += 1
        q = int(torch.randint(0, k, (1,), generator=gen))
        queried[i] = q
        tokens[i, body] = BIND_Q
        tokens[i, body + 1] = ents[q] if is_fwd[i] else attrs[q]
        answer[i] = attrs[q] if is_fwd[i] else ents[q]
    return BindingPrompts(tokens, answer, is_fwd, pairs, queried)


def _train_binding(model: Any, steps: int, progress: Callable[[int], None] | None = None, seed: int = 0,
                   checkpoint_every: int = 0, on_checkpoint: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Adam on random binding prompts (both query directions), loss on the answer only.

    Layer 0 is the clamped previous-token head alone: the other layer-0 heads' outputs are held at
    zero. Left to learn, they attend two tokens back and open a second, induction-based route to the
    attribute (a layer-1 head attends to the token *after* the queried entity, found by its
    previous-token key, and reads the attribute from a t-2 head), which makes the ground truth
    ambiguous: swapping L0.H0's output on the value channel then flipped only 26% of answers.
    """
    trainable = _clamp_prev_token_head(model, n_freq=BINDING["n_freq"], gain=BINDING["gain"])
    w_o = model.blocks[0].attn.W_O
    with torch.no_grad():
        w_o[1:].zero_()
    keep = torch.zeros_like(w_o)
    keep[0] = 1
    w_o.register_hook(lambda g: g * keep)
    opt = torch.optim.Adam(trainable, lr=3e-3)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn() -> torch.Tensor:
        prompts = binding_prompts(gen, 128)
        return torch.nn.functional.cross_entropy(model(prompts.tokens)[:, -1], prompts.answer)

    return _train_loop(model, opt, loss_fn, steps, progress, checkpoint_every, on_checkpoint)


@torch.no_grad()
def binding_swap(model: Any, prompts: BindingPrompts, channel: str, other: torch.Tensor) -> torch.Tensor:
    """Swap L0.H0's output between the queried pair's entity and pair ``other``'s entity, as read by
    every layer-1 head on ``channel`` (q, k or v) only; returns the new argmax answer ``[b]``.

    The causal check of docs/architecture.md, science notes: if the binding is carried on ``channel``, the answer
    flips to the other pair's (attribute for a forward query, entity for a reverse one).
    """
    b = torch.arange(len(prompts.tokens))
    pos_q = prompts.pairs[b, prompts.queried, 1]
    pos_o = prompts.pairs[b, other, 1]
    _, cache = model.run_with_cache(prompts.tokens, names_filter=lambda n: n == hook_name("z", 0))
    out = head_output(model, 0, 0, cache[hook_name("z", 0)])
    delta = torch.zeros_like(out)
    delta[b, pos_q] = out[b, pos_o] - out[b, pos_q]
    delta[b, pos_o] = out[b, pos_q] - out[b, pos_o]

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act + delta[:, :, None, :]

    use_split = model.cfg.use_split_qkv_input
    model.set_use_split_qkv_input(True)
    try:
        logits = model.run_with_hooks(prompts.tokens, fwd_hooks=[(hook_name(f"{channel}_input", 1), hook)])
    finally:
        model.set_use_split_qkv_input(use_split)
    return logits[:, -1].argmax(-1)


@torch.no_grad()
def _binding_truth(model: Any) -> dict[str, Any]:
    """Roles measured on held-out prompts: accuracy per direction, each L1 head's attention from the
    query to the queried entity, and the swap test on each channel for both directions."""
    gen = torch.Generator().manual_seed(2024)
    report: dict[str, Any] = {"accuracy": {}, "swapFlipRate": {}}
    roles: dict[str, dict[str, float]] = {f"L{l}.H{h}": {} for l in range(2) for h in range(model.cfg.n_heads)}
    for direction, fwd in (("forward", True), ("reverse", False)):
        prompts = binding_prompts(gen, 512, forward=fwd)
        _, cache = model.run_with_cache(prompts.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
        b = torch.arange(len(prompts.tokens))
        report["accuracy"][direction] = float((model(prompts.tokens)[:, -1].argmax(-1) == prompts.answer).float().mean())
        ent_pos = prompts.pairs[b, prompts.queried, 1]
        pat = cache[hook_name("pattern", 1)][b, :, -1, :]  # [b, head, key]
        for h in range(model.cfg.n_heads):
            roles[f"L1.H{h}"][f"{direction}AttnToEntity"] = float(pat[b, h, ent_pos].mean())
        n_pairs = (prompts.pairs[:, :, 0] >= 0).sum(1)
        other = (prompts.queried + 1 + (torch.rand(len(b), generator=gen) * (n_pairs - 1)).long()) % n_pairs
        flip_to = torch.where(prompts.forward, prompts.tokens[b, prompts.pairs[b, other, 0]], prompts.tokens[b, prompts.pairs[b, other, 1]])
        report["swapFlipRate"][direction] = {ch: float((binding_swap(model, prompts, ch, other) == flip_to).float().mean()) for ch in ("q", "k", "v")}
    l0 = model.run_with_cache(binding_prompts(gen, 256).tokens, names_filter=lambda n: n == hook_name("pattern", 0))[1]
    prev = torch.diagonal(l0[hook_name("pattern", 0)], offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
    for h in range(model.cfg.n_heads):
        roles[f"L0.H{h}"]["prevTokenScore"] = float(prev[h])
    binders = [k for k, v in roles.items() if v.get("forwardAttnToEntity", 0.0) >= 0.3]
    inductors = [k for k, v in roles.items() if v.get("reverseAttnToEntity", 0.0) >= 0.3]
    mover = [["EMBED", "L0.H0", "q"], ["EMBED", "L0.H0", "k"], ["EMBED", "L0.H0", "v"]]
    edges, reverse = list(mover), list(mover)
    for head in binders:  # V-composition: the attribute arrives on the value channel
        edges += [["L0.H0", head, "v"], ["EMBED", head, "q"], ["EMBED", head, "k"], [head, "LOGITS", "in"]]
    for head in inductors:  # K-composition: plain induction
        reverse += [["L0.H0", head, "k"], ["EMBED", head, "q"], ["EMBED", head, "v"], [head, "LOGITS", "in"]]
    return {"roles": roles, **report, "groundTruth": {"moverHead": "L0.H0", "bindingHeads": binders, "edges": edges},
            "reverseGroundTruth": {"inductionHeads": inductors, "edges": reverse}}


ZOO: dict[str, ZooEntry] = {
    "induction-2l": ZooEntry(
        name="induction-2l",
        description="2-layer attention-only; L0.H0 a sharp previous-token head by construction, L1 learns induction",
        task="induction",
        has_mlp=False,
        ground_truth="embed->L0.H0 (q,k positional; v token); L0.H0->induction head k; embed->induction head q,v; induction head->logits",
        config=_induction_config,
        train=_train_induction,
        default_steps=800,
        # Evaluation reaches both sides of the circuit: half the prompts corrupt the keys/values,
        # half the queries. L0.H0's q/k read position only, which no token corruption moves.
        evaluation=Evaluation(task="induction-mixed", structural_edges=(("EMBED", "L0.H0", "q"), ("EMBED", "L0.H0", "k"))),
        truth=_induction_truth,
    ),
    "binding": ZooEntry(
        name="binding",
        description="2-layer attention-only; attribute-first pairs 'A1 E1 A2 E2 ... Q E2 -> A2' at random slots; "
                    "L0 = one clamped previous-token head; a layer-1 head binds by V-composition",
        task="binding",
        has_mlp=False,
        ground_truth="embed->L0.H0 (v: attribute); L0.H0->binding head v; embed->binding head q,k (entity match); "
                     "binding head->logits. Control: reverse queries (Q A2 -> E2) go by K-composition (induction)",
        config=_binding_config,
        train=_train_binding,
        default_steps=800,
        # L0.H0 reads position only; the other layer-0 heads are held silent by construction.
        evaluation=Evaluation(structural_edges=(("EMBED", "L0.H0", "q"), ("EMBED", "L0.H0", "k")),
                              silent_heads=("L0.H1", "L0.H2", "L0.H3"), controls={"binding-reverse": "reverseGroundTruth"}),
        truth=_binding_truth,
    ),
    "modadd-1l": ZooEntry(
        name="modadd-1l",
        description="1 layer with a ReLU MLP; 'a b =' -> (a + b) mod 23; heads move a and b, the MLP computes the sum",
        task="modadd",
        has_mlp=True,
        ground_truth="embed -> movers (v: a, b); movers -> MLP; MLP -> logits; the MLP is necessary (lesion: chance)",
        config=_modadd_config,
        train=_train_modadd,
        default_steps=1500,
        truth=_modadd_truth,
    ),
}


def zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ModelError(f"unknown zoo model {name!r}: choose one of {sorted(ZOO)}")
    return ZOO[name]


def _build(entry: ZooEntry) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    return HookedTransformer(HookedTransformerConfig(**entry.config()))


def train_zoo_model(name: str, out_dir: Path, steps: int | None = None, progress: Callable[[int], None] | None = None,
                    checkpoint_every: int = 0) -> dict[str, Any]:
    """Train a zoo model deterministically and save ``config.json``, ``model.pt`` and ``info.json`` in ``out_dir``.

    With ``checkpoint_every``, intermediate weights go to ``out_dir/checkpoints/step-N.pt``.
    Returns the info (training figures, head roles, ground truth).
    """
    entry = zoo_entry(name)
    steps = entry.default_steps if steps is None else steps
    out_dir.mkdir(parents=True, exist_ok=True)

    def save_ckpt(step: int, m: Any) -> None:
        (out_dir / "checkpoints").mkdir(exist_ok=True)
        torch.save(m.state_dict(), out_dir / "checkpoints" / f"step-{step}.pt")

    # Bitwise reproducible on a given machine: the embedding's scatter-add backward is otherwise
    # accumulated in thread order (measured: 1e-8 differences after 20 steps on 2 threads).
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(0)
        model = _build(entry)
        figures = entry.train(model, steps, progress, checkpoint_every=checkpoint_every, on_checkpoint=save_ckpt)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    assert entry.truth is not None
    info = {"name": name, "steps": steps, **figures, **entry.truth(model)}
    (out_dir / "config.json").write_text(json.dumps(entry.config(), indent=1))
    torch.save(model.state_dict(), out_dir / "model.pt")
    (out_dir / "info.json").write_text(json.dumps(info, indent=1))
    return info


def checkpoint_steps(name: str, home: Path) -> list[int]:
    """The training steps of ``name`` saved in ``home`` by ``atlas zoo train NAME --checkpoint-every N``."""
    folder = home / "zoo" / zoo_entry(name).name / "checkpoints"
    steps = []
    for path in folder.glob("step-*.pt") if folder.exists() else []:
        tail = path.stem.removeprefix("step-")
        if tail.isdigit():
            steps.append(int(tail))
    return sorted(steps)


def load_zoo_checkpoint(name: str, step: int, home: Path) -> tuple[Any, dict[str, Any]]:
    """A training checkpoint saved by ``atlas zoo train NAME --checkpoint-every N``; step 0 is the
    model as initialised before training (the same seed; no weights need saving), a natural null."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    entry = zoo_entry(name)
    if step == 0:
        model = _build(entry)
        model.eval()
        return model, {"checkpointStep": 0, "untrained": True}
    folder = home / "zoo" / entry.name
    path = folder / "checkpoints" / f"step-{step}.pt"
    if not path.exists():
        have = sorted(p.stem for p in (folder / "checkpoints").glob("step-*.pt")) if (folder / "checkpoints").exists() else []
        raise ModelError(f"no checkpoint step {step} of {name} in {folder}; have: {', '.join(have) or 'none'} "
                         f"(make them with 'atlas zoo train {name} --checkpoint-every N')")
    model = HookedTransformer(HookedTransformerConfig(**entry.config()))
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    return model, {"checkpointStep": step}


def load_zoo_model(name: str, home: Path, progress_factory: Callable[[int, str], Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a zoo model: the atlas home's cache, else the weights shipped in the package, else train now."""

    entry = zoo_entry(name)
    for folder in (home / "zoo" / name, SHIPPED_DIR / name):
        if (folder / "model.pt").exists() and (folder / "config.json").exists():
            break
    else:
        folder = home / "zoo" / name
        bar = progress_factory(entry.default_steps, f"training {name}") if progress_factory else None
        train_zoo_model(name, folder, progress=bar.update if bar else None)
        if bar:
            bar.close()
    model = load_weights_folder(folder)
    info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").exists() else {}
    return model, info


def load_weights_folder(folder: Path) -> Any:
    """The model a zoo folder holds (``config.json`` + ``model.pt``), in eval mode."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**json.loads((folder / "config.json").read_text())))
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    model.eval()
    return model
