"""Metrics by name: prob, logit-diff (a per-prompt counterfactual token) and kl (to the clean
distribution), on hand-computed logits and through the edge methods."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.errors import TaskError, ValidationError
from ingest.graph import build_graph
from ingest.jobs import IngestConfig, compute_run
from ingest.methods import MethodConfig, compute_eap_ig, compute_eap_ig_activations, compute_patching
from ingest.tasks import PromptBatch, get_task, kl_metric, logit_diff_metric, prepare_batch, prob_metric
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
    from ingest.methods import get_method
    from ingest.tasks import logit_metric, with_metric

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
