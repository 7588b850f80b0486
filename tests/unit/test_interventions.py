"""Lesions, circuits, composition and probes against constructed ground truth."""

from __future__ import annotations

import pytest
import torch

from atlas.errors import ValidationError
from ingest.edges.interventions import ablated_outputs, circuit_metric, compute_node_lesions, faithfulness
from ingest.edges.methods import all_edges, compute_patching
from ingest.model.graph import build_graph
from ingest.model.tasks import InductionTask
from ingest.toolbox.anatomy import composition_baseline, compute_composition
from ingest.toolbox.probes import compute_probes
from tests.conftest import make_tiny


def test_circuit_extremes_are_clean_and_corrupted(tiny_model: object) -> None:
    task = InductionTask(half=5)
    batch = task.make_batch(tiny_model, 4, 0)
    graph = build_graph(tiny_model, "tiny")
    ablated = ablated_outputs(tiny_model, graph, batch, "corrupt")
    with torch.no_grad():
        clean = float(task.metric(tiny_model(batch.clean), batch).mean())
        corrupt = float(task.metric(tiny_model(batch.corrupted), batch).mean())
    edges = all_edges(graph)
    assert circuit_metric(tiny_model, graph, task, batch, ablated, set(edges)) == pytest.approx(clean, abs=1e-5)
    assert circuit_metric(tiny_model, graph, task, batch, ablated, set()) == pytest.approx(corrupt, abs=1e-5)
    # dropping one edge from the full circuit is exactly patching that edge
    for edge in (edges[3], edges[40], edges[-1]):
        patched = compute_patching(tiny_model, graph, task, batch, edges=[edge])["score"].iloc[0]
        assert circuit_metric(tiny_model, graph, task, batch, ablated, set(edges) - {edge}) - clean == pytest.approx(patched, abs=1e-5)
    faith = faithfulness(tiny_model, graph, task, batch, ablated, set(edges))
    assert faith["faithfulness"] == pytest.approx(1.0, abs=1e-6)


def _model_with_unread_head() -> object:
    """No layer norm; head L1.H1 writes only into dims 0-3, which no later reader (W_U) reads."""
    model = make_tiny(4, normalization=None, attn_only=True)
    with torch.no_grad():
        attn = model.blocks[1].attn
        attn.W_O[1].zero_()
        attn.W_O[1][:, :4] = torch.randn(model.cfg.d_head, 4)
        model.W_U[:4] = 0
    return model


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_lesioning_an_unread_node_changes_nothing(ablation: str) -> None:
    model = _model_with_unread_head()
    task = InductionTask(half=5)
    batch = task.make_batch(model, 4, 0)
    graph = build_graph(model, "un")
    reference = task.make_batch(model, 8, 1).clean
    frame = compute_node_lesions(model, graph, task, batch, ablated_outputs(model, graph, batch, ablation, reference)).set_index("componentId")
    assert abs(frame.loc["un/L1.H1", "effect"]) < 1e-5
    assert frame["effect"].abs().max() > 1e-3  # other lesions do something: the test can fail


def test_zero_lesion_matches_a_hand_written_hook(tiny_model: object) -> None:
    task = InductionTask(half=5)
    batch = task.make_batch(tiny_model, 3, 2)
    graph = build_graph(tiny_model, "tiny")
    frame = compute_node_lesions(tiny_model, graph, task, batch, ablated_outputs(tiny_model, graph, batch, "zero")).set_index("componentId")

    def zero_head(act: torch.Tensor, hook: object) -> torch.Tensor:
        act = act.clone()
        act[:, :, 2] = 0
        return act

    def zero_mlp(act: torch.Tensor, hook: object) -> torch.Tensor:
        return torch.zeros_like(act)

    with torch.no_grad():
        base = float(task.metric(tiny_model(batch.clean), batch).mean())
        head = float(task.metric(tiny_model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)]), batch).mean())
        mlp = float(task.metric(tiny_model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.hook_mlp_out", zero_mlp)]), batch).mean())
    assert frame.loc["tiny/L1.H2", "effect"] == pytest.approx(head - base, abs=1e-5)
    assert frame.loc["tiny/L0.MLP", "effect"] == pytest.approx(mlp - base, abs=1e-5)


def test_ablation_values(tiny_model: object) -> None:
    task = InductionTask(half=5)
    batch = task.make_batch(tiny_model, 4, 0)
    graph = build_graph(tiny_model, "tiny")
    reference = task.make_batch(tiny_model, 6, 1).clean
    mean = ablated_outputs(tiny_model, graph, batch, "mean", reference)
    assert torch.allclose(mean[0], mean[3])
    with pytest.raises(ValidationError):
        ablated_outputs(tiny_model, graph, batch, "mean")
    with pytest.raises(ValidationError):
        ablated_outputs(tiny_model, graph, batch, "shuffle", reference)


def test_composition_ranks_a_built_key_reader_first() -> None:
    """L0.H1 writes into dims 0-7; L1.H2's keys read only dims 0-7: K-composition must rank that pair first."""
    model = make_tiny(6, attn_only=True)
    with torch.no_grad():
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        a0.W_O[1].zero_()
        a0.W_O[1][:, :8] = torch.randn(model.cfg.d_head, 8)
        a1.W_K[2].zero_()
        a1.W_K[2][:8] = torch.randn(8, model.cfg.d_head)
    frame = compute_composition(model, "comp", n_random=100)
    k = frame[frame.channel == "k"].sort_values("score", ascending=False)
    assert (k.iloc[0]["componentId_pre"], k.iloc[0]["componentId_post"]) == ("comp/L0.H1", "comp/L1.H2")
    assert k.iloc[0]["zScore"] > 5
    mean, std = composition_baseline(32, 8, 200)
    assert 0 < mean < 1 and std > 0


def test_probe_finds_a_previous_token_head() -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from ingest.model.zoo import _induction_config, _set_prev_token_head

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**_induction_config()))
    _set_prev_token_head(model)  # hand-set L0.H0 to attend to t-1; everything else random
    frame = compute_probes(model, "probe").set_index("componentId")
    assert frame.loc["probe/L0.H0", "prevTokenScore"] > 0.99
    assert frame["prevTokenScore"].drop("probe/L0.H0").max() < 0.5
    assert len(frame.loc["probe/L0.H0", "topTokens"]) == 5
    assert "duplicateTokenScore" in frame.columns and "probe" in frame.columns


def test_neuron_statistics_on_a_built_neuron() -> None:
    """Neuron 5 of layer 0 is built to fire on token 7 only (ReLU): frequency and receptive field say so."""
    from ingest.toolbox.probes import compute_neuron_stats

    model = make_tiny(8, normalization=None)
    model.cfg.act_fn = "relu"
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    model.blocks[0].mlp.act_fn = SUPPORTED_ACTIVATIONS["relu"]
    with torch.no_grad():
        w_in = model.blocks[0].mlp.W_in
        w_in[:, 5] = 0
        model.blocks[0].mlp.b_in[5] = -1.0
        # pre-activation = 2 cos(x, e7) |x| / |e7| - 1: 1 on token 7, negative unless cos > 0.5 elsewhere
        w_in[:, 5] = 2 * model.W_E[7] / model.W_E[7].norm() ** 2
        model.W_pos.zero_()
        for blk in model.blocks:
            blk.attn.W_O.zero_()
            blk.attn.b_O.zero_()
    frame = compute_neuron_stats(model, "nrn").set_index("componentId")
    row = frame.loc["nrn/L0.N5"]
    assert row["topTokens"][0] == "#7"
    assert 0 < row["frequency"] < 0.2 and row["maxAct"] == pytest.approx(1.0, abs=1e-3)  # pre-activation 1 on token 7
    assert len(frame) == 2 * 64 and frame["frequency"].between(0, 1).all()


def test_role_scores_from_earlier_occurrences() -> None:
    """Duplicate and induction scores on any prompts: attention to earlier occurrences of the current
    token (or the token after them); undefined (NaN) where no token repeats, never a made-up 0.5."""
    from ingest.toolbox.probes import _earlier_occurrence_scores

    tokens = torch.tensor([[5, 6, 5, 6]])
    dup = torch.zeros(1, 2, 4, 4)
    dup[0, 0, 0, 0] = dup[0, 0, 1, 1] = 1
    dup[0, 0, 2, 0] = dup[0, 0, 3, 1] = 1  # head 0: the earlier occurrence
    dup[0, 1, :, :] = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]  # head 1: uniform
    d, i = _earlier_occurrence_scores(dup, tokens)
    assert d[0] == 1.0 and i[0] == 0.0
    assert d[1] == pytest.approx((1 / 3 + 1 / 4) / 2)
    ind = torch.zeros(1, 1, 4, 4)
    ind[0, 0, 2, 1] = ind[0, 0, 3, 2] = 1  # position 2 (token 5, seen at 0) attends to 1; position 3 (token 6, seen at 1) to 2
    assert _earlier_occurrence_scores(ind, tokens)[1][0] == 1.0
    fresh = _earlier_occurrence_scores(dup[:, :1], torch.tensor([[1, 2, 3, 4]]))
    assert torch.isnan(fresh[0]).all() and torch.isnan(fresh[1]).all()


def test_probes_show_tokenizer_strings_and_the_prompts_that_drive_a_component(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from ingest.toolbox.probes import compute_probes, prompt_activations
    from tests.conftest import make_tiny

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1", bos_token="w2").save_pretrained(tmp_path / "tok")
    model = make_tiny(4)
    model.set_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "tok"))  # a local folder: no network
    frame = compute_probes(model, "t", n=6, half=5).set_index("componentId")
    row = frame.loc["t/L1.H2"]
    assert all(t.startswith("w") for t in row["topTokens"]) and "w" in row["topContexts"][0] and "#" not in row["topContexts"][0]
    assert len(row["topPrompts"]) == 5 and row["topPrompts"][0].startswith("w")
    tokens = torch.randint(0, 50, (7, 9), generator=torch.Generator().manual_seed(0))
    acts = prompt_activations(model, "t", tokens)
    assert len(acts) == 7 * (2 * 4 + 2) and set(acts["prompt"]) == set(range(7))
    top = acts[acts["componentId"] == "t/L0.MLP"].sort_values("maxAct").iloc[-1]
    assert top["text"] == model.to_string(tokens[top["prompt"]]) and 0 <= top["maxPos"] < 9
