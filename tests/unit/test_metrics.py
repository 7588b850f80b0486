"""Metrics by name: prob, logit-diff (a per-prompt counterfactual token), kl (to the clean
distribution) and l2 (squared change of a readout logit), on hand-computed logits and through the
edge methods; scored positions from prompts files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.errors import TaskError, ValidationError
from ingest.edges.methods import MethodConfig, compute_eap_ig, compute_eap_ig_activations, compute_patching
from ingest.jobs.run import IngestConfig, compute_run
from ingest.model.graph import build_graph
from ingest.model.tasks import PromptBatch, get_task, kl_metric, l2_metric, logit_diff_metric, prepare_batch, prob_metric
from tests.conftest import make_tiny


def hand_batch(incorrect: bool = True) -> PromptBatch:
    tokens = torch.tensor([[0, 1]])
    return PromptBatch(tokens, tokens, torch.tensor([[0, 2]]), torch.tensor([[False, True]]),
                       incorrect=torch.tensor([[0, 1]]) if incorrect else None)


def test_metrics_on_hand_logits() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])
    batch = hand_batch()
    assert float(prob_metric(logits, batch)) == pytest.approx(math.exp(3) / (math.e + math.exp(2) + math.exp(3)))
    assert float(logit_diff_metric(logits, batch)) == pytest.approx(3.0 - 2.0)
    with pytest.raises(TaskError, match="incorrect"):
        logit_diff_metric(logits, hand_batch(incorrect=False))
    ref = torch.log_softmax(logits, dim=-1)
    with_ref = PromptBatch(batch.clean, batch.corrupted, batch.targets, batch.mask, reference=ref)
    assert float(kl_metric(logits, with_ref)) == 0.0  # the clean run itself
    moved = logits.clone()
    moved[0, 1] = torch.tensor([3.0, 2.0, 1.0])
    p, q = ref[0, 1].exp(), torch.log_softmax(moved[0, 1], -1)
    assert float(kl_metric(moved, with_ref)) == pytest.approx(-float((p * (ref[0, 1] - q)).sum()))
    with pytest.raises(TaskError, match="prepare_batch"):
        kl_metric(logits, batch)
    with_logits = PromptBatch(batch.clean, batch.corrupted, batch.targets, batch.mask, reference=logits)
    assert float(l2_metric(logits, with_logits)) == 0.0
    assert float(l2_metric(moved, with_logits)) == pytest.approx(-((1.0 - 3.0) ** 2))  # target 2 at the scored position
    with pytest.raises(TaskError, match="prepare_batch"):
        l2_metric(logits, batch)


def test_kl_through_the_methods() -> None:
    """Patching an edge can only move the output away from the clean distribution: every exact score
    is <= 0; EAP-IG over activations is complete for it; plain EAP is refused (zero gradient at clean)."""
    model = make_tiny(6)
    task = get_task("induction", "kl")
    batch = prepare_batch(model, task.make_batch(model, 4, 0), "kl")
    graph = build_graph(model, "kl")
    exact = compute_patching(model, graph, task, batch)
    assert exact["score"].max() <= 1e-6 and exact["score"].min() < -1e-3
    frame = compute_eap_ig_activations(model, graph, task, batch, MethodConfig(steps=32))
    with torch.no_grad():
        gap = float(task.metric(model(batch.corrupted), batch).mean())  # minus KL(clean || corrupted); 0 at clean
    assert frame.loc[frame.componentId_post == "kl/LOGITS", "score"].sum() == pytest.approx(gap, rel=2e-2)
    assert compute_eap_ig(model, graph, task, batch, MethodConfig(steps=4))["score"].abs().max() > 1e-3
    with pytest.raises(ValidationError, match="vanishes at the clean run"):
        IngestConfig(model="x", method="eap", metric="kl").validate()


def test_l2_through_the_methods() -> None:
    """A squared change is never below 0 on the clean side: every exact score is <= 0, EAP-IG over
    activations is complete for it, and plain EAP (zero gradient at the clean run) is refused."""
    model = make_tiny(6)
    task = get_task("induction", "l2")
    batch = prepare_batch(model, task.make_batch(model, 4, 0), "l2")
    assert batch.reference is not None and batch.reference.shape == (*batch.clean.shape, model.cfg.d_vocab)
    graph = build_graph(model, "l2")
    exact = compute_patching(model, graph, task, batch)
    assert exact["score"].max() <= 1e-6 and exact["score"].min() < -1e-3
    frame = compute_eap_ig_activations(model, graph, task, batch, MethodConfig(steps=32))
    with torch.no_grad():
        gap = float(task.metric(model(batch.corrupted), batch).mean())
    assert gap < -1e-3
    assert frame.loc[frame.componentId_post == "l2/LOGITS", "score"].sum() == pytest.approx(gap, rel=2e-2)
    with pytest.raises(ValidationError, match=r"squared change \(l2\) vanishes at the clean run"):
        IngestConfig(model="x", method="eap", metric="l2").validate()


def test_logit_difference_from_a_prompts_file(tmp_path: Path) -> None:
    model = make_tiny(7)
    cfg = {k: getattr(model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    torch.save({"config": cfg, "state_dict": model.state_dict()}, tmp_path / "m.pt")
    prompts = [{"clean": [1, 2, 3, 4], "corrupted": [5, 6, 7, 8], "target": 9, "incorrect": 10},
               {"clean": [4, 3, 2, 1], "corrupted": [8, 7, 6, 5], "target": 11, "incorrect": 12}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    run = compute_run(IngestConfig(model=str(tmp_path / "m.pt"), task=str(tmp_path / "p.json"), method="patching", metric="logit-diff",
                                   n_prompts=2), tmp_path)
    assert np.isfinite(run.edges["score"]).all() and run.edges["score"].abs().max() > 1e-4
    (tmp_path / "half.json").write_text(json.dumps([prompts[0], {k: v for k, v in prompts[1].items() if k != "incorrect"}]))
    with pytest.raises(TaskError, match="on every prompt or on none"):
        get_task(str(tmp_path / "half.json"), "logit-diff").make_batch(model, 2, 0)
    (tmp_path / "bad.json").write_text(json.dumps([{**prompts[0], "incorrect": 999}]))
    with pytest.raises(TaskError, match="prompt 0 incorrect has token ids outside the vocabulary"):
        get_task(str(tmp_path / "bad.json"), "logit-diff").make_batch(model, 1, 0)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "eap-ig-act", "patching"])
def test_any_metric_callable_works_with_every_method(method: str) -> None:
    """A Python callable as the metric: written to equal the built-in 'logit' metric, it gives the
    built-in scores exactly; a wrong shape is one clear error."""
    from ingest.edges.registry import get_method
    from ingest.model.tasks import logit_metric, with_metric

    model = make_tiny(8)
    base = get_task("induction", "logit")
    batch = base.make_batch(model, 3, 0)
    graph = build_graph(model, "cm")

    def mine(logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        picked = logits.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) - logits.mean(-1)
        return (picked * batch.mask).sum(-1) / batch.mask.sum(-1)

    run = get_method(method)
    custom = run(model, graph, with_metric(base, mine), batch, MethodConfig(steps=3))
    builtin = run(model, graph, base, batch, MethodConfig(steps=3))
    np.testing.assert_allclose(custom["score"], builtin["score"], rtol=1e-5, atol=1e-6)
    assert with_metric(base, logit_metric).name == "induction+custom"
    with pytest.raises(TaskError, match="one value per prompt"):
        run(model, graph, with_metric(base, lambda logits, b: logits.mean()), batch, MethodConfig(steps=2))


def test_scored_positions_from_a_prompts_file(tmp_path: Path) -> None:
    """``positions`` (indices, negative from the end, or "all") with one target per position: the
    batch scores exactly those positions, the metric is their mean, and every method runs on it."""
    model = make_tiny(8)
    prompts = [{"clean": [1, 2, 3, 4, 5], "corrupted": [6, 7, 8, 9, 10], "positions": [1, -1], "target": [11, 12],
                "incorrect": [13, 14]},
               {"clean": [5, 4, 3, 2, 1], "corrupted": [10, 9, 8, 7, 6], "positions": "all", "target": [2, 3, 4, 5, 6],
                "incorrect": [7, 8, 9, 10, 11]}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    task = get_task(str(tmp_path / "p.json"), "logit-diff")
    batch = task.make_batch(model, 2, 0)
    assert batch.mask.tolist() == [[False, True, False, False, True], [True] * 5]
    assert batch.targets[0, [1, 4]].tolist() == [11, 12] and batch.targets[1].tolist() == [2, 3, 4, 5, 6]
    assert batch.incorrect is not None and batch.incorrect[0, [1, 4]].tolist() == [13, 14]
    with torch.no_grad():
        logits = model(batch.clean)
    by_hand = [float(logits[0, 1, 11] - logits[0, 1, 13] + logits[0, 4, 12] - logits[0, 4, 14]) / 2,
               float(sum(logits[1, p, 2 + p] - logits[1, p, 7 + p] for p in range(5))) / 5]
    assert task.metric(logits, batch).tolist() == pytest.approx(by_hand, abs=1e-5)
    for metric in ("logit-diff", "l2"):  # a readout at every listed position
        run = compute_run(IngestConfig(model="induction-2l", task=str(tmp_path / "p.json"), method="patching", metric=metric,
                                       n_prompts=2), tmp_path)
        assert np.isfinite(run.edges["score"]).all() and run.edges["score"].abs().max() > 1e-4


@pytest.mark.parametrize("change,message", [
    ({"positions": [5]}, "prompt 0 positions: 5 is outside the prompt (0..4, or -5..-1 from the end)"),
    ({"positions": [-6]}, "prompt 0 positions: -6 is outside the prompt"),
    ({"positions": [1, -4]}, "prompt 0 positions lists a position twice"),
    ({"positions": "some"}, 'prompt 0 positions must be "all" or a non-empty list'),
    ({"positions": [1, 2]}, "prompt 0 target: one token for 2 scored positions"),
    ({"positions": "all", "target": [1, 2]}, "prompt 0 target: 2 tokens for 5 scored positions"),
    ({"positions": [1, 2], "target": [1, 2], "incorrect": [3]}, "prompt 0 incorrect: 1 tokens for 2 scored positions"),
    ({"positions": [1, 2], "target": [1, 999]}, "prompt 0 target 1 has token ids outside the vocabulary"),
])
def test_bad_positions_are_one_line_naming_prompt_and_field(tmp_path: Path, change: dict[str, object], message: str) -> None:
    model = make_tiny(8)
    (tmp_path / "p.json").write_text(json.dumps([{"clean": [1, 2, 3, 4, 5], "corrupted": [6, 7, 8, 9, 10], "target": 11, **change}]))
    with pytest.raises(TaskError) as err:
        get_task(str(tmp_path / "p.json")).make_batch(model, 1, 0)
    assert message in str(err.value) and "\n" not in str(err.value)
