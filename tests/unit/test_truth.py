"""The published circuits the atlas ships as truth files: readable, cited, and naming components
GPT-2 small has (12 layers x 12 heads, 12 MLPs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas.errors import ValidationError
from atlas.ids import parse_component_id
from ingest.jobs.evaluate import load_truth_spec, shipped_truths

pytestmark = pytest.mark.unit


def test_the_shipped_circuits_are_cited_and_fit_gpt2_small() -> None:
    shipped = shipped_truths()
    assert set(shipped) == {"ioi-gpt2-small", "greater-than-gpt2-small"}
    ioi = load_truth_spec("ioi-gpt2-small")
    assert ioi.task == "ioi" and "Wang" in (ioi.citation or "") and ioi.components is not None and len(ioi.components) == 26
    assert {"L9.H6", "L9.H9", "L10.H0", "L10.H7", "L11.H10", "L7.H3", "L8.H10", "L5.H5", "L0.H1", "L2.H2", "L4.H11"} <= set(ioi.components)
    gt = load_truth_spec("greater-than-gpt2-small")
    assert gt.task == "greater-than" and "Hanna" in (gt.citation or "") and gt.components is not None
    assert set(gt.components) == {"L5.H1", "L5.H5", "L6.H1", "L6.H9", "L7.H10", "L8.H8", "L8.H11", "L9.H1",
                                  "L8.MLP", "L9.MLP", "L10.MLP", "L11.MLP"}
    for truth in (ioi, gt):
        for c in truth.components or []:
            parsed = parse_component_id(f"gpt2/{c}")
            assert parsed.layer < 12 and (parsed.head is None or parsed.head < 12)
    roles = json.loads(shipped["ioi-gpt2-small"].read_text())["roles"]
    assert sum(len(v) for v in roles.values()) == 26 and len(roles) == 7


def test_a_component_truth_file_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(["L1.H0", "L0.MLP"]))
    assert load_truth_spec(tmp_path / "c.json").components == ["L0.MLP", "L1.H0"]
    (tmp_path / "bad.json").write_text(json.dumps(["L1.Q9"]))
    with pytest.raises(ValidationError, match="not a local component id"):
        load_truth_spec(tmp_path / "bad.json")
    with pytest.raises(ValidationError, match="neither a file nor a shipped circuit"):
        load_truth_spec("ioi-gpt2-medium")
    (tmp_path / "e.json").write_text(json.dumps([{"source": "L0.H0", "target": "L1.H1", "channel": "k"}]))
    assert load_truth_spec(tmp_path / "e.json").edges == [["L0.H0", "L1.H1", "k"]]
