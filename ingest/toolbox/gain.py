"""Gain control: is a component's response to a stimulus scaled by context (multiplicative gain, the
framework's neuromodulation) or shifted by it (additive)?

Design: ``S`` stimulus tokens, each placed last after each of ``C`` random context prefixes (``S x C``
prompts of one length). A component's response to prompt ``(s, c)`` is the norm of its output at
the last position, ``R[s, c]``. Two models with ``S + C`` parameters each are fitted by least
squares: additive, ``R ~ mu + a_s + b_c`` (row and column effects), and multiplicative,
``R ~ f_s g_c`` (the best rank-1 matrix). The **gain index** compares what each leaves unexplained,
``(SSE_add - SSE_mult) / (SSE_add + SSE_mult)``: 1 when context only scales the response, -1 when
it only shifts it, 0 when the two fit alike (scale-free: the stimulus's main effect, which both
models capture, does not dilute it). ``contextShare`` is the variance the context
alone explains (its column effect); with almost none, the index says little and is reported beside
it. Two candidate mechanisms are correlated with the context factor ``g_c`` (the rank-1 model's
column): the inverse scale of the component's input norm at the last position (layer norm as a
divisive gain) and, for heads, the entropy of its attention there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ValidationError
from ingest.model.graph import ModelGraph
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_output

__all__ = ["gain_index", "gain_study", "GAIN_PROPERTIES"]

GAIN_PROPERTIES = ("gainIndex", "gainR2Mult", "gainR2Add", "gainContextShare", "gainNormCorr", "gainEntropyCorr")


def gain_index(r: np.ndarray) -> dict[str, Any]:
    """Additive vs multiplicative fits of a stimulus x context response matrix (see module docstring)."""
    r = np.asarray(r, dtype=float)
    if r.ndim != 2 or min(r.shape) < 2:
        raise ValidationError("gain needs at least 2 stimuli and 2 contexts")
    total = float(((r - r.mean()) ** 2).sum())
    if total <= 0:
        return {"gainIndex": 0.0, "gainR2Mult": 1.0, "gainR2Add": 1.0, "gainContextShare": 0.0, "contextFactor": np.ones(r.shape[1])}
    additive = r.mean(axis=1, keepdims=True) + r.mean(axis=0, keepdims=True) - r.mean()
    u, s, vt = np.linalg.svd(r, full_matrices=False)
    rank1 = s[0] * np.outer(u[:, 0], vt[0])
    sse_add, sse_mult = float(((r - additive) ** 2).sum()), float(((r - rank1) ** 2).sum())
    index = (sse_add - sse_mult) / (sse_add + sse_mult) if sse_add + sse_mult > 1e-12 * total else 0.0
    context = float(r.shape[0] * ((r.mean(axis=0) - r.mean()) ** 2).sum()) / total
    factor = vt[0] * np.sign(vt[0].sum() or 1.0)
    return {"gainIndex": index, "gainR2Mult": 1 - sse_mult / total, "gainR2Add": 1 - sse_add / total, "gainContextShare": context,
            "contextFactor": factor}


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def gain_study(model: Any, graph: ModelGraph, layer: int, *, n_stimuli: int = 16, n_contexts: int = 16, context_length: int = 8,
               seed: int = 0, stimulus_tokens: tuple[int, int] | None = None, context_tokens: tuple[int, int] | None = None) -> pd.DataFrame:
    """The gain figures of every head and the MLP of ``layer`` (one row each; see module docstring).

    ``stimulus_tokens`` and ``context_tokens`` (low, high) bound the tokens drawn for each (default:
    the whole vocabulary)."""
    if not 0 <= layer < graph.n_layers:
        raise ValidationError(f"layer {layer} is outside the model's {graph.n_layers} layers")
    if context_length + 1 > model.cfg.n_ctx:
        raise ValidationError(f"a context of {context_length} tokens plus the stimulus exceeds the model's context of {model.cfg.n_ctx}")
    full = (0, int(model.cfg.d_vocab))
    gen = torch.Generator().manual_seed(seed)
    stimuli = torch.randint(*(stimulus_tokens or full), (n_stimuli,), generator=gen)
    contexts = torch.randint(*(context_tokens or full), (n_contexts, context_length), generator=gen)
    tokens = torch.cat([contexts.repeat(n_stimuli, 1), stimuli.repeat_interleave(n_contexts)[:, None]], dim=1)  # row s * C + c
    norm_hook = f"blocks.{layer}.ln1.hook_scale"
    names = {hook_name("z", layer), hook_name("pattern", layer), norm_hook, f"blocks.{layer}.ln2.hook_scale"}
    if graph.has_mlp:
        names.add(hook_name("mlp_out", layer))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)

    def grid(values: torch.Tensor) -> np.ndarray:
        return values.detach().double().cpu().numpy().reshape(n_stimuli, n_contexts)

    def scale_of(hook: str) -> np.ndarray | None:
        try:
            return grid(1.0 / cache[hook][:, -1, 0]).mean(axis=0)
        except KeyError:  # no norm before the component
            return None

    rows = []
    for s in graph.senders:
        if s.layer != layer or s.kind.value not in ("head", "mlp"):
            continue
        if s.kind.value == "head":
            out = head_output(model, layer, s.head, cache[hook_name("z", layer)][:, -1])
            pattern = cache[hook_name("pattern", layer)][:, s.head, -1]
            entropy = grid(-(pattern * torch.log(pattern.clamp_min(1e-30))).sum(-1)).mean(axis=0)
            inverse_scale = scale_of(norm_hook)
        else:
            out = cache[hook_name("mlp_out", layer)][:, -1]
            entropy = None
            inverse_scale = scale_of(f"blocks.{layer}.ln2.hook_scale")
        fit = gain_index(grid(out.norm(dim=-1)))
        factor = fit.pop("contextFactor")
        rows.append({"componentId": s.component_id, **fit,
                     "gainNormCorr": _corr(factor, inverse_scale) if inverse_scale is not None else None,
                     "gainEntropyCorr": _corr(factor, entropy) if entropy is not None else None})
    return pd.DataFrame(rows)
