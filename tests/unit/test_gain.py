"""Gain control against answers set by construction: response matrices that are exactly
multiplicative or additive, and a hand-built head whose attention to its own token (the stimulus)
is diluted by how much the context draws attention: a pure context gain."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from atlas.errors import ValidationError
from ingest.model.graph import build_graph
from ingest.toolbox.gain import gain_index, gain_study


def test_the_index_tells_scaling_from_shifting() -> None:
    rng = np.random.default_rng(0)
    f, g = rng.uniform(1, 5, 12), rng.uniform(0.2, 3, 10)
    mult = gain_index(np.outer(f, g))
    add = gain_index(f[:, None] + g[None, :] * 3)
    flat = gain_index(np.outer(f, np.ones(10)))
    assert mult["gainR2Mult"] == pytest.approx(1.0) and mult["gainIndex"] == pytest.approx(1.0)
    assert add["gainR2Add"] == pytest.approx(1.0) and add["gainIndex"] == pytest.approx(-1.0)
    assert flat["gainContextShare"] == pytest.approx(0.0, abs=1e-12)  # context changes nothing
    assert np.corrcoef(mult["contextFactor"], g)[0, 1] > 0.999
    with pytest.raises(ValidationError, match="at least 2 stimuli"):
        gain_index(np.ones((1, 5)))


def _gated_model() -> Any:
    """Heads read the raw stream (no norm, no positions). Stimulus tokens 0..9 carry an identity in
    dims 0-7; context tokens 10..29 carry a 'pull' kappa in dim 8; every token has 1 in dim 9.
    Head 0: query = dim 9, key = dim 8, so context tokens draw attention by their kappa and the
    stimulus (kappa 0) keeps 1 / (1 + sum exp(kappa)) of it; its value reads dims 0-7 only, so its
    output is that weight times the stimulus's value: R = f(stimulus) g(context). Head 1: no query
    (uniform attention over a fixed length), same value: R = f(stimulus) / n, no context effect."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=16, d_head=8, n_heads=2, d_vocab=30, attn_only=True, act_fn="relu",
                                  normalization_type=None, dtype=torch.float64, seed=0)
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:10, :8] = torch.randn(10, 8, generator=gen, dtype=torch.float64)
        model.W_E[10:, 8] = torch.linspace(-2, 3, 20, dtype=torch.float64)
        model.W_E[:, 9] = 1.0
        attn = model.blocks[0].attn
        attn.W_Q[0, 9, 0] = 4.0
        attn.W_K[0, 8, 0] = 1.0
        for h in (0, 1):
            attn.W_V[h, :8, :8] = torch.eye(8, dtype=torch.float64)
            attn.W_O[h, :8, :8] = torch.eye(8, dtype=torch.float64)
    model.eval()
    return model


def test_a_hand_built_gated_head_is_multiplicative() -> None:
    model = _gated_model()
    frame = gain_study(model, build_graph(model, "gate"), 0, n_stimuli=8, n_contexts=12, context_length=6, seed=1,
                       stimulus_tokens=(0, 10), context_tokens=(10, 30)).set_index("componentId")
    gated, plain = frame.loc["gate/L0.H0"], frame.loc["gate/L0.H1"]
    assert gated["gainR2Mult"] > 0.999 and gated["gainIndex"] > 0.9 and gated["gainContextShare"] > 0.01
    assert plain["gainContextShare"] < 1e-12  # uniform attention over one length: the context does not matter
    assert gated["gainEntropyCorr"] is not None and gated["gainNormCorr"] is None  # a head: its attention; no norm before it here


def test_the_norm_before_a_component_is_a_candidate_gain() -> None:
    from tests.conftest import make_tiny

    model = make_tiny(0)
    frame = gain_study(model, build_graph(model, "tiny"), 1, n_stimuli=4, n_contexts=6, context_length=5)
    assert len(frame) == 5 and frame["gainNormCorr"].notna().all()  # 4 heads after ln1, the MLP after ln2
    assert frame["gainIndex"].between(-1, 1).all() and frame["gainContextShare"].between(0, 1).all()
