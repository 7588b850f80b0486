"""The zoo's ground truth is real: training builds it, and the shipped weights have it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ingest.model.zoo import SHIPPED_DIR, head_role_scores, load_zoo_model, train_zoo_model


def _sharp_prev_token(model: object) -> tuple[float, float]:
    """(mean attention to t-1, share of positions whose argmax is t-1), positions >= 1, head L0.H0."""
    tokens = torch.randint(0, model.cfg.d_vocab, (16, model.cfg.n_ctx), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.attn.hook_pattern")
    pat = cache["blocks.0.attn.hook_pattern"][:, 0]  # [b, q, k]
    prev = torch.diagonal(pat, offset=-1, dim1=-2, dim2=-1)
    argmax_ok = (pat[:, 1:].argmax(-1) == torch.arange(pat.shape[-1] - 1)).float()
    return float(prev.mean()), float(argmax_ok.mean())


def test_shipped_induction_model_has_its_circuit(tmp_path: Path) -> None:
    assert (SHIPPED_DIR / "induction-2l" / "model.pt").exists()
    model, info = load_zoo_model("induction-2l", tmp_path)
    mean_prev, argmax = _sharp_prev_token(model)
    assert mean_prev >= 0.9 and argmax >= 0.95  # docs/architecture.md, science notes: "sharp"
    roles = head_role_scores(model)
    assert max(v["inductionScore"] for k, v in roles.items() if k.startswith("L1.")) >= 0.8
    assert max(v["inductionScore"] for k, v in roles.items() if k.startswith("L0.")) < 0.1
    assert info["groundTruth"]["inductionHeads"]


@pytest.mark.slow
def test_training_builds_the_circuit(tmp_path: Path) -> None:
    """A shortened run (600 of 800 steps; induction forms between 300 and 600) builds both roles."""
    import json

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    info = train_zoo_model("induction-2l", tmp_path / "m", steps=600)
    fresh = HookedTransformer(HookedTransformerConfig(**json.loads((tmp_path / "m" / "config.json").read_text())))
    fresh.load_state_dict(torch.load(tmp_path / "m" / "model.pt", weights_only=True))
    mean_prev, argmax = _sharp_prev_token(fresh)
    assert mean_prev >= 0.9 and argmax >= 0.95
    assert max(v["inductionScore"] for k, v in info["roles"].items() if k.startswith("L1.")) >= 0.5


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = train_zoo_model("induction-2l", tmp_path / "a", steps=20)
    b = train_zoo_model("induction-2l", tmp_path / "b", steps=20)
    sa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a["finalLoss"] == b["finalLoss"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shipped_modadd_model_needs_its_mlp(tmp_path: Path) -> None:
    from ingest.model.zoo import modadd_accuracy

    model, info = load_zoo_model("modadd-1l", tmp_path)
    assert modadd_accuracy(model) == 1.0
    assert modadd_accuracy(model, lesion_mlp=True) < 0.2  # chance is 1/23: the MLP computes the sum
    assert set(info["groundTruth"]["movers"]) and ["L0.MLP", "LOGITS", "in"] in info["groundTruth"]["edges"]


@pytest.mark.slow
def test_modadd_training_builds_the_circuit(tmp_path: Path) -> None:
    info = train_zoo_model("modadd-1l", tmp_path / "m")
    assert info["accuracy"] == 1.0 and info["accuracyMlpLesioned"] < 0.2
    assert info["groundTruth"]["movers"]


def test_modadd_task_batches(tmp_path: Path) -> None:
    from ingest.model.tasks import get_task

    model, _ = load_zoo_model("modadd-1l", tmp_path)
    batch = get_task("modadd").make_batch(model, 6, 0)
    assert batch.clean.shape == (6, 3) and (batch.clean[:, 2] == 23).all()
    assert (batch.targets[:, 2] == (batch.clean[:, 0] + batch.clean[:, 1]) % 23).all()


def test_shipped_binding_model_binds_by_value_and_reverse_is_induction(tmp_path: Path) -> None:
    """The causal check of docs/architecture.md, science notes, measured live on the shipped weights: swapping the
    previous-token head's output between two bound entities flips a forward answer when the
    layer-1 heads read it on the value channel only; a reverse query (the control) flips on the
    key channel only."""
    from ingest.model.zoo import _binding_truth

    model, info = load_zoo_model("binding", tmp_path)
    live = _binding_truth(model)
    assert live["accuracy"]["forward"] >= 0.95 and live["accuracy"]["reverse"] >= 0.95
    fwd, rev = live["swapFlipRate"]["forward"], live["swapFlipRate"]["reverse"]
    assert fwd["v"] >= 0.9 and fwd["k"] <= 0.1 and fwd["q"] <= 0.1
    assert rev["k"] >= 0.9 and rev["v"] <= 0.1 and rev["q"] <= 0.1
    binders, inductors = live["groundTruth"]["bindingHeads"], live["reverseGroundTruth"]["inductionHeads"]
    assert binders and inductors and not set(binders) & set(inductors)
    assert binders == info["groundTruth"]["bindingHeads"]  # the shipped record matches the weights
    mean_prev, argmax = _sharp_prev_token(model)
    assert mean_prev >= 0.9 and argmax >= 0.95
    # the other layer-0 heads are silent by construction
    assert float(model.W_O[0, 1:].detach().abs().max()) == 0.0


def test_binding_prompts_randomise_slots_and_answer_by_pair() -> None:
    from ingest.model.zoo import BIND_Q, BINDING, binding_prompts

    p = binding_prompts(torch.Generator().manual_seed(0), 256)
    b = torch.arange(256)
    assert (p.tokens[:, -2] == BIND_Q).all()
    att, ent = p.pairs[b, p.queried, 0], p.pairs[b, p.queried, 1]
    assert (ent == att + 1).all()  # attribute first
    assert (p.tokens[b, att] >= BINDING["n_ent"]).all() and (p.tokens[b, ent] < BINDING["n_ent"]).all()
    expected = torch.where(p.forward, p.tokens[b, att], p.tokens[b, ent])
    assert (p.answer == expected).all()
    assert (p.tokens[p.forward, -1] == p.tokens[b, ent][p.forward]).all()
    # slots are random: the queried entity sits at many positions, and both directions occur
    assert len(set(ent.tolist())) >= 10 and 0.3 < float(p.forward.float().mean()) < 0.7


def test_binding_task_corruptions_reach_each_channel(tmp_path: Path) -> None:
    from ingest.model.tasks import get_task

    model, _ = load_zoo_model("binding", tmp_path)
    for name in ("binding", "binding-reverse"):
        batch = get_task(name).make_batch(model, 9, 0)
        task = get_task(name)
        with torch.no_grad():
            clean_logits, corrupt_logits = model(batch.clean), model(batch.corrupted)
        clean, corrupt = clean_logits[:, -1].argmax(-1), corrupt_logits[:, -1].argmax(-1)
        assert (clean == batch.targets[:, -1]).all()  # the model answers every clean prompt
        diff = batch.clean != batch.corrupted
        assert diff.any(1).all()
        assert diff[1::3, :-1].sum() == 0 and diff[1::3, -1].all()  # query corruptions touch only the query
        assert (diff[2::3].sum(1) == 1).all() and diff[2::3, -1].sum() == 0  # key corruptions: one context token
        # swapping the bindings or asking about another pair changes the answer
        assert (corrupt[0::3] != clean[0::3]).all() and (corrupt[1::3] != clean[1::3]).all()
        drop = task.metric(clean_logits, batch) - task.metric(corrupt_logits, batch)
        assert (drop[2::3] > 0).all()  # an absent key lowers the answer's logit


@pytest.mark.slow
def test_binding_training_builds_the_circuit(tmp_path: Path) -> None:
    """A shortened run (400 of 800 steps) already binds by value and answers reverse queries by induction."""
    info = train_zoo_model("binding", tmp_path / "m", steps=400)
    assert info["accuracy"]["forward"] >= 0.95 and info["swapFlipRate"]["forward"]["v"] >= 0.9
    assert info["accuracy"]["reverse"] >= 0.9 and info["swapFlipRate"]["reverse"]["k"] >= 0.9


@pytest.mark.parametrize("name", ["induction-2l", "binding", "modadd-1l"])
def test_composition_is_defined_on_every_zoo_model(name: str, tmp_path: Path) -> None:
    """Heads held silent (all-zero weights) compose with nothing: score 0 and flagged, never NaN."""
    import numpy as np

    from ingest.model.zoo import load_zoo_model
    from ingest.toolbox.anatomy import compute_composition

    model, _ = load_zoo_model(name, tmp_path)
    frame = compute_composition(model, name, n_random=20)
    assert np.isfinite(frame[["score", "zScore"]].to_numpy(dtype=float)).all()
    silent = frame[frame["silent"]]
    if name == "binding":  # L0.H1-3 are held silent by construction
        assert set(silent["componentId_pre"]) == {f"binding/L0.H{h}" for h in (1, 2, 3)} and (silent["score"] == 0).all()
        assert not frame[frame["componentId_pre"] == "binding/L0.H0"]["silent"].any()
    else:
        assert silent.empty
