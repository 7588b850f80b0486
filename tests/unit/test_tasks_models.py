from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atlas.errors import ModelError, TaskError
from ingest.model.loading import load_model
from ingest.model.tasks import InductionTask, PromptBatch, get_task
from tests.conftest import make_tiny


def test_induction_batch_shape_and_corruption(tiny_model: object) -> None:
    batch = InductionTask(half=6).make_batch(tiny_model, 5, 0)
    assert batch.clean.shape == batch.corrupted.shape == (5, 12)
    assert torch.equal(batch.clean[:, :6], batch.clean[:, 6:])  # a repeat
    assert torch.equal(batch.corrupted[:, 6:], batch.clean[:, 6:])  # second half kept
    assert not torch.equal(batch.corrupted[:, :6], batch.clean[:, :6])  # first half resampled
    assert batch.mask.sum(1).tolist() == [5] * 5
    again = InductionTask(half=6).make_batch(tiny_model, 5, 0)
    assert torch.equal(batch.clean, again.clean)  # seeded


def test_mismatched_lengths_are_refused() -> None:
    a = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TaskError, match="differ in shape"):
        PromptBatch(a, torch.zeros(2, 6, dtype=torch.long), a, a.bool() | True)


def test_prompt_file_task(tmp_path: Path, tiny_model: object) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps([{"clean": [1, 2, 3], "corrupted": [4, 5, 6], "target": 7}] * 3))
    batch = get_task(str(good)).make_batch(tiny_model, 2, 0)
    assert batch.clean.shape == (2, 3) and batch.targets[0, -1] == 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"clean": [1, 2, 3], "corrupted": [4, 5], "target": 7}]))
    with pytest.raises(TaskError, match="lengths differ"):
        get_task(str(bad)).make_batch(tiny_model, 2, 0)
    with pytest.raises(TaskError, match="does not exist"):
        get_task(str(tmp_path / "missing.json"))
    with pytest.raises(TaskError, match="unknown task"):
        get_task("ioi-but-not-yet")


def test_model_from_files(tmp_path: Path, tiny_model: object) -> None:
    folder = tmp_path / "mymodel"
    folder.mkdir()
    cfg = {k: getattr(tiny_model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(tiny_model.state_dict(), folder / "model.pt")
    loaded = load_model(str(folder), tmp_path)
    assert loaded.model_id == f"mymodel-{loaded.weights_hash[:8]}"
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(tokens), tiny_model(tokens))
    single = tmp_path / "single.pt"
    torch.save({"config": cfg, "state_dict": tiny_model.state_dict()}, single)
    again = load_model(str(single), tmp_path)
    # the same weights in another layout have the same hash; the name part is the file's
    assert again.weights_hash == loaded.weights_hash and again.model_id == f"single-{loaded.weights_hash[:8]}"
    assert load_model(str(single), tmp_path, model_id="mine").model_id == "mine"


TINY_FIELDS = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")


def _config(model: object) -> dict:
    return {k: getattr(model.cfg, k) for k in TINY_FIELDS}


def test_model_identity_follows_the_weights(tmp_path: Path) -> None:
    """Two files whose configs share a model_name are two models; one file by two paths is one."""
    from tests.conftest import make_tiny

    a, b = make_tiny(1), make_tiny(2)
    (tmp_path / "x").mkdir()
    for name, model in (("a.pt", a), ("x/b.pt", b)):
        torch.save({"config": {**_config(model), "model_name": "shared"}, "state_dict": model.state_dict()}, tmp_path / name)
    la, lb = load_model(str(tmp_path / "a.pt"), tmp_path), load_model(str(tmp_path / "x" / "b.pt"), tmp_path)
    assert la.model_id.startswith("shared-") and lb.model_id.startswith("shared-") and la.model_id != lb.model_id
    other_spelling = load_model(str(tmp_path / "x" / ".." / "a.pt"), tmp_path)
    assert other_spelling.model_id == la.model_id and other_spelling.source == la.source
    # the hash sees every weight and the config fields that change the function
    from ingest.model.loading import weights_hash

    before = weights_hash(a)
    with torch.no_grad():
        a.blocks[1].mlp.b_out[3] += 1e-6
    assert weights_hash(a) != before
    c = make_tiny(1)
    c.cfg.act_fn = "relu"
    assert weights_hash(c) != before


def test_loading_errors_say_why(tmp_path: Path) -> None:
    import numpy as np

    from tests.conftest import make_tiny

    model = make_tiny(3)
    cfg, state = _config(model), model.state_dict()
    # numpy scalars and a dtype string in the config: loaded (they are sound)
    numpyish = tmp_path / "numpy.pt"
    torch.save({"config": {**cfg, "d_model": np.int64(32), "eps": np.float64(1e-5), "dtype": "float32"}, "state_dict": state}, numpyish)
    loaded = load_model(str(numpyish), tmp_path)
    assert loaded.model.cfg.d_model == 32 and loaded.model.cfg.dtype == torch.float32
    assert loaded.weights_hash == load_model(str(_save(tmp_path / "plain.pt", cfg, state)), tmp_path).weights_hash
    # 'cfg' is accepted for 'config'
    assert load_model(str(_save(tmp_path / "cfgkey.pt", cfg, state, key="cfg")), tmp_path).weights_hash == loaded.weights_hash

    def refused(path: Path, *needles: str) -> str:
        with pytest.raises(ModelError) as err:
            load_model(str(path), tmp_path)
        message = str(err.value)
        assert "\n" not in message and all(n in message for n in needles), message
        return message

    # a state dict that does not fit: the keys and shapes are named
    refused(_save(tmp_path / "wide.pt", {**cfg, "d_mlp": 128}, state), "shape mismatch", "blocks.0.mlp.W_in", "(32, 64) in the file", "(32, 128)")
    short = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    refused(_save(tmp_path / "short.pt", cfg, short), "missing key", "blocks.1.")
    refused(_save(tmp_path / "extra.pt", cfg, {**state, "surprise.weight": torch.zeros(2)}), "unexpected key", "surprise.weight")
    refused(_save(tmp_path / "dtype.pt", {**cfg, "dtype": "float33"}, state), "'dtype'", "float33")
    refused(_save(tmp_path / "field.pt", {**cfg, "n_layerz": 2}, state), "'n_layerz'")
    refused(_save(tmp_path / "lacks.pt", {k: v for k, v in cfg.items() if k != "d_head"}, state), "'d_head'")
    blob = tmp_path / "layout.pt"
    torch.save({"weights": state, "settings": cfg}, blob)
    refused(blob, "'config' (or 'cfg')", "'settings'", "'weights'")
    import pathlib

    code = tmp_path / "object.pt"
    torch.save({"config": cfg, "state_dict": state, "where": pathlib.PurePosixPath("/x")}, code)
    refused(code, "PurePosixPath", "does not unpickle")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    refused(folder, "needs config.json", "found: config.json")


def _save(path: Path, cfg: dict, state: dict, key: str = "config") -> Path:
    torch.save({key: cfg, "state_dict": state}, path)
    return path


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"), tmp_path)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_model(str(corrupt), tmp_path)
    with pytest.raises(ModelError, match="unknown model"):
        load_model("definitely-not-a-model", tmp_path)
    with pytest.MonkeyPatch.context() as env:  # downloads off: a real TransformerLens name, not cached here
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("HF_HOME", str(tmp_path / "hf"))
        with pytest.raises(ModelError, match="gpt2 are not in the local Hugging Face cache and downloads are off"):
            load_model("gpt2", tmp_path)


def _save_hf(kind: str, folder: Path, tokenizer: bool = False) -> object:
    """A tiny random Hugging Face model written by transformers' own save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = {
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=32)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=16,
                                                      intermediate_size=32, vocab_size=40, max_position_embeddings=32)),
        "llama-gqa": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=16,
                                                          intermediate_size=32, vocab_size=40, max_position_embeddings=32)),
        "neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                                                         vocab_size=40, max_position_embeddings=32)),
    }[kind]()
    model.eval()
    model.save_pretrained(folder)
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(40)}, unk_token="w0"))
        words.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1", bos_token="w2").save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "llama", "llama-gqa", "neox"])
def test_hugging_face_folders_load_and_compute_what_they_compute(kind: str, tmp_path: Path) -> None:
    """GPT-2 (standard positions, LN), Llama (rotary, RMSNorm, gated MLP; also with grouped-query
    attention) and GPT-NeoX (rotary, parallel attention + MLP) folders written by transformers load,
    with the logits of the original."""
    from ingest.edges.methods import compute_eap, compute_patching
    from ingest.model.graph import build_graph

    folder = tmp_path / kind  # the folder's name may contain a family's name: it must not matter
    hf = _save_hf(kind, folder, tokenizer=kind == "gpt2")
    loaded = load_model(str(folder), tmp_path)
    tokens = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.no_grad():
        assert (loaded.model(tokens) - hf(tokens).logits).abs().max() < 1e-4
    assert loaded.model_id.startswith(f"{kind}-") and loaded.source.startswith("hf-folder:")
    assert (loaded.model.tokenizer is not None) == (kind == "gpt2")
    if kind == "gpt2":
        assert loaded.model.to_string(torch.tensor([5, 6])) == "w5 w6"
    # and the methods run on it (exactness per architecture option: tests/unit/test_architectures.py)
    task = InductionTask(half=4)
    batch = task.make_batch(loaded.model, 2, 0)
    graph = build_graph(loaded.model, loaded.model_id)
    assert len(compute_eap(loaded.model, graph, task, batch)) == len(compute_patching(loaded.model, graph, task, batch)) > 0


def test_a_folder_that_is_neither_layout_says_what_it_found(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "weights.npz").write_bytes(b"")
    with pytest.raises(ModelError, match="save_pretrained folder.*found: config.json, weights.npz"):
        load_model(str(folder), tmp_path)


def test_targets_outside_the_output_vocabulary_are_one_line(tmp_path: Path) -> None:
    """A model predicting fewer tokens than it reads (d_vocab_out < d_vocab): a target it cannot
    predict is refused by name, not an index error deep in the metric."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from atlas.errors import ValidationError
    from ingest.jobs.run import IngestConfig, compute_run

    cfg = {"n_layers": 1, "d_model": 16, "n_ctx": 16, "d_head": 4, "n_heads": 2, "d_vocab": 30, "d_vocab_out": 5, "attn_only": True}
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    torch.save({"config": cfg, "state_dict": model.state_dict()}, tmp_path / "narrow.pt")
    with pytest.raises(ValidationError, match=r"targets reach token \d+, but narrow-[0-9a-f]{8} predicts 5 output tokens"):
        compute_run(IngestConfig(model=str(tmp_path / "narrow.pt"), method="eap", n_prompts=2), tmp_path)


def test_hub_weight_processing_leaves_edge_scores_alone_but_for_the_raw_target_logit() -> None:
    """Hub names load with TransformerLens's default processing (folded norms, centred writing
    weights and unembedding); the README says edge scores do not move under it except with the raw
    ``target-logit`` metric, which the centred unembedding shifts."""
    import copy

    from transformer_lens import HookedTransformer

    from ingest.edges.methods import compute_eap, compute_patching
    from ingest.model.graph import build_graph
    from ingest.model.tasks import prepare_batch

    plain = make_tiny(3).to(torch.float64)
    processed = HookedTransformer(copy.deepcopy(plain.cfg)).to(torch.float64)
    processed.load_and_process_state_dict(plain.state_dict(), fold_ln=True, center_writing_weights=True, center_unembed=True)
    processed.eval()
    assert processed.cfg.normalization_type == "LNPre"
    batch = InductionTask(half=4).make_batch(plain, 4, 0)
    for metric in ("logit", "logprob", "kl", "target-logit"):
        task = InductionTask(half=4, metric_name=metric)
        for method in (compute_patching, compute_eap):
            a = method(plain, build_graph(plain, "a"), task, prepare_batch(plain, batch, metric))
            b = method(processed, build_graph(processed, "b"), task, prepare_batch(processed, batch, metric))
            gap = (a.score.to_numpy() - b.score.to_numpy()).__abs__().max()
            assert (gap > 1e-3) if metric == "target-logit" else (gap < 1e-6), (metric, method.__name__, gap)
