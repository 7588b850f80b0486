from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atlas.errors import ModelError, TaskError
from ingest.models import load_model
from ingest.tasks import InductionTask, PromptBatch, get_task


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
    assert loaded.model_id == "mymodel"
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(tokens), tiny_model(tokens))
    single = tmp_path / "single.pt"
    torch.save({"config": cfg, "state_dict": tiny_model.state_dict()}, single)
    assert load_model(str(single), tmp_path).model_id == "single"


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"), tmp_path)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_model(str(corrupt), tmp_path)
    with pytest.raises(ModelError, match="unknown model"):
        load_model("definitely-not-a-model", tmp_path)
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        load_model("gpt2", tmp_path)  # a real TransformerLens name whose weights are not cached here
