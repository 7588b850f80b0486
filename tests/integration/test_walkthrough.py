"""The README's "GPT-2 small's IOI circuit in five commands", run as written against a local hub (tests/hub.py)
that serves a tiny random GPT-2 with GPT-2 small's shape of heads (12 layers x 12 heads, d_model 24)
and a byte-level BPE tokenizer under the name ``gpt2``: the download path, the IOI prompts from that
tokenizer, the shipped truth and every command of the block."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atlas.config import StoreSettings
from tests.hub import LocalHub

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


def _block() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"## GPT-2 small's IOI circuit in five commands\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no IOI walkthrough"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def test_the_ioi_walkthrough_runs_as_written(embedded: StoreSettings, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.unit.test_standard_tasks import hf_folder

    root = tmp_path / "hub"
    repo = hf_folder(root / "gpt2")  # the tokenizer (and a small model, replaced next) in the repository TransformerLens reads 'gpt2' from
    for f in repo.glob("model*.safetensors"):
        f.unlink()
    torch.manual_seed(0)
    cfg = json.loads((repo / "config.json").read_text())
    GPT2LMHeadModel(GPT2Config(vocab_size=cfg["vocab_size"], n_positions=96, n_embd=24, n_layer=12, n_head=12, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(repo)
    served = json.loads((repo / "config.json").read_text())
    (repo / "config.json").write_text(json.dumps({**served, "n_ctx": 96}))  # the hub's gpt2 config carries n_ctx (written by an older transformers)
    hub = LocalHub(root)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
    commands = _block()
    assert len(commands) == 5 and all(c[0] == "atlas" for c in commands)
    outputs = []
    for args in commands:
        extra = ["--quiet"] if args[1] in ("ingest", "evaluate") else []
        extra += ["--json"] if args[1] == "evaluate" else []
        proc = subprocess.run([sys.executable, "-m", "atlas_cli", *args[1:], *extra, "--home", str(embedded.home)], capture_output=True,
                              text=True, timeout=900, env=env, cwd=tmp_path)
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr[-2000:]}"
        outputs.append(proc.stdout)
    hub.close()
    assert hub.downloaded("model.safetensors") and hub.downloaded("tokenizer.json")
    result = json.loads(outputs[1])
    assert result["task"] == "ioi" and result["level"] == "components" and result["nTruth"] == 26
    assert result["nComponents"] == 12 * 12 + 12 and 0.0 <= result["auc"] <= 1.0 and -1.0 <= result["spearman"] <= 1.0
    assert "Wang" in result["citation"] and {r["component"] for r in result["truthRanks"]} >= {"L9.H6", "L9.H9", "L10.H0"}
    assert (tmp_path / "ioi.html").exists()
