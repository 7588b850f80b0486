"""Lesion, verification, circuit, anatomy and probe jobs against the real embedded database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main
from ingest.jobs.run import IngestConfig, run_ingest
from ingest.jobs.studies import LesionConfig, run_anatomy, run_lesion, run_probe, save_circuit, verify_run


@pytest.fixture(scope="module")
def ig_run(store: Store, embedded: StoreSettings) -> str:
    run_ingest(store, IngestConfig(model="induction-2l", method="eap-ig", n_prompts=8, steps=3), embedded.home, run_id="ig", progress=False)
    return "ig"


def _count(store: Store, cypher: str, **params: object) -> int:
    return int(store.read(cypher, params)["n"].iloc[0])


def test_node_lesions_name_the_circuit_and_are_idempotent(store: Store, embedded: StoreSettings) -> None:
    cfg = LesionConfig(model="induction-2l", ablation="resample", n_prompts=8, n_reference=16)
    out = run_lesion(store, cfg, embedded.home, run_id="les", progress=False)
    frame = out.frame.sort_values("effect")
    # the embedding and the previous-token head are single points of failure; next come the four
    # induction heads, each hurting more than any head outside the circuit
    assert set(frame["componentId"].iloc[:2]) == {"induction-2l/EMBED", "induction-2l/L0.H0"}
    assert set(frame["componentId"].iloc[2:6]) == {f"induction-2l/L1.H{h}" for h in range(4)}
    assert frame["effect"].iloc[0] < -1.0
    n = _count(store, "MATCH (:Component)-[e:ABLATION {runId: 'les'}]->(:Logit) RETURN count(e) AS n")
    assert n == 9  # embed + 8 heads
    run = cx.fetch_run(store, "les")
    assert run.complete and run.details["ablation"] == "resample" and run.details["referencePrompts"] == 16
    counts = cx.count_graph(store)
    assert run_lesion(store, cfg, embedded.home, run_id="les", progress=False).status == "unchanged"
    assert cx.count_graph(store) == counts


def test_edge_lesions_write_one_ablation_per_edge(store: Store, embedded: StoreSettings) -> None:
    cfg = LesionConfig(model="induction-2l", ablation="zero", scope="edge", n_prompts=4)
    run_lesion(store, cfg, embedded.home, run_id="les-edges", progress=False)
    n = _count(store, "MATCH ()-[e:ABLATION {runId: 'les-edges', scope: 'edge'}]->() RETURN count(e) AS n")
    assert n == 81


def test_verify_stores_patch_edges_and_figures(store: Store, embedded: StoreSettings, ig_run: str) -> None:
    out = verify_run(store, ig_run, 10, embedded.home, progress=False)
    assert out.top == 10 and -1 <= out.spearman <= 1
    # two code paths, one answer: the top-10 circuit's faithfulness as the circuit job computes it
    assert save_circuit(store, ig_run, embedded.home, top=10).details["faithfulness"] == pytest.approx(out.faithfulness, abs=1e-9)
    assert _count(store, "MATCH ()-[e:ABLATION {runId: $r, ablation: 'patch'}]->() RETURN count(e) AS n", r=ig_run) == 10
    counts = cx.count_graph(store)
    again = verify_run(store, ig_run, 10, embedded.home, progress=False)
    assert cx.count_graph(store) == counts and again.spearman == pytest.approx(out.spearman)
    run = cx.fetch_run(store, ig_run)
    assert run.details["verifyTopK"] == 10 and run.details["verifySpearman"] == pytest.approx(out.spearman)
    # the ABLATION edge sits next to its ATTRIBUTION edge
    both = _count(store, "MATCH (a)-[p:ABLATION {runId: $r}]->(b) MATCH (a)-[e:ATTRIBUTION]->(b) WHERE e.runId = $r AND e.channel = p.channel RETURN count(*) AS n", r=ig_run)
    assert both == 10


def test_saved_circuit_members_can_be_read_back(store: Store, embedded: StoreSettings, ig_run: str) -> None:
    out = save_circuit(store, ig_run, embedded.home, top=20)
    members = store.read(
        "MATCH (c:Component)-[m:MEMBER_OF]->(k:Circuit {circuitId: $id}) RETURN c.componentId AS id, m.role AS role ORDER BY id",
        {"id": out.circuit_id},
    )
    assert dict(zip(members["id"], members["role"])) == dict(out.members)
    back = cx.fetch_circuit(store, out.circuit_id)
    assert back is not None and back.edge_keys == out.edge_keys and dict(back.members) == dict(out.members)
    assert len(members) == out.details["nNodes"] and "induction-2l/L0.H0" in set(members["id"])
    assert dict(zip(members["id"], members["role"]))["induction-2l/LOGITS"] == "output"
    circuit = store.read("MATCH (k:Circuit {circuitId: $id}) RETURN k.faithfulness AS f, k.ablation AS a, k.nEdges AS n", {"id": out.circuit_id})
    assert circuit["a"].iloc[0] == "corrupt" and circuit["n"].iloc[0] == 20
    # the top 20 of 81 EAP-IG edges recover most of the clean-corrupt gap (measured 0.77)
    assert circuit["f"].iloc[0] == pytest.approx(out.details["faithfulness"]) and out.details["faithfulness"] > 0.5
    counts = cx.count_graph(store)
    save_circuit(store, ig_run, embedded.home, top=20)
    assert cx.count_graph(store) == counts


def test_anatomy_and_probe_fill_the_database(store: Store, embedded: StoreSettings, ig_run: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    frame = run_anatomy(store, "induction-2l", embedded.home, n_random=50)
    assert len(frame) == 4 * 4 * 3
    top = store.read(
        "MATCH (a:Head)-[c:COMPOSITION {kind: 'k'}]->(b:Head) RETURN a.componentId AS a, b.componentId AS b, c.zScore AS z ORDER BY c.zScore DESC LIMIT 4"
    )
    assert set(top["a"]) == {"induction-2l/L0.H0"} and top["z"].min() > 10  # K-composition of the textbook circuit
    counts = cx.count_graph(store)
    run_anatomy(store, "induction-2l", embedded.home, n_random=50)
    assert cx.count_graph(store) == counts
    run_probe(store, "induction-2l", embedded.home)
    roles = store.read("MATCH (h:Head {modelId: 'induction-2l'}) RETURN h.componentId AS id, h.prevTokenScore AS prev, h.inductionScore AS ind, h.topTokens AS top, h.probe AS probe")
    roles = roles.set_index("id")
    assert roles.loc["induction-2l/L0.H0", "prev"] > 0.99
    assert (roles.loc[[f"induction-2l/L1.H{h}" for h in range(4)], "ind"] > 0.8).all()
    assert len(roles.loc["induction-2l/L1.H0", "top"]) == 5 and roles["probe"].str.startswith("atlas-probe-v1").all()
    # probe results show in the exported page's tooltips
    page = tmp_path / "p.html"
    assert main(["export", "--run", ig_run, "--html", str(page), "--home", str(embedded.home)]) == 0
    assert "prevTokenScore" in page.read_text() and "topTokens" in page.read_text()


def test_cli_verify_lesion_json(embedded: StoreSettings, ig_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--run", ig_run, "--top", "5", "--json", "--quiet", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top"] == 5 and "spearman" in out
    assert main(["verify", "--run", "nope", "--home", str(embedded.home)]) == 2
    assert "no run" in capsys.readouterr().err


def test_evaluate_reports_auc_and_spearman(embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "induction-2l", "--method", "eap-ig", "--prompts", "8", "--json", "--quiet", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"auc", "spearman", "truthRanks"} <= set(out)
    assert out["auc"] >= 0.95  # the known circuit ranks above the rest (docs/architecture.md, targets target)
    assert out["nTruth"] == len(out["truthRanks"]) == 1 + 4 * 4
    assert main(["evaluate", "--model", "gpt2", "--home", str(embedded.home)]) == 2
    capsys.readouterr()
    # the zoo model with MLPs: its heads move a and b, its MLP computes the sum
    assert main(["evaluate", "--model", "modadd-1l", "--method", "eap-ig", "--json", "--quiet", "--home", str(embedded.home)]) == 0
    mod = json.loads(capsys.readouterr().out)
    assert mod["task"] == "modadd" and mod["auc"] >= 0.95 and mod["spearman"] >= 0.8
    assert mod["truthRanks"][0]["edge"] == "L0.MLP -> LOGITS [in]"


def test_binding_model_evaluates_and_its_control_reads_as_induction(embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """EAP-IG recovers the binding circuit; the binding query tells binding (the previous-token mover
    arrives on v) from its negative control, the reverse query (it arrives on k: induction)."""
    home = ["--home", str(embedded.home)]
    assert main(["evaluate", "--model", "binding", "--method", "eap-ig", "--json", "--quiet", *home]) == 0
    fwd = json.loads(capsys.readouterr().out)
    assert fwd["task"] == "binding" and fwd["auc"] >= 0.95 and fwd["spearman"] >= 0.8
    assert any("L0.H1 (silent)" in s for s in fwd["structuralExcluded"])
    assert main(["evaluate", "--model", "binding", "--task", "binding-reverse", "--method", "eap-ig", "--json", "--quiet", *home]) == 0
    rev = json.loads(capsys.readouterr().out)
    assert rev["task"] == "binding-reverse" and rev["auc"] >= 0.95
    assert main(["evaluate", "--model", "binding", "--task", "induction", *home]) == 2
    assert "ground truth for tasks" in capsys.readouterr().err
    # the null: the same architecture untrained (binding@0), on each task
    for task in ("binding", "binding-reverse"):
        assert main(["ingest", "--model", "binding@0", "--task", task, "--run-id", f"null-{task}", "--quiet", *home]) == 0
    capsys.readouterr()
    assert main(["binding", "--run", "null-binding", "--channels", "any", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing binds in an untrained model
    for run, task, mover_channel in ((fwd["runId"], "binding", "v"), (rev["runId"], "binding-reverse", "k")):
        assert main(["binding", "--run", run, "--channels", "any", "--null", f"null-{task}", "--json", *home]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert rows and all(r["moverChannel"] == mover_channel for r in rows)
        assert all("binding/L0.H0" in (r["sourceA"], r["sourceB"]) for r in rows)


def test_default_task_and_zoo_listing(embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--model", "modadd-1l", "--task", "default", "--prompts", "4", "--json", "--quiet", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert ":modadd:" in out["runId"] and out["nEdges"] == 23
    assert main(["zoo", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["modadd-1l"]["hasMlp"] and not rows["induction-2l"]["hasMlp"]
    assert main(["ingest", "--model", "tiny.pt", "--task", "default", "--home", str(embedded.home)]) == 2


def test_population_tables_and_similarity_edges(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["population", "--model", "induction-2l", "--layer", "1", "--store", "--json", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["components"]) == 6 and len(out["layers"]) == 1
    n = _count(store, "MATCH (:Head)-[e:SIMILAR_TO]->(:Head) WHERE e.cka IS NOT NULL RETURN count(e) AS n")
    assert n == 6
    assert main(["population", "--model", "induction-2l", "--layer", "1", "--store", "--home", str(embedded.home)]) == 0
    assert _count(store, "MATCH (:Head)-[e:SIMILAR_TO]->(:Head) RETURN count(e) AS n") == 6  # replaced, not duplicated
    assert main(["population", "--model", "induction-2l", "--layer", "7", "--home", str(embedded.home)]) == 2


def test_probe_stores_neurons_with_sparse_coding_statistics(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    # modadd-1l reads 3 tokens: the generic probe ('x x') would be off-task, so its own task's prompts are used, and it says so
    result = run_probe(store, "modadd-1l", embedded.home, n=8)
    assert result.stimuli.startswith("task:modadd") and "too short for the generic probe" in result.stimuli
    heads = store.read("MATCH (h:Head {modelId: 'modadd-1l'}) RETURN h.probe AS probe, h.prevTokenScore AS prev, "
                       "h.prevTokenChance AS chance, h.topPrompts AS top")
    assert heads["probe"].str.startswith("task:modadd").all() and (heads["top"].map(len) == 5).all()
    # on 3 tokens attending to t-1 is close to chance (5/12): no head is called a previous-token head for it
    assert heads["chance"].tolist() == pytest.approx([5 / 12] * 4) and ((heads["prev"] - heads["chance"]) < 0.3).all()
    assert main(["probe", "--model", "modadd-1l", "--per-prompt", "--json", "--home", str(embedded.home)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stimuli"].startswith("task:modadd") and len(out["prompts"]) == 32 * 5  # 4 heads + the MLP, 32 prompts
    n = _count(store, "MATCH (n:Neuron)-[:PART_OF]->(:Mlp {componentId: 'modadd-1l/L0.MLP'}) WHERE n.frequency IS NOT NULL RETURN count(n) AS n")
    assert n == 256
    row = store.read("MATCH (n:Neuron {componentId: 'modadd-1l/L0.N0'}) RETURN n.frequency AS f, n.maxAct AS m, n.topTokens AS t")
    assert 0 <= row["f"].iloc[0] <= 1 and len(row["t"].iloc[0]) == 5
    counts = cx.count_graph(store)
    run_probe(store, "modadd-1l", embedded.home, n=8)
    assert cx.count_graph(store) == counts


def test_neuron_level_run(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ingest", "--model", "modadd-1l", "--task", "default", "--granularity", "neuron", "--top-neurons", "6",
            "--prompts", "8", "--run-id", "neurons", "--quiet", "--home", str(embedded.home)]
    assert main(args) == 0
    capsys.readouterr()
    parts = _count(store, "MATCH (n:Neuron)-[:PART_OF]->(:Mlp {componentId: 'modadd-1l/L0.MLP'}) "
                          "MATCH (n)-[e:ATTRIBUTION {runId: 'neurons'}]->() RETURN count(DISTINCT n) AS n")
    assert parts == 6
    into = _count(store, "MATCH ()-[e:ATTRIBUTION {runId: 'neurons'}]->(:Neuron) RETURN count(e) AS n")
    assert into == 6 * 5  # embed + 4 heads into each selected neuron
    run = cx.fetch_run(store, "neurons")
    assert run.details["granularity"] == "neuron" and run.details["topNeurons"] == 6
    assert "EAP node attribution" in run.details["neuronSelection"]
    stats = store.read("MATCH ()-[:ATTRIBUTION {runId: 'neurons'}]->(n:Neuron) RETURN DISTINCT n.frequency AS f, n.probe AS probe, "
                       "n.topContexts AS ctx, n.componentId AS id, n.neuron AS idx")
    assert len(stats) == 6 and stats["f"].between(0, 1).all() and stats["probe"].str.startswith("the run's prompts").all()
    assert all(len(c) > 0 for c in stats["ctx"])
    # the neuron's index is stored as the integer of its id (not 30.0: a float column beside the heads)
    assert stats["idx"].dtype.kind == "i" and (stats["idx"] == stats["id"].str.rsplit(".N", n=1).str[1].astype(int)).all()
    assert main(["verify", "--run", "neurons", "--top", "10", "--json", "--quiet", "--home", str(embedded.home)]) == 0
    checked = json.loads(capsys.readouterr().out)  # the run's own neurons are rebuilt and patched
    assert checked["top"] == 10 and checked["spearman"] > 0.5
    counts = cx.count_graph(store)
    assert main(args) == 0
    assert cx.count_graph(store) == counts


def test_sae_train_and_feature_level_run(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A dictionary trained by the CLI lands in sae-lens format and in the database; a feature-level
    run writes features (with sparse-coding statistics) and the error node, PART_OF the MLP, and its
    edges are complete: features + error into the logits = the MLP into the logits."""
    home = ["--home", str(embedded.home)]
    folder = tmp_path / "tc"
    assert main(["sae", "train", "--model", "modadd-1l", "--hook", "blocks.0.hook_mlp_out", "--features", "64", "--transcoder",
                 "--steps", "1500", "--out", str(folder), "--json", "--quiet", *home]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert (folder / "cfg.json").exists() and (folder / "sae_weights.safetensors").exists()
    row = store.read("MATCH (d:Dictionary {dictionaryId: $id}) RETURN d.fvu AS fvu, d.l0 AS l0, d.dead AS dead", {"id": trained["dictionaryId"]})
    assert row["fvu"].iloc[0] == pytest.approx(trained["fvu"]) and row["fvu"].iloc[0] < 0.2
    # every feature of the dictionary is a node with its sparse-coding statistics, PART_OF the MLP
    every = store.read("MATCH (f:Feature {dictionaryId: $id})-[:PART_OF]->(:Mlp) RETURN f.frequency AS freq, f.topContexts AS ctx",
                       {"id": trained["dictionaryId"]})
    assert len(every) == 64 and every["freq"].between(0, 1).all() and (every["freq"] > 0).sum() >= 32
    args = ["ingest", "--model", "modadd-1l", "--task", "default", "--granularity", "feature", "--sae", str(folder),
            "--top-features", "16", "--prompts", "8", "--run-id", "feat", "--quiet", *home]
    assert main(args) == 0
    capsys.readouterr()
    did = trained["dictionaryId"]
    n_feat = _count(store, "MATCH (f:Feature {dictionaryId: $d})-[:ATTRIBUTION {runId: 'feat'}]->() "
                           "WHERE f.frequency > 0 AND f.maxAct > 0 AND size(f.topContexts) > 0 AND f.probe STARTS WITH 'the run' "
                           "RETURN count(DISTINCT f) AS n", d=did)
    assert 1 <= n_feat <= 16
    assert _count(store, "MATCH (e:Error {dictionaryId: $d})-[:PART_OF]->(:Mlp) RETURN count(e) AS n", d=did) == 1
    sums = store.read("MATCH (s:Component)-[e:ATTRIBUTION {runId: 'feat'}]->(:Logit) WHERE s:Mlp OR s:Feature OR s:Error "
                      "RETURN s:Mlp AS mlp, sum(e.score) AS total")
    totals = dict(zip(sums["mlp"], sums["total"]))
    assert totals[True] == pytest.approx(totals[False], rel=1e-4) and abs(totals[True]) > 0.1
    assert cx.fetch_run(store, "feat").details["granularity"] == "feature"
    on_run = store.read("MATCH (d:Dictionary {dictionaryId: $id}) RETURN d.fvuOnRun AS fvu, d.l0OnRun AS l0", {"id": did})
    assert 0 <= on_run["fvu"].iloc[0] < 0.5 and on_run["l0"].iloc[0] > 0  # measured again on the run's own prompts
    counts = cx.count_graph(store)
    assert main(args) == 0  # idempotent
    assert cx.count_graph(store) == counts
    capsys.readouterr()
    # verify patches the top edges of the feature run exactly (features and error included)
    assert main(["verify", "--run", "feat", "--top", "12", "--json", "--quiet", *home]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["top"] == 12 and checked["spearman"] > 0.5 and checked["faithfulness"] is None
    assert main(["circuit", "--run", "feat", "--top", "5", *home]) == 2
    assert "head-level run" in capsys.readouterr().err
    page = tmp_path / "feat.html"  # the export's tooltips show the features' sparse-coding statistics
    assert main(["export", "--run", "feat", "--html", str(page), *home]) == 0
    assert "frequency: " in page.read_text() and "dictionaryId: " in page.read_text() and "#9d9d9d" in page.read_text()
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # the dictionary changed under the run
    assert main(["verify", "--run", "feat", "--top", "12", "--quiet", *home]) == 2
    assert "changed since the run" in capsys.readouterr().err
    assert main(["ingest", "--model", "modadd-1l", "--task", "default", "--granularity", "feature", *home]) == 2
    assert "--sae PATH" in capsys.readouterr().err
    assert main(["ingest", "--model", "modadd-1l", "--task", "default", "--granularity", "feature", "--sae", str(tmp_path / "none"), *home]) == 2
    assert "sae-lens folder" in capsys.readouterr().err
    assert main(["sae", "train", "--model", "modadd-1l", "--hook", "blocks.9.hook_nothing", "--features", "8", *home]) == 2
    assert "no hook" in capsys.readouterr().err
