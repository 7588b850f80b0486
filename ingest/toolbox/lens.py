"""Predictive coding: where a model forms its prediction, and which components push against it.

Per reading point of the residual stream (each layer's input, then the final stream), on a task's
clean prompts at its scored positions:

- the **logit lens** reads the stream through the model's own final norm and unembedding; its KL
  divergence from the final next-token distribution, ``KL(final || lens)``, and how often its top-1
  token is the final one (next to the agreement of a constant guess, the most frequent final token);
- the **tuned lens** first maps the stream by an affine translator per layer, fitted here by ridge
  least squares from that layer's stream to the final stream on half the prompts and evaluated on
  the other half (Belrose et al. 2023 train theirs on the KL; least squares is the closed-form
  variant: no optimiser, deterministic), its penalty chosen per layer on a validation half of the
  training prompts. Held-out KL and agreement are reported next to the training KL, so an
  overfitted translator shows.

Per component (embedding, heads, MLPs), its **direct contribution** to the logits (its output
through the final norm's frozen scale and the unembedding, logit minus mean logit, as the atlas's
``logit`` metric) toward the final top-1 token (``lensDla``) and toward what the stream already
predicts where the component reads it (``lensAgainstStream``: the logit lens's top-1 at the
component's input). A component that pushes against the stream's own prediction is
**error-correcting** when that push is beyond chance: its contribution to random tokens (100 draws
per position) is the null, ``lensAgainstZ`` the z-score, and ``lensErrorCorrecting`` means
``lensAgainstZ < -3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from atlas.errors import ValidationError
from ingest.model.graph import ModelGraph
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_output
from ingest.model.tasks import PromptBatch

__all__ = ["LensResult", "compute_lens", "LENS_PROPERTIES", "final_norm"]

LENS_PROPERTIES = ("lensDla", "lensAgainstStream", "lensAgainstNull", "lensAgainstZ", "lensErrorCorrecting", "lensTask")
"""What ``atlas lens`` writes on components (cleared before it writes again)."""
_NULL_DRAWS = 100


@dataclass(frozen=True)
class LensResult:
    """Per reading point (``layers``) and per component (``components``) figures (see module docstring)."""

    layers: pd.DataFrame
    components: pd.DataFrame
    summary: dict[str, Any]


def final_norm(model: Any, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The final norm applied to ``x``, or, with ``scale`` (the clean run's ``ln_final.hook_scale``),
    its linear part at that scale: how a component's output reaches the logits (direct logit
    attribution freezes the norm's scale)."""
    kind = model.cfg.normalization_type
    if kind is None:
        return x
    if scale is None:
        return model.ln_final(x)
    ln = model.ln_final
    if kind in ("LN", "LNPre"):
        x = x - x.mean(dim=-1, keepdim=True)
    x = x / scale
    if kind in ("LN", "RMS"):
        x = x * ln.w
    return x


def _logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model.unembed(final_norm(model, x))


def _kl_agree(final_logp: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    """Mean KL(final || lens) and top-1 agreement over the rows of ``[n, vocab]`` tensors."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    kl = (final_logp.exp() * (final_logp - logp)).sum(-1).mean()
    agree = (logp.argmax(-1) == final_logp.argmax(-1)).double().mean()
    return float(kl), float(agree)


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine least squares ``y ~ x A + b`` with a ridge penalty relative to the data's scale."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    penalty = lam * float(gram.diagonal().mean()) + 1e-12
    a = torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)
    return a, my - mx @ a


RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Ridge penalties (relative to the stream's variance) the tuned lens chooses from, per layer, by the
KL on a validation half of its training prompts; the held-out prompts never take part."""


def _choose_ridge(model: Any, x: torch.Tensor, target: torch.Tensor, final_all: torch.Tensor, mask: torch.Tensor,
                  train: torch.Tensor, seed: int) -> float:
    rows = torch.nonzero(train).flatten()
    if len(rows) < 2:
        return RIDGE_GRID[0]
    order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + 2))]
    inner, val = order[: len(order) // 2], order[len(order) // 2:]
    d = x.shape[-1]
    best, best_kl = RIDGE_GRID[0], float("inf")
    for lam in RIDGE_GRID:
        a, b = _ridge(x[inner].reshape(-1, d).double(), target[inner].reshape(-1, d).double(), lam)
        with torch.no_grad():
            tuned = _logits(model, (x[val].double() @ a + b).to(x.dtype))
        kl, _ = _kl_agree(final_all[val][mask[val]], tuned[mask[val]])
        if kl < best_kl:
            best, best_kl = lam, kl
    return best


def _points(model: Any) -> list[tuple[str, str]]:
    """(label, hook) of every reading point: each layer's input, then the final stream."""
    n = model.cfg.n_layers
    return [(f"L{l}", hook_name("resid_pre", l)) for l in range(n)] + [("final", hook_name("resid_post", n - 1))]


def compute_lens(model: Any, graph: ModelGraph, batch: PromptBatch, seed: int = 0) -> LensResult:
    """Logit lens, tuned lens and per-component direct contributions on ``batch``'s clean prompts at
    its scored positions (see module docstring)."""
    if batch.n_prompts < 2:
        raise ValidationError("the lens needs at least 2 prompts: the tuned lens is fitted on half and evaluated on the other half")
    n_layers = model.cfg.n_layers
    names = {h for _, h in _points(model)} | {hook_name("resid_mid", l) for l in range(n_layers)} | {"ln_final.hook_scale"}
    names |= {hook_name("z", l) for l in range(n_layers)} | {hook_name("mlp_out", l) for l in range(n_layers) if graph.has_mlp}
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.clean, names_filter=lambda n: n in names)
    mask = batch.mask
    final_logp = torch.log_softmax(logits[mask].double(), dim=-1)
    final_top = final_logp.argmax(-1)
    half = batch.n_prompts // 2
    train = torch.zeros(batch.n_prompts, dtype=torch.bool)
    train[torch.randperm(batch.n_prompts, generator=torch.Generator().manual_seed(seed))[:half]] = True
    final_stream = cache[_points(model)[-1][1]]
    final_all = torch.log_softmax(logits.double(), dim=-1)
    rows = []
    lens_top: dict[str, torch.Tensor] = {}
    for label, hook in _points(model):
        x = cache[hook]
        with torch.no_grad():
            lens_logits = _logits(model, x)
        lens_top[label] = lens_logits.argmax(-1)  # [b, p]
        kl, agree = _kl_agree(final_logp, lens_logits[mask])
        held, fit = mask & ~train[:, None], mask & train[:, None]
        lam = _choose_ridge(model, x, final_stream, final_all, mask, train, seed)
        a, b = _ridge(x[train].reshape(-1, x.shape[-1]).double(), final_stream[train].reshape(-1, x.shape[-1]).double(), lam)
        with torch.no_grad():
            tuned = _logits(model, (x.double() @ a + b).to(x.dtype))
        kl_tuned, agree_tuned = _kl_agree(final_all[held], tuned[held])
        kl_train, _ = _kl_agree(final_all[fit], tuned[fit])
        rows.append({"layer": label, "klLogitLens": kl, "agreeLogitLens": agree, "klTunedLens": kl_tuned, "agreeTunedLens": agree_tuned,
                     "klTunedLensTrain": kl_train, "ridge": lam})
    layers = pd.DataFrame(rows)
    counts = torch.bincount(final_top, minlength=logits.shape[-1])
    chance = float(counts.max()) / len(final_top)
    layers["agreeChance"] = chance
    components = _direct_contributions(model, graph, cache, batch, final_top, lens_top, seed)
    agreeing = layers.loc[layers["agreeLogitLens"] >= 0.5, "layer"]
    summary = {
        "nPrompts": batch.n_prompts, "nPositions": int(mask.sum()), "heldOutPrompts": batch.n_prompts - half, "agreeChance": chance,
        "firstAgreeingLayer": agreeing.iloc[0] if len(agreeing) else None,
        "errorCorrecting": sorted(components.loc[components["lensErrorCorrecting"], "componentId"].tolist()),
    }
    return LensResult(layers, components, summary)


def _direct_contributions(model: Any, graph: ModelGraph, cache: Any, batch: PromptBatch, final_top: torch.Tensor,
                          lens_top: dict[str, torch.Tensor], seed: int) -> pd.DataFrame:
    mask = batch.mask
    scale = cache["ln_final.hook_scale"] if model.cfg.normalization_type is not None else None
    w_u = model.W_U.detach()
    w_u = w_u - w_u.mean(dim=1, keepdim=True)  # logit minus mean logit
    n_pos = int(mask.sum())
    draws = torch.randint(0, w_u.shape[1], (_NULL_DRAWS, n_pos), generator=torch.Generator().manual_seed(seed + 1))
    rows = []
    for s in graph.senders:
        if s.kind.value == "embed":
            out, stream = cache[hook_name("resid_pre", 0)], None
        elif s.kind.value == "head":
            out = head_output(model, s.layer, s.head, cache[hook_name("z", s.layer)])
            stream = f"L{s.layer}"
        elif s.kind.value == "mlp":
            out = cache[hook_name("mlp_out", s.layer)]
            stream = "mid" if not model.cfg.parallel_attn_mlp else f"L{s.layer}"
        else:
            continue  # neurons and features are not in a lens graph
        with torch.no_grad():
            direct = (final_norm(model, out, scale)[mask].double() @ w_u.double())  # [n, vocab]
        toward = direct.gather(1, final_top[:, None]).squeeze(1).mean()
        row = {"componentId": s.component_id, "kind": s.kind.value, "layer": max(s.layer, 0), "lensDla": float(toward)}
        if stream is not None:
            if stream == "mid":  # the MLP reads the stream after its layer's attention
                with torch.no_grad():
                    top = _logits(model, cache[hook_name("resid_mid", s.layer)]).argmax(-1)[mask]
            else:
                top = lens_top[stream][mask]
            against = direct.gather(1, top[:, None]).squeeze(1).mean()
            null = direct.gather(1, draws.T).mean(dim=0)  # [draws]: the same push to random tokens
            z = (against - null.mean()) / null.std().clamp_min(1e-12)
            row.update({"lensAgainstStream": float(against), "lensAgainstNull": float(null.mean()), "lensAgainstZ": float(z),
                        "lensErrorCorrecting": bool(z < -3)})
        else:
            row.update({"lensAgainstStream": None, "lensAgainstNull": None, "lensAgainstZ": None, "lensErrorCorrecting": False})
        rows.append(row)
    return pd.DataFrame(rows)
