"""Scaling trends and member statistics on inputs whose answer is set by construction, and the
family end to end at a few training steps (deterministic: two homes train identical members)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from atlas.errors import ValidationError
from atlas_cli import main
from queries.scaling import member_statistics, trends


def test_trends_are_robust_only_when_every_seed_agrees() -> None:
    table = pd.DataFrame([{"size": size, "seed": seed, "up": size * (1 + seed), "mixed": size if seed == 0 else -size, "flat": 3}
                          for seed in (0, 1) for size in (2, 4, 8)])
    rows = trends(table, ["up", "mixed", "flat"]).set_index("statistic")
    assert rows.loc["up", "robust"] and rows.loc["up", "trend"] == "grows"
    assert not rows.loc["mixed", "robust"] and not rows.loc["flat", "robust"]
    with pytest.raises(ValidationError, match="at least three sizes"):
        trends(table[table["size"] < 8], ["up"])


def test_member_statistics() -> None:
    edges = pd.DataFrame({"componentId_pre": ["m/EMBED", "m/EMBED", "m/L0.H0", "m/L0.H1"], "componentId_post": ["m/L0.H0", "m/L0.H1", "m/LOGITS", "m/LOGITS"],
                          "channel": ["v", "v", "in", "in"], "score": [8.0, 1.0, 0.5, 0.5]})
    lesions = pd.DataFrame({"componentId": ["m/EMBED", "m/L0.H0", "m/L0.H1", "m/L1.H0", "m/L1.H1"], "kind": ["embed"] + ["head"] * 4,
                            "effect": [-9.0, -2.0, -0.4, -1.0, -1.0]})
    roles = {"L0.H0": {"prevTokenScore": 0.9, "inductionScore": 0.1}, "L0.H1": {"prevTokenScore": 0.1, "inductionScore": 0.2},
             "L1.H0": {"prevTokenScore": 0.1, "inductionScore": 0.8}, "L1.H1": {"prevTokenScore": 0.0, "inductionScore": 0.9}}
    stats = member_statistics(2, 0, edges, lesions, roles, 1.5)
    assert stats["effectiveEdges"] == 2  # 8 + 1 of 10 reach 90%
    assert stats["redundancy"] == pytest.approx(2.0)  # two induction heads that matter equally
    assert stats["inductionHeads"] == 2 and stats["finalLoss"] == 1.5 and 0 <= stats["strictness"] <= 1
    lopsided = lesions.assign(effect=[-9.0, -2.0, -0.4, -3.0, -0.0])
    assert member_statistics(2, 0, edges, lopsided, roles, 1.5)["redundancy"] == pytest.approx(1.0)  # one carries it all


@pytest.mark.slow
def test_the_family_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for home in (tmp_path / "a", tmp_path / "b"):
        png = tmp_path / "scaling.png"
        assert main(["scaling", "--sizes", "1,2,3", "--seeds", "0,1", "--steps", "15", "--prompts", "4", "--png", str(png), "--json", "--quiet",
                     "--home", str(home)]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
        assert png.stat().st_size > 10_000
    members = outputs[0]["members"]
    assert [(m["size"], m["seed"]) for m in members] == [(s, seed) for seed in (0, 1) for s in (1, 2, 3)]
    assert [m["modelId"] for m in members] == [m["modelId"] for m in outputs[1]["members"]]  # deterministic training
    assert len({m["modelId"] for m in members}) == 6 and [m["nEdges"] for m in members[:3]] == sorted(m["nEdges"] for m in members[:3])
    assert {t["statistic"] for t in outputs[0]["trends"]} >= {"effectiveEdges", "strictness", "modularity", "redundancy", "inductionHeads"}
    assert main(["scaling", "--sizes", "1,2", "--home", str(tmp_path / "a")]) == 2
    assert "at least three sizes" in capsys.readouterr().err
