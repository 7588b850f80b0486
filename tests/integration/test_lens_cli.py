"""``atlas lens`` end to end on a zoo model: per-layer figures on a run, per-component figures on the
components (queryable with Cypher), a PNG, idempotent reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main

pytestmark = pytest.mark.slow


def test_lens_on_induction(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "lens.png"
    assert main(["lens", "--model", "induction-2l", "--prompts", "32", "--png", str(png), "--json", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    layers = {row["layer"]: row for row in out["layers"]}
    assert list(layers) == ["L0", "L1", "final"]
    assert layers["final"]["klLogitLens"] < 1e-9 and layers["final"]["agreeLogitLens"] == 1.0
    # the answer is written by the induction heads of the last layer: not readable before them
    assert layers["L1"]["agreeLogitLens"] < 0.2 and layers["L1"]["klLogitLens"] > 1.0
    assert png.stat().st_size > 10_000
    run = cx.fetch_run(store, out["runId"])
    assert run.method == "lens" and run.complete and json.loads(run.details["lensLayersJson"]) == out["layers"]
    flagged = store.read("MATCH (c:Component {modelId: 'induction-2l'}) WHERE c.lensErrorCorrecting = true RETURN c.componentId AS id")
    assert sorted(flagged["id"]) == out["summary"]["errorCorrecting"]
    heads = store.read("MATCH (c:Head {modelId: 'induction-2l'}) WHERE c.lensDla IS NOT NULL RETURN count(c) AS n")
    assert int(heads["n"].iloc[0]) == 8
    assert main(["lens", "--model", "induction-2l", "--prompts", "32", "--json", "--home", str(embedded.home)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["status"] == "unchanged" and again["layers"] == out["layers"]
    with pytest.raises(SystemExit) as stop:  # argparse: one line, exit 2
        main(["lens", "--model", "induction-2l", "--prompts", "1", "--home", str(embedded.home)])
    assert stop.value.code == 2 and "--prompts: must be between 2" in capsys.readouterr().err


def test_decode_stores_accuracies_on_the_components(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--model", "binding", "--layer", "1", "--variable", "answer", "--prompts", "32", "--json",
                 "--home", str(embedded.home)]) == 0
    rows = {r["source"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"resid_pre", "resid_post", *(f"binding/L1.H{h}" for h in range(4))}
    stored = store.read("MATCH (c:Head {modelId: 'binding', layer: 1}) RETURN c.componentId AS id, c.decodeAnswer AS acc, "
                        "c.decodeAnswerNull AS null, c.decodeAnswerTask AS task")
    assert len(stored) == 4
    for rec in stored.to_dict("records"):
        assert rec["acc"] == pytest.approx(rows[rec["id"]]["accuracy"]) and rec["null"] == pytest.approx(rows[rec["id"]]["null"])
        assert rec["task"].startswith("binding (ridge, 32 prompts")
    # the binding head carries the bound attribute (the answer), the stream before layer 1 does not
    assert rows["binding/L1.H0"]["accuracy"] > rows["binding/L1.H0"]["null"] + 0.3 > rows["resid_pre"]["accuracy"]


def test_views_are_drawn_stored_and_shown_in_tooltips(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    home = ["--home", str(embedded.home)]
    png = tmp_path / "views.png"
    assert main(["views", "--model", "binding", "--layer", "1", "--color", "answer", "--png", str(png), "--json", *home]) == 0
    summary = {r["source"]: r for r in json.loads(capsys.readouterr().out)["summary"]}
    assert png.stat().st_size > 10_000
    assert summary["binding/L1.H0"]["separation"] > summary["binding/L1.H0"]["separationNull"]
    stored = store.read("MATCH (c:Head {componentId: 'binding/L1.H0'}) RETURN c.pcaTop2 AS top2, c.viewSeparation AS sep")
    assert stored["top2"].iloc[0] == pytest.approx(summary["binding/L1.H0"]["pcaTop2"])
    assert main(["ingest", "--model", "binding", "--method", "eap", "--prompts", "4", "--run-id", "views-run", "--quiet", *home]) == 0
    page = tmp_path / "page.html"
    assert main(["export", "--run", "views-run", "--html", str(page), *home]) == 0
    assert "pcaTop2" in page.read_text() and "viewSeparation" in page.read_text()


def test_noise_correlations_and_encoding_models_are_stored(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(embedded.home)]
    for _ in range(2):  # a second run replaces the first
        assert main(["noise", "--model", "induction-2l", "--prompts", "8", "--repeats", "4", "--json", *home]) == 0
        pairs = json.loads(capsys.readouterr().out)
        run_id = pairs[0]["runId"]
        n = store.read("MATCH (a:Component)-[e:NOISE_CORRELATED {runId: $r}]->(b) RETURN count(e) AS n", {"r": run_id})
        assert int(n["n"].iloc[0]) == len(pairs) == 28  # 8 heads, every pair
        assert cx.fetch_run(store, run_id).method == "noise"
    strongest = max(pairs, key=lambda p: p["z"])
    assert strongest["a"].split("/")[-1].startswith("L1.H") and strongest["b"].split("/")[-1].startswith("L1.H")  # the induction heads
    assert cx.delete_run(store, run_id) == 28  # a noise run goes with its relationships
    assert main(["encode", "--model", "induction-2l", "--prompts", "10", "--repeats", "4", "--json", *home]) == 0
    rows = {r["componentId"]: r for r in json.loads(capsys.readouterr().out)}
    stored = store.read("MATCH (c:Head {componentId: 'induction-2l/L0.H0'}) RETURN c.encodeR2PrevToken AS r2, c.noiseCeiling AS ceiling")
    assert stored["r2"].iloc[0] == pytest.approx(rows["induction-2l/L0.H0"]["r2PrevToken"])
    assert stored["ceiling"].iloc[0] == pytest.approx(rows["induction-2l/L0.H0"]["noiseCeiling"])
