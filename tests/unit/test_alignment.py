"""Functional alignment against cases whose answer is known by construction: a model and a copy
with its heads permuted (the alignment must undo the permutation, significantly), and two unrelated
random models (nothing significant, although their heads share a CKA of 0.1-0.4)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from atlas.errors import ValidationError
from ingest.model.tasks import InductionTask
from ingest.toolbox.alignment import functional_alignment, shared_stimuli
from tests.conftest import make_tiny

PERMS = {0: [2, 0, 3, 1], 1: [1, 3, 0, 2]}


def permuted_heads(model: Any, perms: dict[int, list[int]]) -> Any:
    """A copy computing exactly the same function with each layer's heads reordered: new head h is old head perm[h]."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer, perm in perms.items():
            attn = out.blocks[layer].attn
            for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
                t = getattr(attn, name)
                t.copy_(t[torch.tensor(perm)])
    return out


def test_alignment_undoes_a_permutation_of_heads(tmp_path: Path) -> None:
    from ingest.model.loading import load_model

    model = load_model("induction-2l", tmp_path).model
    copy_ = permuted_heads(model, PERMS)
    tokens = InductionTask().make_batch(model, 8, 0).clean
    with torch.no_grad():
        torch.testing.assert_close(copy_(tokens), model(tokens))  # the same function
    stimuli, what = shared_stimuli(model, copy_, [tokens, tokens[:, :10]])
    assert what == "the runs' task prompts (16 sequences of 10 and 24 tokens)"
    out = functional_alignment(model, "a", copy_, "b", stimuli, n_null=39)
    heads = out.frame[out.frame["kind"] == "head"]
    expected = {f"a/L{l}.H{perm[h]}": f"b/L{l}.H{h}" for l, perm in PERMS.items() for h in range(4)}
    assert dict(zip(heads["componentId_a"], heads["componentId_b"])) == expected
    assert heads["similarity"].min() > 0.999
    assert (heads["p"] == 1 / 40).all() and heads["significant"].all()
    assert not out.unmatched_a and not out.unmatched_b
    assert set(out.frame.loc[out.frame["method"] == "identity", "componentId_a"]) == {"a/EMBED", "a/LOGITS"}


def test_unrelated_random_models_align_to_nothing_significant() -> None:
    a, b = make_tiny(1), make_tiny(2)
    tokens, _ = shared_stimuli(a, b, [InductionTask().make_batch(a, 16, 0).clean])
    forced = functional_alignment(a, "r1", b, "r2", tokens, threshold=0.0, n_null=39)
    matched = forced.frame[forced.frame["method"] != "identity"]
    assert len(matched) == 10  # every head and MLP forced into a pair (threshold 0)...
    assert matched["similarity"].max() > 0.2  # ...with similarities a stimulus-shuffling null would call significant
    assert not matched["significant"].any(), matched
    # at the default threshold they mostly stay unmatched
    default = functional_alignment(a, "r1", b, "r2", tokens, n_null=5)
    assert len(default.unmatched_a) >= 8


def test_silent_heads_match_nothing_and_shapes_may_differ() -> None:
    a = make_tiny(3)
    with torch.no_grad():
        a.blocks[1].attn.W_O[2].zero_()
    one_layer = make_tiny(4, attn_only=True)
    one_layer.blocks = one_layer.blocks[:1]
    one_layer.cfg.n_layers = 1
    tokens, _ = shared_stimuli(a, one_layer, [InductionTask().make_batch(a, 8, 0).clean])
    out = functional_alignment(a, "a", one_layer, "b", tokens, threshold=0.0, n_null=3)
    assert "a/L1.H2" in out.unmatched_a
    assert {"a/L0.MLP", "a/L1.MLP"} <= set(out.unmatched_a)  # no MLPs on the other side
    assert set(out.frame.loc[out.frame["kind"] == "head", "componentId_b"]) <= {f"b/L0.H{h}" for h in range(4)}


def test_stimuli_fall_back_to_the_shared_vocabulary() -> None:
    a, b = make_tiny(1), make_tiny(2)
    too_big = torch.full((2, 6), 49)
    b.cfg.d_vocab = 40  # b cannot read token 49
    tokens, what = shared_stimuli(a, b, [too_big])
    assert "shared vocabulary" in what and len(tokens) == 1 and int(tokens[0].max()) < 40


def test_bad_settings_are_refused() -> None:
    a = make_tiny(1)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValidationError, match="too few"):
        functional_alignment(a, "a", a, "b", [tokens])
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        functional_alignment(a, "a", a, "b", [torch.zeros(4, 8, dtype=torch.long)], threshold=1.5)


def test_cka_in_feature_and_gram_space_equals_the_reference() -> None:
    """Both routes of the batched CKA equal ingest.toolbox.population.linear_cka (narrow and wide representations)."""
    import numpy as np

    from ingest.toolbox.alignment import _views
    from ingest.toolbox.population import linear_cka

    rng = np.random.default_rng(0)
    reps = {f"a{i}": rng.normal(size=(40, 7)) @ rng.normal(size=(7, 7)) for i in range(3)}
    reps |= {f"b{i}": rng.normal(size=(40, 50)) for i in range(2)}  # wider than the 40 stimuli: Gram space
    reps["silent"] = np.ones((40, 7))
    a, b = ["a0", "a1", "a2", "silent"], ["b0", "b1"]
    for left, right in ((a, b), (a, a)):
        got = _views(reps, left).cka(_views(reps, right))
        want = np.array([[0.0 if "silent" in (x, y) else linear_cka(reps[x], reps[y]) for y in right] for x in left])
        np.testing.assert_allclose(got, want, atol=1e-12)
    assert _views(reps, a).silent.tolist() == [False, False, False, True]
