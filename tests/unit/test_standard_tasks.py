"""The standard tasks build their prompts from the model's own tokenizer: a byte-level BPE trained here
on the tasks' words, saved with a tiny random GPT-2 as a Hugging Face folder and loaded as any model is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from atlas.errors import TaskError
from ingest.edges.methods import MethodConfig, compute_eap_ig, compute_patching
from ingest.model import standard_tasks as st
from ingest.model.graph import build_graph
from ingest.model.tasks import get_task, preferred_metric, prob_diff_metric

pytestmark = pytest.mark.slow  # trains a tokenizer and loads a Hugging Face folder (seconds)


def _corpus() -> list[str]:
    words = [*st.NAMES, *st.MALE, *st.FEMALE, *st.PLACES, *st.OBJECTS, *st.EVENTS, *st.PARAM_NAMES, "is", "are", "he", "she",
             *(w for pair in st.SVA_NOUNS for w in pair), "17"]
    lines = [" ".join(f" {w}" for w in words)] * 20
    lines += [t.replace("[", "").replace("]", "") for t in (*st.IOI_TEMPLATES, *st.GT_TEMPLATES, *st.SVA_TEMPLATES, *st.GENDER_TEMPLATES,
                                                             *st.DOCSTRING_TEMPLATES)] * 20
    lines += [f"{y:02d}" for y in range(100)] * 20 + ["The war lasted from the year 17"] * 20
    return lines


def hf_folder(folder: Path, vocab_size: int = 4000) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False)
    folder.mkdir(parents=True)
    bpe.save(str(folder / "bpe.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "bpe.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=96, n_embd=32, n_layer=2, n_head=4)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_with_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ingest.model.loading import load_model

    folder = hf_folder(tmp_path_factory.mktemp("hf") / "tiny-gpt2")
    return load_model(str(folder), folder.parent, device="cpu").model


def _word(model: Any, token: int) -> str:
    return str(model.tokenizer.decode([token]))


def test_ioi_prompts_follow_the_paper(gpt2_with_tokenizer: Any) -> None:
    model = gpt2_with_tokenizer
    batch = get_task("ioi", "logit-diff").make_batch(model, 12, 0)
    names = {f" {n}" for n in st.NAMES}
    io, s = batch.targets[:, -1], batch.incorrect[:, -1]
    for i in range(12):
        clean, bad = batch.clean[i].tolist(), batch.corrupted[i].tolist()
        assert _word(model, int(io[i])) in names and _word(model, int(s[i])) in names and io[i] != s[i]
        assert clean.count(int(s[i])) == 2 and clean.count(int(io[i])) == 1  # the subject is named twice, the IO once
        order = [t for t in clean if t in (int(io[i]), int(s[i]))]
        assert order == ([int(s[i]), int(io[i]), int(s[i])] if i % 2 == 0 else [int(io[i]), int(s[i]), int(s[i])])  # BABA, ABBA
        changed = [p for p, (a, b) in enumerate(zip(clean, bad)) if a != b]
        assert len(changed) == 3  # exactly the three name slots
        replaced = [bad[p] for p in changed]
        assert len(set(replaced)) == 3 and not {int(io[i]), int(s[i])} & set(replaced)  # ABC: three new, different names
    assert batch.clean.shape == batch.corrupted.shape and batch.mask[:, -1].all() and batch.mask.sum() == 12
    assert preferred_metric("ioi") == "logit-diff"


def test_greater_than_corrupts_to_01_and_scores_years_above(gpt2_with_tokenizer: Any) -> None:
    model = gpt2_with_tokenizer
    batch = get_task("greater-than", "prob-diff").make_batch(model, 10, 1)
    tok = model.tokenizer
    ids = {f"{y:02d}": tok.encode(f"{y:02d}", add_special_tokens=False)[0] for y in range(100)}
    for i in range(10):
        clean, bad = batch.clean[i].tolist(), batch.corrupted[i].tolist()
        changed = [p for p, (a, b) in enumerate(zip(clean, bad)) if a != b]
        assert len(changed) == 1 and bad[changed[0]] == ids["01"]
        yy = int(tok.decode([clean[changed[0]]]))
        good, badset = batch.meta["good"][i], batch.meta["bad"][i]
        assert all(bool(good[ids[f"{y:02d}"]]) == (y > yy) for y in range(100))
        assert all(bool(badset[ids[f"{y:02d}"]]) == (y <= yy) for y in range(100))
        assert tok.decode(clean[-2:]) == " year 17"
    logits = torch.full((10, batch.clean.shape[1], model.cfg.d_vocab), -30.0)
    logits[:, -1, ids["99"]] = 30.0  # certain of 1799: above every start year
    assert torch.allclose(prob_diff_metric(logits, batch), torch.ones(10), atol=1e-5)
    assert preferred_metric("greater-than") == "prob-diff"


def test_docstring_sva_and_gender_corrupt_as_their_papers_do(gpt2_with_tokenizer: Any) -> None:
    model = gpt2_with_tokenizer
    doc = get_task("docstring", "logit-diff").make_batch(model, 6, 2)
    for i in range(6):
        clean, bad = doc.clean[i].tolist(), doc.corrupted[i].tolist()
        target = int(doc.targets[i, -1])
        assert clean.count(target) == 1 and target not in bad  # C is named in the def only, and the corrupted def names another
        assert model.tokenizer.decode(clean[-2:]).endswith(":param")
        changed = [p for p, (a, b) in enumerate(zip(clean, bad)) if a != b]
        assert len(changed) == 3 and max(changed) < clean.index(model.tokenizer.encode(":", add_special_tokens=False)[0])
    sva = get_task("sva", "logit-diff").make_batch(model, 8, 3)
    is_, are = (model.tokenizer.encode(f" {w}", add_special_tokens=False)[0] for w in ("is", "are"))
    plural = {f" {p}" for _, p in st.SVA_NOUNS}
    for i in range(8):
        subject = next(t for t in batch_words(model, sva.clean[i]) if t.strip() in {w for pair in st.SVA_NOUNS for w in pair})
        flipped = next(t for t in batch_words(model, sva.corrupted[i]) if t.strip() in {w for pair in st.SVA_NOUNS for w in pair})
        assert (subject in plural) != (flipped in plural)
        assert int(sva.targets[i, -1]) == (are if subject in plural else is_) and int(sva.incorrect[i, -1]) == (is_ if subject in plural else are)
    gender = get_task("gender", "logit-diff").make_batch(model, 8, 4)
    he, she = (model.tokenizer.encode(f" {w}", add_special_tokens=False)[0] for w in ("he", "she"))
    for i in range(8):
        name = next(t.strip() for t in batch_words(model, gender.clean[i]) if t.strip() in (*st.MALE, *st.FEMALE))
        other = next(t.strip() for t in batch_words(model, gender.corrupted[i]) if t.strip() in (*st.MALE, *st.FEMALE))
        assert (name in st.MALE) != (other in st.MALE)
        assert int(gender.targets[i, -1]) == (he if name in st.MALE else she)


def batch_words(model: Any, row: torch.Tensor) -> list[str]:
    return [model.tokenizer.decode([t]) for t in row.tolist()]


@pytest.mark.parametrize("task", ["ioi", "greater-than", "docstring", "sva", "gender"])
def test_every_standard_task_is_mapped_end_to_end(gpt2_with_tokenizer: Any, task: str) -> None:
    model = gpt2_with_tokenizer
    t = get_task(task, preferred_metric(task))
    batch = t.make_batch(model, 4, 0)
    graph = build_graph(model, "tiny-gpt2")
    fast = compute_eap_ig(model, graph, t, batch, MethodConfig(steps=3))
    exact = compute_patching(model, graph, t, batch)
    assert len(fast) == len(exact) > 0 and fast["score"].abs().max() > 0 and exact["score"].abs().max() > 0


def test_too_few_single_token_words_is_one_line(tmp_path: Path) -> None:
    """A tokenizer that splits every name: the task refuses in one line, naming how many it found."""
    from ingest.model.loading import load_model

    model = load_model(str(hf_folder(tmp_path / "chars", vocab_size=300)), tmp_path, device="cpu").model
    with pytest.raises(TaskError, match=r"task ioi needs at least 5 names that are one token for this model's tokenizer; 0 of 99 are"):
        get_task("ioi").make_batch(model, 4, 0)


def test_a_model_without_a_tokenizer_is_told_why(tiny_model: Any) -> None:
    with pytest.raises(TaskError, match="builds its prompts with the model's tokenizer"):
        get_task("sva").make_batch(tiny_model, 4, 0)
