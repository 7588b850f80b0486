"""Receptive fields and roles: what each head and MLP responds to, and on which prompts.

Stimuli: the generic probe ``atlas-probe-v1`` (``n`` sequences of ``half`` uniform random tokens
repeated once, ``A B C ... A B C``, seeded), or, for a model whose context is too short for it
(``n_ctx < 2 * MIN_PROBE_HALF``: ``modadd-1l``'s 3 tokens would give ``x x``, where every head scores
0.5 on every role) or when asked, the prompts of the model's own task. For every head:
  - ``prevTokenScore``: mean attention from position t to t-1 (t >= 1), next to ``prevTokenChance``,
    what uniform attention over the visible positions would give (0.42 on 3-token prompts, 0.10 on
    the generic probe's 32): a previous-token head is one well above its chance;
  - ``duplicateTokenScore``: mean, over positions whose token occurred before, of the attention to
    those earlier occurrences;
  - ``inductionScore``: the same, to the tokens right after the earlier occurrences.
  On the generic probe the last two are the classic offsets (the one earlier occurrence sits
  ``half`` back); on prompts where no token repeats they are undefined (NaN), not a guess.
For every head and MLP, its receptive field: the current tokens after which its output (L2 norm of
what it writes into the residual stream) is largest on average (``topTokens``, ``topTokenActs``), the
highest-activating contexts (``topContexts``, five tokens ending at the position) and the prompts
that drive it most (``topPrompts``: whole prompts with their largest activation). Tokens are shown
as the model's tokenizer writes them, else as ``#id``. :func:`prompt_activations` gives the whole
component-by-prompt table.
For every MLP neuron (post-activation value): sparse-coding statistics (``frequency``: share of
positions where it is active, i.e. > 0; ``meanAct``; ``maxAct``) and the same receptive field.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from atlas.ids import component_id
from atlas.schema import ComponentKind
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_outputs

__all__ = ["PROBE_NAME", "MIN_PROBE_HALF", "compute_probes", "compute_neuron_stats", "sparse_coding_rows", "probe_tokens",
           "prompt_activations", "generic_probe_fits", "prompt_text"]

PROBE_NAME = "atlas-probe-v1"
MIN_PROBE_HALF = 4
"""The generic probe needs at least this many tokens before the repeat (``n_ctx >= 8``)."""


def generic_probe_fits(model: Any) -> bool:
    """Whether the model's context holds the generic probe (``2 * MIN_PROBE_HALF`` tokens)."""
    return int(model.cfg.n_ctx) // 2 >= MIN_PROBE_HALF


def probe_tokens(model: Any, n: int = 32, half: int = 16, seed: int = 7) -> torch.Tensor:
    """The probe set: ``[n, 2 * half]`` repeated random tokens."""
    half = min(half, model.cfg.n_ctx // 2)
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(0, model.cfg.d_vocab, (n, half), generator=gen)
    return torch.cat([first, first], dim=1)


def _token_text(model: Any, token: int) -> str:
    if getattr(model, "tokenizer", None) is not None:
        try:
            return str(model.to_string(torch.tensor([token])))
        except Exception:  # tokenizers differ; an id is always a faithful label
            pass
    return f"#{token}"


def _receptive_field(model: Any, tokens: torch.Tensor, act: torch.Tensor, k: int) -> dict[str, Any]:
    """Top current tokens by mean activation and top contexts, for ``act`` of shape [n, pos]."""
    flat_tok = tokens.reshape(-1)
    flat_act = act.reshape(-1).double()
    sums = torch.zeros(model.cfg.d_vocab, dtype=torch.float64).index_add_(0, flat_tok, flat_act)
    counts = torch.zeros(model.cfg.d_vocab, dtype=torch.float64).index_add_(0, flat_tok, torch.ones_like(flat_act))
    mean = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("-inf")))
    top = torch.topk(mean, min(k, int((counts > 0).sum()))).indices.tolist()
    ctx_idx = torch.topk(flat_act, min(k, flat_act.numel())).indices.tolist()
    pos = tokens.shape[1]
    contexts = []
    for i in ctx_idx:
        b, p = divmod(i, pos)
        window = tokens[b, max(0, p - 4) : p + 1].tolist()
        contexts.append(" ".join(_token_text(model, t) for t in window))
    return {
        "topTokens": [_token_text(model, t) for t in top],
        "topTokenActs": [round(float(mean[t]), 6) for t in top],
        "topContexts": contexts,
    }


@torch.no_grad()
def compute_neuron_stats(model: Any, model_id: str, n: int = 32, half: int = 16, seed: int = 7, k: int = 5,
                         tokens: torch.Tensor | None = None, probe: str | None = None) -> pd.DataFrame:
    """A node frame of every MLP neuron with sparse-coding statistics and its receptive field (on the
    generic probe, or on ``tokens`` described by ``probe``)."""
    cfg = model.cfg
    if cfg.attn_only:
        return pd.DataFrame(columns=["componentId", "kind", "modelId", "layer", "head"])
    if tokens is None:
        tokens = probe_tokens(model, n, half, seed)
        probe = f"{PROBE_NAME} (repeated random tokens, n={n}, half={tokens.shape[1] // 2}, seed={seed})"
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("mlp.hook_post"))
    probe = probe or "given tokens"
    rows = []
    for layer in range(cfg.n_layers):
        act = cache[hook_name("post", layer)]
        units = [{"componentId": component_id(model_id, ComponentKind.NEURON, layer=layer, neuron=neuron), "kind": "neuron",
                  "modelId": model_id, "layer": layer, "head": None, "neuron": neuron} for neuron in range(cfg.d_mlp)]
        rows += sparse_coding_rows(model, tokens, act, units, probe, k)
    return pd.DataFrame(rows)


@torch.no_grad()
def sparse_coding_rows(model: Any, tokens: torch.Tensor, act: torch.Tensor, units: list[dict[str, Any]], probe: str,
                       k: int = 5) -> list[dict[str, Any]]:
    """``units`` (one node row per unit, in the order of ``act``'s last axis) with sparse-coding
    statistics on ``tokens`` added: activation frequency (share of positions where the unit is
    positive), mean and max activation, the ``k`` tokens with the highest mean activation and the
    ``k`` top-activating contexts (up to 4 tokens before, ending at the activating one)."""
    flat_tok = tokens.reshape(-1)
    d_vocab = int(model.cfg.d_vocab)
    act = act.reshape(-1, act.shape[-1]).double()  # [stimuli, units]
    counts = torch.zeros(d_vocab, dtype=torch.float64).index_add_(0, flat_tok, torch.ones(flat_tok.numel(), dtype=torch.float64))
    seen = counts > 0
    freq = (act > 0).double().mean(0)
    per_token = torch.zeros(d_vocab, act.shape[1], dtype=torch.float64).index_add_(0, flat_tok, act) / counts.clamp(min=1)[:, None]
    per_token[~seen] = float("-inf")
    top_tok = torch.topk(per_token, min(k, int(seen.sum())), dim=0)
    top_ctx = torch.topk(act, min(k, act.shape[0]), dim=0).indices  # [k, units]
    pos = tokens.shape[1]
    out = []
    for u, unit in enumerate(units):
        contexts = []
        for i in top_ctx[:, u].tolist():
            b, p = divmod(i, pos)
            contexts.append(" ".join(_token_text(model, t) for t in tokens[b, max(0, p - 4) : p + 1].tolist()))
        out.append({
            **unit, "frequency": float(freq[u]), "meanAct": float(act[:, u].mean()), "maxAct": float(act[:, u].max()),
            "topTokens": [_token_text(model, t) for t in top_tok.indices[:, u].tolist()],
            "topTokenActs": [round(float(v), 6) for v in top_tok.values[:, u].tolist()],
            "topContexts": contexts, "probe": probe,
        })
    return out


def _earlier_occurrence_scores(pattern: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(duplicate, induction) score per head: attention to earlier occurrences of the current token,
    and to the tokens right after them, averaged over positions that have one (NaN if none does)."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, q, k]
    earlier = torch.tril(same, diagonal=-1)
    has = earlier.any(-1)  # [b, q]
    after = torch.zeros_like(earlier)
    after[:, :, 1:] = earlier[:, :, :-1]  # k + 1 where k is an earlier occurrence...
    after &= torch.tril(torch.ones_like(earlier), diagonal=-1)  # ...still before the query
    n = has.sum()
    if int(n) == 0:
        nan = torch.full((pattern.shape[1],), float("nan"))
        return nan, nan
    dup = (pattern * earlier[:, None]).sum(-1)  # [b, h, q]
    ind = (pattern * after[:, None]).sum(-1)
    mask = has[:, None, :].to(pattern.dtype)
    return (dup * mask).sum(dim=(0, 2)) / n, (ind * mask).sum(dim=(0, 2)) / n


def prompt_text(model: Any, tokens: torch.Tensor) -> str:
    """A prompt as the model's tokenizer writes it, else its tokens as ``#id``."""
    if getattr(model, "tokenizer", None) is not None:
        try:
            return str(model.to_string(tokens))
        except Exception:  # an id list is always a faithful label
            pass
    return " ".join(_token_text(model, t) for t in tokens.tolist())


@torch.no_grad()
def _component_acts(model: Any, model_id: str, tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    """Each head's and MLP's output norm ``[n, pos]`` on ``tokens``, and the run's cache."""
    cfg = model.cfg
    names = lambda name: name.endswith(("hook_pattern", "hook_z", "hook_mlp_out"))  # noqa: E731
    _, cache = model.run_with_cache(tokens, names_filter=names)
    acts: dict[str, torch.Tensor] = {}
    for layer in range(cfg.n_layers):
        out = head_outputs(model, layer, cache[hook_name("z", layer)]).norm(dim=-1)
        for h in range(cfg.n_heads):
            acts[component_id(model_id, ComponentKind.HEAD, layer=layer, head=h)] = out[:, :, h]
        if not cfg.attn_only:
            acts[component_id(model_id, ComponentKind.MLP, layer=layer)] = cache[hook_name("mlp_out", layer)].norm(dim=-1)
    return acts, cache


def _top_prompts(model: Any, tokens: torch.Tensor, act: torch.Tensor, k: int) -> list[str]:
    peak = act.max(dim=1).values
    order = torch.topk(peak, min(k, len(peak))).indices.tolist()
    return [f"{prompt_text(model, tokens[i])} ({float(peak[i]):.3g})" for i in order]


@torch.no_grad()
def prompt_activations(model: Any, model_id: str, tokens: torch.Tensor) -> pd.DataFrame:
    """Every head's and MLP's activation (output norm) on every prompt: ``componentId, prompt, text,
    maxAct, maxPos, meanAct`` (which prompts drive a component, and where in them)."""
    acts, _ = _component_acts(model, model_id, tokens)
    texts = [prompt_text(model, t) for t in tokens]
    rows = []
    for cid, act in acts.items():
        peak = act.max(dim=1)
        for i in range(act.shape[0]):
            rows.append({"componentId": cid, "prompt": i, "text": texts[i], "maxAct": float(peak.values[i]),
                         "maxPos": int(peak.indices[i]), "meanAct": float(act[i].mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def compute_probes(model: Any, model_id: str, n: int = 32, half: int = 16, seed: int = 7, k: int = 5,
                   tokens: torch.Tensor | None = None, probe: str | None = None) -> pd.DataFrame:
    """A node frame (heads and MLPs) with role scores and receptive fields as extra columns, on the
    generic probe or on ``tokens`` (described by ``probe``)."""
    if tokens is None:
        tokens = probe_tokens(model, n, half, seed)
        probe = f"{PROBE_NAME} (repeated random tokens, n={n}, half={tokens.shape[1] // 2}, seed={seed})"
    cfg = model.cfg
    acts, cache = _component_acts(model, model_id, tokens)
    rows = []
    for layer in range(cfg.n_layers):
        pat = cache[hook_name("pattern", layer)]  # [b, h, q, k]
        prev = torch.diagonal(pat, offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
        dup, ind = _earlier_occurrence_scores(pat, tokens)
        # what attending uniformly to every visible position gives t-1: a role is a score above this
        pos = torch.arange(1, tokens.shape[1], dtype=torch.float64)
        chance = float((1.0 / (pos + 1)).mean()) if cfg.attention_dir == "causal" else 1.0 / tokens.shape[1]
        for h in range(cfg.n_heads):
            cid = component_id(model_id, ComponentKind.HEAD, layer=layer, head=h)
            rows.append({
                "componentId": cid, "kind": "head", "modelId": model_id, "layer": layer, "head": h,
                "prevTokenScore": float(prev[h]), "prevTokenChance": chance, "duplicateTokenScore": float(dup[h]), "inductionScore": float(ind[h]),
                **_receptive_field(model, tokens, acts[cid], k), "topPrompts": _top_prompts(model, tokens, acts[cid], k), "probe": probe,
            })
        if not cfg.attn_only:
            cid = component_id(model_id, ComponentKind.MLP, layer=layer)
            rows.append({
                "componentId": cid, "kind": "mlp", "modelId": model_id, "layer": layer, "head": None,
                **_receptive_field(model, tokens, acts[cid], k), "topPrompts": _top_prompts(model, tokens, acts[cid], k), "probe": probe,
            })
    return pd.DataFrame(rows)
