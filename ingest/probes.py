"""Receptive fields and roles: what each head and MLP responds to, on a standard probe set.

Probe ``atlas-probe-v1``: ``n`` sequences of ``half`` uniform random tokens repeated once
(``A B C ... A B C``), seeded. For every head:
  - ``prevTokenScore``: mean attention from position t to t-1 (t >= 1);
  - ``duplicateTokenScore``: mean attention from a second-half token to its first occurrence;
  - ``inductionScore``: mean attention from a second-half token to the token after its first occurrence.
For every head and MLP, its receptive field: the current tokens after which its output (L2 norm of
what it writes into the residual stream) is largest on average (``topTokens``, ``topTokenActs``) and
the highest-activating contexts (``topContexts``, five tokens ending at the position).
For every MLP neuron (post-activation value): sparse-coding statistics (``frequency``: share of
positions where it is active, i.e. > 0; ``meanAct``; ``maxAct``) and the same receptive field.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from atlas.ids import component_id
from atlas.schema import ComponentKind
from ingest.hooks import hook_name

__all__ = ["PROBE_NAME", "compute_probes", "compute_neuron_stats", "sparse_coding_rows", "probe_tokens"]

PROBE_NAME = "atlas-probe-v1"


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
def compute_neuron_stats(model: Any, model_id: str, n: int = 32, half: int = 16, seed: int = 7, k: int = 5) -> pd.DataFrame:
    """A node frame of every MLP neuron with sparse-coding statistics and its receptive field."""
    cfg = model.cfg
    if cfg.attn_only:
        return pd.DataFrame(columns=["componentId", "kind", "modelId", "layer", "head"])
    tokens = probe_tokens(model, n, half, seed)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("mlp.hook_post"))
    probe = f"{PROBE_NAME} (repeated random tokens, n={n}, half={tokens.shape[1] // 2}, seed={seed})"
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


@torch.no_grad()
def compute_probes(model: Any, model_id: str, n: int = 32, half: int = 16, seed: int = 7, k: int = 5) -> pd.DataFrame:
    """A node frame (heads and MLPs) with role scores and receptive fields as extra columns."""
    tokens = probe_tokens(model, n, half, seed)
    half = tokens.shape[1] // 2
    cfg = model.cfg
    names = lambda name: name.endswith(("hook_pattern", "hook_z", "hook_mlp_out"))  # noqa: E731
    _, cache = model.run_with_cache(tokens, names_filter=names)
    probe = f"{PROBE_NAME} (repeated random tokens, n={n}, half={half}, seed={seed})"
    rows = []
    for layer in range(cfg.n_layers):
        pat = cache[hook_name("pattern", layer)]  # [b, h, q, k]
        prev = torch.diagonal(pat, offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
        dup = torch.diagonal(pat, offset=-half, dim1=-2, dim2=-1).mean(dim=(0, 2))
        ind = torch.diagonal(pat, offset=-(half - 1), dim1=-2, dim2=-1)[:, :, 1:].mean(dim=(0, 2))
        out = torch.einsum("bphe,hed->bphd", cache[hook_name("z", layer)], model.blocks[layer].attn.W_O).norm(dim=-1)
        for h in range(cfg.n_heads):
            rows.append({
                "componentId": component_id(model_id, ComponentKind.HEAD, layer=layer, head=h),
                "kind": "head", "modelId": model_id, "layer": layer, "head": h,
                "prevTokenScore": float(prev[h]), "duplicateTokenScore": float(dup[h]), "inductionScore": float(ind[h]),
                **_receptive_field(model, tokens, out[:, :, h], k), "probe": probe,
            })
        if not cfg.attn_only:
            act = cache[hook_name("mlp_out", layer)].norm(dim=-1)
            rows.append({
                "componentId": component_id(model_id, ComponentKind.MLP, layer=layer),
                "kind": "mlp", "modelId": model_id, "layer": layer, "head": None,
                **_receptive_field(model, tokens, act, k), "probe": probe,
            })
    return pd.DataFrame(rows)
