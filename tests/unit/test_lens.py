"""Predictive coding (``ingest.toolbox.lens``) on models whose answer is known by construction: a model that
adds nothing to its stream is read out exactly at every layer, and an MLP built to write minus its
own input is the error-correcting component while one that writes plus its input is not."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ingest.model.graph import build_graph
from ingest.model.tasks import PromptBatch
from ingest.toolbox.lens import compute_lens, final_norm


def _model(normalization: str | None = "LN", act: str = "relu", d_mlp: int = 64, seed: int = 0) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50, d_mlp=d_mlp, act_fn=act,
                                  normalization_type=normalization, seed=seed, dtype=torch.float64)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def _batch(model: Any, n: int = 16, length: int = 10) -> PromptBatch:
    tokens = torch.randint(0, model.cfg.d_vocab, (n, length), generator=torch.Generator().manual_seed(1))
    return PromptBatch(tokens, tokens, torch.zeros_like(tokens), torch.ones_like(tokens, dtype=torch.bool))


def test_a_model_that_adds_nothing_is_read_out_at_every_layer() -> None:
    model = _model()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O.zero_()
            block.attn.b_O.zero_()
            block.mlp.W_out.zero_()
            block.mlp.b_out.zero_()
    result = compute_lens(model, build_graph(model, "still"), _batch(model))
    assert (result.layers["klLogitLens"].abs() < 1e-10).all() and (result.layers["agreeLogitLens"] == 1).all()
    assert (result.layers["klTunedLens"] < 1e-2).all() and (result.layers["agreeTunedLens"] > 0.95).all()
    parts = result.components.set_index("componentId")
    assert parts.loc[[c for c in parts.index if "EMBED" not in c], "lensDla"].abs().max() < 1e-12
    assert result.summary["errorCorrecting"] == [] and result.summary["firstAgreeingLayer"] == "L0"


def test_an_mlp_that_writes_minus_its_input_is_error_correcting() -> None:
    model = _model()
    d = model.cfg.d_model
    eye = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O.zero_()
            block.attn.b_O.zero_()
            block.mlp.W_in.copy_(torch.cat([eye, -eye], dim=1))  # relu(n) - relu(-n) = n
            block.mlp.b_in.zero_()
            block.mlp.b_out.zero_()
        for ln in [model.ln_final] + [b.ln2 for b in model.blocks]:
            ln.w.fill_(1.0)
            ln.b.zero_()
        model.blocks[0].mlp.W_out.copy_(0.5 * torch.cat([eye, -eye], dim=0))  # + its normalised input: reinforces
        model.blocks[1].mlp.W_out.copy_(-0.5 * torch.cat([eye, -eye], dim=0))  # - its normalised input: corrects
    result = compute_lens(model, build_graph(model, "hand"), _batch(model))
    parts = result.components.set_index("componentId")
    assert result.summary["errorCorrecting"] == ["hand/L1.MLP"]
    assert parts.loc["hand/L1.MLP", "lensAgainstZ"] < -3 < parts.loc["hand/L0.MLP", "lensAgainstZ"]
    assert parts.loc["hand/L1.MLP", "lensAgainstStream"] < 0 < parts.loc["hand/L0.MLP", "lensAgainstStream"]
    assert abs(parts.loc["hand/L1.MLP", "lensAgainstNull"]) < abs(parts.loc["hand/L1.MLP", "lensAgainstStream"]) / 10


@pytest.mark.parametrize("normalization", ["LN", "LNPre", "RMS", "RMSPre", None])
def test_direct_contributions_add_up_to_the_final_norm(normalization: str | None) -> None:
    """Through the frozen final scale, the components' outputs sum to what the final norm makes of
    the stream (less its bias): direct contributions are an exact decomposition."""
    model = _model(normalization, act="gelu")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.zero_()
            block.mlp.b_out.zero_()
    tokens = _batch(model).clean
    _, cache = model.run_with_cache(tokens)
    parts = [cache["blocks.0.hook_resid_pre"]]
    for l in range(2):
        parts += [cache[f"blocks.{l}.attn.hook_z"][:, :, h] @ model.blocks[l].attn.W_O[h] for h in range(4)]
        parts.append(cache[f"blocks.{l}.hook_mlp_out"])
    scale = cache["ln_final.hook_scale"] if normalization is not None else None
    summed = sum(final_norm(model, p, scale) for p in parts)
    expected = final_norm(model, cache["blocks.1.hook_resid_post"])
    if normalization in ("LN", "RMS") and hasattr(model.ln_final, "b"):
        expected = expected - model.ln_final.b
    assert (summed - expected).abs().max() < 1e-10
