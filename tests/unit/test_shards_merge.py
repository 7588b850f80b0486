"""The exact merge of shards: a size-weighted mean of shard means is the mean over all prompts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas.errors import ValidationError
from ingest.edges.shards import merge_prompt_shards, plan_ranges


def _frame(scores: np.ndarray, edges: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Edges scored by the mean over prompts of ``scores[prompt, edge]``, with the per-prompt lists."""
    return pd.DataFrame({"componentId_pre": [e[0] for e in edges], "componentId_post": [e[1] for e in edges],
                         "channel": [e[2] for e in edges], "score": scores.mean(axis=0),
                         "promptScores": [scores[:, j].tolist() for j in range(scores.shape[1])]})


def test_weighted_merge_equals_the_mean_over_every_prompt() -> None:
    rng = np.random.default_rng(0)
    edges = [("m/EMBED", "m/L0.H0", "q"), ("m/EMBED", "m/L0.H0", "k"), ("m/L0.H0", "m/LOGITS", "in")]
    per_prompt = rng.standard_cauchy((11, len(edges)))
    ranges = plan_ranges(11, 3, "prompts")
    assert [b - a for a, b in ranges] == [4, 4, 3] and ranges[0][0] == 0 and ranges[-1][1] == 11
    frames = [_frame(per_prompt[a:b], edges) for a, b in ranges]
    merged = merge_prompt_shards(frames, [b - a for a, b in ranges])
    whole = _frame(per_prompt, edges)
    assert merged[["componentId_pre", "componentId_post", "channel"]].equals(whole[["componentId_pre", "componentId_post", "channel"]])
    np.testing.assert_allclose(merged["score"], whole["score"], rtol=1e-12, atol=1e-12)
    assert merged["promptScores"].tolist() == whole["promptScores"].tolist()  # the prompts' own order, end to end
    # an unweighted mean of the shard means would be wrong here (shards of 4, 4 and 3 prompts)
    naive = np.mean([f["score"].to_numpy() for f in frames], axis=0)
    assert np.abs(naive - whole["score"].to_numpy()).max() > 1e-3


def test_an_edge_missing_from_a_shard_counts_zero_there_and_positions_are_keys() -> None:
    a = pd.DataFrame({"componentId_pre": ["m/EMBED", "m/EMBED"], "componentId_post": ["m/L0.H0"] * 2, "channel": ["k", "k"],
                      "srcPos": [0, 1], "dstPos": [1, 1], "score": [2.0, 4.0]})
    b = a.iloc[[1]].assign(score=[1.0])
    merged = merge_prompt_shards([a, b], [1, 3])
    assert merged["srcPos"].tolist() == [0, 1]
    assert merged["score"].tolist() == [pytest.approx(2.0 / 4), pytest.approx((4.0 + 3 * 1.0) / 4)]


@pytest.mark.parametrize("n,shards", [(4, 5), (4, 0)])
def test_bad_shard_counts_are_refused(n: int, shards: int) -> None:
    with pytest.raises(ValidationError, match="shards"):
        plan_ranges(n, shards, "prompts")


@pytest.mark.parametrize("method,extra", [("eap-ig", {"per_prompt": True}), ("patching", {}), ("eap", {"per_position": True})])
def test_passes_within_the_activation_budget_equal_one_pass(tmp_path: object, monkeypatch: pytest.MonkeyPatch, method: str,
                                                           extra: dict) -> None:
    from ingest.jobs.run import IngestConfig, compute_run
    from ingest.model.device import BUDGET_ENV

    config = IngestConfig(model="induction-2l", method=method, n_prompts=7, **extra)
    whole = compute_run(config, tmp_path)  # type: ignore[arg-type]
    assert whole.shard_plan is None  # 7 prompts of a tiny model: one pass
    monkeypatch.setenv(BUDGET_ENV, "100k")  # room for about one prompt's activations per pass
    passes = compute_run(config, tmp_path)  # type: ignore[arg-type]
    assert passes.shard_plan is not None and passes.shard_plan["passes"] >= 3
    key = ["componentId_pre", "componentId_post", "channel"]
    assert whole.edges[key].equals(passes.edges[key])
    scale = float(whole.edges["score"].abs().max())
    np.testing.assert_allclose(passes.edges["score"], whole.edges["score"], rtol=0, atol=1e-5 * scale)
    if extra.get("per_prompt"):
        np.testing.assert_allclose(np.array(passes.edges["promptScores"].tolist()), np.array(whole.edges["promptScores"].tolist()),
                                   rtol=0, atol=1e-5 * scale * 10)
    if extra.get("per_position"):
        assert whole.positional is not None and passes.positional is not None
        assert len(whole.positional) == len(passes.positional)


def test_a_bad_activation_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.model.device import BUDGET_ENV, activation_budget

    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValidationError, match=BUDGET_ENV):
        activation_budget()
    monkeypatch.setenv(BUDGET_ENV, "3g")
    assert activation_budget() == 3 * 2**30


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_the_api_splits_into_passes_by_its_budget_whatever_the_caller_asks(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compute_eap``/``compute_eap_ig`` called directly with more prompts than one pass's budget
    (``MethodConfig.activation_budget``, else ``$ATLAS_ACTIVATION_BUDGET``) compute in passes, merged
    to the same scores and per-prompt scores as one pass."""
    import dataclasses

    from ingest.edges.methods import MethodConfig
    from ingest.edges.registry import get_method
    from ingest.edges.shards import pass_bytes_per_prompt
    from ingest.model.device import BUDGET_ENV
    from ingest.model.graph import build_graph
    from ingest.model.tasks import InductionTask
    from tests.conftest import make_tiny

    model = make_tiny()
    task = InductionTask(half=6)
    batch = task.make_batch(model, 8, 0)
    graph = build_graph(model, "tiny")
    config = MethodConfig(steps=2, per_prompt=True, activation_budget=10**12)
    calls: list[int] = []
    whole = get_method(method)(model, graph, task, batch, config, progress=calls.append)
    one_pass = len(calls)
    calls.clear()
    per_prompt = pass_bytes_per_prompt(model, graph, batch)
    split = get_method(method)(model, graph, task, batch, dataclasses.replace(config, activation_budget=3 * per_prompt), progress=calls.append)
    assert len(calls) == 3 * one_pass  # passes of 3, 3 and 2 prompts
    key = ["componentId_pre", "componentId_post", "channel"]
    assert whole[key].equals(split[key])
    scale = float(np.abs(whole["score"]).max())
    np.testing.assert_allclose(split["score"], whole["score"], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(np.array(split["promptScores"].tolist()), np.array(whole["promptScores"].tolist()), rtol=0, atol=1e-5 * scale)
    calls.clear()
    monkeypatch.setenv(BUDGET_ENV, str(4 * per_prompt))  # the environment's budget when the call names none
    get_method(method)(model, graph, task, batch, dataclasses.replace(config, activation_budget=None), progress=calls.append)
    assert len(calls) == 2 * one_pass
