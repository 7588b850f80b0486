"""`atlas compare --checkpoints NAME`: a training run's checkpoints, each ingested and compared with
the final model, in one command, with a plot; `atlas development NAME`: when the final circuit's edges
form against the loss's change point; on a home of its own (its zoo model is retrained)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas_cli import main


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from ingest.model.zoo import train_zoo_model

    home = tmp_path_factory.mktemp("trained") / "home"
    train_zoo_model("induction-2l", home / "zoo" / "induction-2l", steps=30, checkpoint_every=10)
    try:
        yield home
    finally:
        main(["db", "stop", "--home", str(home)])


def test_checkpoint_timeline(trained_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(trained_home)]
    png = tmp_path / "timeline.png"
    assert main(["compare", "--checkpoints", "induction-2l", "--method", "eap", "--prompts", "4", "--top", "10", "--png", str(png),
                 "--quiet", "--json", *home]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, None]
    family = rows[-1]["runId"].split(":")[0]
    assert family.startswith("induction-2l-")  # retrained here: its own training run, not the shipped weights
    assert all(r["runId"].startswith(family) for r in rows)
    assert rows[-1]["weightedJaccard"] == 1.0 and rows[-2]["weightedJaccard"] == 1.0  # step 30 is the final model
    assert rows[0]["weightedJaccard"] < 0.5  # the untrained model's circuit is not the trained one's
    assert png.stat().st_size > 5000
    # the same timeline named by its checkpoints; ingesting again changes nothing
    assert main(["compare", "induction-2l@10", "induction-2l", "--method", "eap", "--prompts", "4", "--top", "10", "--quiet", *home]) == 0
    out = capsys.readouterr().out
    assert "2 checkpoints of induction-2l" in out and "induction-2l@10" in out
    # a zoo model with no saved checkpoints says how to make them
    assert main(["compare", "--checkpoints", "binding", *home]) == 2
    assert "atlas zoo train binding --checkpoint-every N" in capsys.readouterr().err


def test_development_over_checkpoints(trained_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(trained_home)]
    png = tmp_path / "development.png"
    assert main(["development", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--top", "5", "--png", str(png), "--quiet", "--json",
                 *home]) == 0
    out = json.loads(capsys.readouterr().out)
    checkpoints = out["checkpoints"]
    assert [c["step"] for c in checkpoints] == [0, 10, 20, 30] and checkpoints[0]["model"] == "induction-2l@0"
    assert checkpoints[-1]["loss"] < checkpoints[0]["loss"]  # it learned something in 30 steps
    summary = out["summary"]
    assert summary["top"] == 5 and summary["verdict"] in ("precedes", "coincides", "follows", "the circuit never rises above its null")
    assert summary["jumpBetween"][0] < summary["jumpBetween"][1]
    # the final checkpoint's own edges are above the null by construction of the circuit (its top edges)
    assert checkpoints[-1]["circuitAboveNull"] >= 1 and all(0 <= c["gini"] <= 1 for c in checkpoints)
    assert png.stat().st_size > 10_000
    assert main(["query", "MATCH (r:Run {runId: $id}) RETURN r.developmentJson AS d", "--param", f"id={checkpoints[-1]['runId']}",
                 "--json", *home]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert json.loads(stored[0]["d"])["summary"] == summary  # kept on the final checkpoint's run
    assert main(["development", "--model", "induction-2l", "induction-2l@10", *home]) == 2
    assert "need --task" in capsys.readouterr().err
