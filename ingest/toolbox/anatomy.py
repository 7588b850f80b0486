"""The structural connectome: weight-based Q/K/V composition between heads (task-free).

Composition (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"), row-vector
convention ``x @ W``, for a writer head ``a`` in an earlier layer and a reader head ``b``:
  1. ``OV_a = W_V[a] @ W_O[a]`` and ``QK_b = W_Q[b] @ W_K[b]^T`` (``d_model x d_model``, rank <= d_head).
  2. Q-composition ``|OV_a QK_b|_F``, K-composition ``|QK_b OV_a^T|_F``, V-composition ``|OV_a OV_b|_F``,
     each divided by the product of the two factors' Frobenius norms.
  3. The ratio is not zero for unrelated matrices. The baseline is the same ratio for random Gaussian
     factors of the same shapes (``n_random`` draws); edges carry the score, the baseline mean and
     ``zScore = (score - mean) / std`` (docs/architecture.md, science notes).
  4. A head whose weights are all zero (held silent by construction, as in the ``binding`` zoo
     model) composes with nothing: its score is 0, not 0/0, and its edges carry ``silent = true``.
Layer norms between heads are ignored, as in the paper.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from atlas.ids import component_id
from atlas.schema import ComponentKind

__all__ = ["compute_composition", "composition_baseline"]


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a @ b|_F / (|a|_F |b|_F)`` over leading batch dimensions; 0 where a factor is zero."""
    num = torch.linalg.matrix_norm(a @ b)
    den = torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def composition_baseline(d_model: int, d_head: int, n_random: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the composition ratio for random rank-``d_head`` factors of the model's shapes."""
    gen = torch.Generator().manual_seed(seed)
    def low_rank() -> torch.Tensor:
        return torch.randn(n_random, d_model, d_head, generator=gen) @ torch.randn(n_random, d_head, d_model, generator=gen)

    r = _ratio(low_rank(), low_rank())
    return float(r.mean()), float(r.std())


def compute_composition(model: Any, model_id: str, n_random: int = 200) -> pd.DataFrame:
    """Q/K/V composition of every (earlier head -> later head) pair, as an edge frame.

    Columns: ``componentId_pre`` (writer), ``componentId_post`` (reader), ``channel`` (q/k/v: the
    reader's input it composes through), ``score``, ``baseline``, ``zScore``, ``silent``.
    """
    cfg = model.cfg
    with torch.no_grad():
        ov = torch.stack([model.blocks[l].attn.W_V @ model.blocks[l].attn.W_O for l in range(cfg.n_layers)]).double()
        qk = torch.stack([model.blocks[l].attn.W_Q @ model.blocks[l].attn.W_K.transpose(-1, -2) for l in range(cfg.n_layers)]).double()
    mean, std = composition_baseline(cfg.d_model, cfg.d_head, n_random)
    silent_ov = torch.linalg.matrix_norm(ov) == 0  # [layer, head]
    silent_qk = torch.linalg.matrix_norm(qk) == 0
    rows = []
    for la in range(cfg.n_layers):
        for lb in range(la + 1, cfg.n_layers):
            # [h_a, h_b] ratios, broadcasting writer heads against reader heads
            a_ov = ov[la][:, None]
            scores = {
                "q": _ratio(a_ov, qk[lb][None]),
                "k": _ratio(qk[lb][None], a_ov.transpose(-1, -2)),
                "v": _ratio(a_ov, ov[lb][None]),
            }
            for ch, mat in scores.items():
                for ha in range(cfg.n_heads):
                    for hb in range(cfg.n_heads):
                        val = float(mat[ha, hb])
                        reader_silent = bool(silent_ov[lb, hb]) if ch == "v" else bool(silent_qk[lb, hb])
                        rows.append({
                            "componentId_pre": component_id(model_id, ComponentKind.HEAD, layer=la, head=ha),
                            "componentId_post": component_id(model_id, ComponentKind.HEAD, layer=lb, head=hb),
                            "channel": ch,
                            "score": val,
                            "baseline": mean,
                            "zScore": (val - mean) / std if std > 0 else 0.0,
                            "silent": bool(silent_ov[la, ha]) or reader_silent,
                        })
    return pd.DataFrame(rows, columns=["componentId_pre", "componentId_post", "channel", "score", "baseline", "zScore", "silent"])
