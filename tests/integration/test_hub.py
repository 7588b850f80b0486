"""TransformerLens names through the Hugging Face cache: downloaded when online, read from the cache
offline (``--offline`` or ``HF_HUB_OFFLINE=1``), one line when neither works. The hub is a local
server the test builds (:mod:`tests.hub`), holding a tiny random GPT-NeoX saved by ``transformers``
under the repository TransformerLens resolves ``pythia-70m`` to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from tests.hub import LocalHub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hub")
    repo = root / "EleutherAI" / "pythia-70m"
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                                     vocab_size=40, max_position_embeddings=32)).save_pretrained(repo)
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(40)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1", bos_token="w2").save_pretrained(repo)
    server = LocalHub(root)
    yield server
    server.close()


def _branch(hub: LocalHub, step: int) -> Path:
    """Serve a checkpoint branch ``step{step}`` of the hub's pythia-70m: a model of its own (seeded by
    the step), with main's tokenizer."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    repo = hub.root / "EleutherAI" / "pythia-70m"
    branch = repo / "@revisions" / f"step{step}"
    torch.manual_seed(step)
    GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                                     vocab_size=40, max_position_embeddings=32)).save_pretrained(branch)
    for f in repo.iterdir():
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens")):
            (branch / f.name).write_bytes(f.read_bytes())
    return branch


def _atlas(home: Path, hf_home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    environ.update(HF_HOME=str(hf_home), **env)
    return subprocess.run([sys.executable, "-m", "atlas_cli", *args, "--home", str(home)], capture_output=True, text=True,
                          timeout=600, env=environ)


def test_hub_names_download_through_the_cache_and_then_load_offline(embedded: StoreSettings, hub: LocalHub, tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    ingest = ("ingest", "--model", "pythia-70m", "--method", "eap", "--prompts", "2", "--run-id", "hub-run", "--json", "--quiet")
    first = _atlas(embedded.home, hf_home, *ingest, HF_ENDPOINT=hub.url)
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["status"] == "written"  # stdout holds the JSON alone (TransformerLens's chatter goes to stderr)
    assert hub.downloaded("model.safetensors") and hub.downloaded("config.json") and hub.downloaded("tokenizer.json")
    with Store.connect(embedded, quiet=True) as s:
        run = cx.fetch_run(s, "hub-run")
        model = cx.fetch_model(s, "pythia-70m")
    assert run.model_id == "pythia-70m" and model.source == "pretrained:EleutherAI/pythia-70m"
    hub.close()  # no network from here on
    asked = len(hub.requests)
    again = _atlas(embedded.home, hf_home, *ingest, "--offline", HF_ENDPOINT=hub.url)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["status"] == "unchanged" and len(hub.requests) == asked
    # HF_HUB_OFFLINE=1 alone does the same; and the weights that arrived compute what the hub's model
    # computes (TransformerLens's default processing of hub names keeps every log-probability)
    probe = ("import sys, torch; from pathlib import Path; from ingest.model.loading import load_model; "
             "m = load_model('pythia-70m', Path(sys.argv[1])).model; "
             "print(torch.log_softmax(m(torch.tensor([[1, 5, 9, 13, 2, 7]])), -1).flatten().tolist())")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_ENDPOINT=hub.url)
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transformers import GPTNeoXForCausalLM

    served = GPTNeoXForCausalLM.from_pretrained(hub.root / "EleutherAI" / "pythia-70m")
    with torch.no_grad():
        expected = torch.log_softmax(served(torch.tensor([[1, 5, 9, 13, 2, 7]])).logits, -1).flatten()
    assert (torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1])) - expected).abs().max() < 1e-4
    assert len(hub.requests) == asked

    with Store.connect(embedded, quiet=True) as s:
        before = cx.count_graph(s)
    empty = _atlas(embedded.home, tmp_path / "empty-hf", *ingest, "--run-id", "never", "--offline")
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "Traceback" not in empty.stderr
    assert "EleutherAI/pythia-70m are not in the local Hugging Face cache" in empty.stderr and "--offline" in empty.stderr
    with Store.connect(embedded, quiet=True) as s:
        assert cx.count_graph(s) == before


def test_a_hub_models_training_checkpoint_is_a_model_of_its_own(embedded: StoreSettings, hub: LocalHub, tmp_path: Path) -> None:
    """``pythia-70m@step1000`` loads the hub's ``step1000`` branch (another model there), under the id
    ``pythia-70m/step-1000`` beside the final ``pythia-70m``; offline it loads from the cache; a step
    Pythia never saved is one line naming the nearest."""
    from transformers import GPTNeoXForCausalLM

    hub = LocalHub(hub.root)  # the module's server was closed by the offline test: the same repositories, served again
    branch = _branch(hub, 1000)
    hf_home = tmp_path / "hf"
    ingest = ("ingest", "--model", "pythia-70m@step1000", "--method", "eap", "--prompts", "2", "--run-id", "hub-step", "--json", "--quiet")
    first = _atlas(embedded.home, hf_home, *ingest, HF_ENDPOINT=hub.url)
    assert first.returncode == 0, first.stderr[-2000:]
    assert any("/resolve/step1000/" in r for r in hub.requests)
    with Store.connect(embedded, quiet=True) as s:
        run = cx.fetch_run(s, "hub-step")
        model = cx.fetch_model(s, "pythia-70m/step-1000")
    assert run.model_id == "pythia-70m/step-1000" and model is not None and model.source == "pretrained:EleutherAI/pythia-70m@step1000"
    probe = ("import sys, torch; from pathlib import Path; from ingest.model.loading import load_model; "
             "m = load_model('pythia-70m@step1000', Path(sys.argv[1])).model; "
             "print(torch.log_softmax(m(torch.tensor([[1, 5, 9, 13, 2, 7]])), -1).flatten().tolist())")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = GPTNeoXForCausalLM.from_pretrained(branch)
    with torch.no_grad():
        expected = torch.log_softmax(served(torch.tensor([[1, 5, 9, 13, 2, 7]])).logits, -1).flatten()
    assert (torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1])) - expected).abs().max() < 1e-4  # the branch's weights, not main's
    bad = _atlas(embedded.home, hf_home, "ingest", "--model", "pythia-70m@step1001", "--run-id", "never", "--offline")
    assert bad.returncode == 2 and "no checkpoint at step 1001" in bad.stderr and bad.stderr.count("\n") == 1
    hub.close()


def test_timelines_and_development_follow_a_hub_models_checkpoints(embedded: StoreSettings, hub: LocalHub, tmp_path: Path) -> None:
    """``compare --checkpoints NAME --steps ...`` and ``development --model NAME --steps ...`` load each
    step's revision from the hub (one run and one model id per step), compare each with the last, and
    place the steps where the command reports them; a list of ``NAME@stepN`` does the same."""
    hub = LocalHub(hub.root)
    for step in (0, 1000, 2000):
        _branch(hub, step)
    hf_home = tmp_path / "hf"
    timeline = _atlas(embedded.home, hf_home, "compare", "--checkpoints", "pythia-70m", "--steps", "0,1000,2000", "--task", "induction", "--method", "eap",
                      "--prompts", "2", "--top", "5", "--json", "--quiet", HF_ENDPOINT=hub.url)
    assert timeline.returncode == 0, timeline.stderr[-2000:]
    rows = json.loads(timeline.stdout)
    assert [r["step"] for r in rows] == [0, 1000, 2000] and [r["model"] for r in rows] == [f"pythia-70m@step{s}" for s in (0, 1000, 2000)]
    assert rows[-1]["weightedJaccard"] == pytest.approx(1.0) and rows[0]["weightedJaccard"] < 1.0  # another model's weights at step 0
    for step in (0, 1000, 2000):
        assert any(f"/resolve/step{step}/" in r for r in hub.requests)
    with Store.connect(embedded, quiet=True) as s:
        assert [cx.fetch_run(s, r["runId"]).model_id for r in rows] == [f"pythia-70m/step-{s}" for s in (0, 1000, 2000)]
    listed = _atlas(embedded.home, hf_home, "compare", "pythia-70m@step1000", "pythia-70m@step2000", "--task", "induction", "--method", "eap", "--prompts", "2",
                    "--top", "5", "--json", "--quiet", HF_ENDPOINT=hub.url)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [(r["step"], r["runId"]) for r in json.loads(listed.stdout)] == [(r["step"], r["runId"]) for r in rows[1:]]  # the same runs, reused

    dev = _atlas(embedded.home, hf_home, "development", "--model", "pythia-70m", "--steps", "0,1000,2000", "--task", "induction", "--method", "eap",
                 "--prompts", "2", "--top", "3", "--json", "--quiet", HF_ENDPOINT=hub.url)
    assert dev.returncode == 0, dev.stderr[-2000:]
    out = json.loads(dev.stdout)
    assert [c["step"] for c in out["checkpoints"]] == [0, 1000, 2000] and len(out["edges"]) == 3
    no_steps = _atlas(embedded.home, hf_home, "development", "--model", "pythia-70m", HF_ENDPOINT=hub.url)
    assert no_steps.returncode == 2 and "--steps" in no_steps.stderr and no_steps.stderr.count("\n") == 1
    bad = _atlas(embedded.home, hf_home, "compare", "--checkpoints", "pythia-70m", "--steps", "2000,1000", HF_ENDPOINT=hub.url)
    assert bad.returncode == 2 and "training order" in bad.stderr and bad.stderr.count("\n") == 1
    hub.close()
