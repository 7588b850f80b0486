"""Ingestion and the CLI end to end against the real embedded database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.errors import RunConflict, ValidationError
from atlas.records import RunRecord
from atlas.schema import RunStatus
from atlas.store import Store
from atlas_cli import main
from ingest.jobs.run import IngestConfig, compute_run, run_ingest
from tests.conftest import make_tiny


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_tiny(11)
    cfg = {k: getattr(model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    path = tmp_path_factory.mktemp("models") / "tiny-ckpt.pt"
    torch.save({"config": cfg, "state_dict": model.state_dict()}, path)
    return path


def cli(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_twice_changes_nothing(store: Store, embedded: StoreSettings, tiny_file: Path) -> None:
    config = IngestConfig(model=str(tiny_file), method="eap-ig", n_prompts=4, steps=2)
    first = run_ingest(store, config, embedded.home, run_id="twice", progress=False)
    assert first.status == "written" and first.n_edges == 12 + 5 + 72 + 10 + 11
    counts = cx.count_graph(store)
    second = run_ingest(store, config, embedded.home, run_id="twice", progress=False)
    assert second.status == "unchanged"
    assert cx.count_graph(store) == counts
    run = cx.fetch_run(store, "twice")
    assert run.complete and run.n_edges == first.n_edges
    assert store.read("MATCH (:Run {runId: 'twice'})-[:OF_MODEL]->(m:Model) RETURN m.nLayers AS n")["n"].iloc[0] == 2
    # the default run id is derived from the configuration: idempotent without --run-id too
    a = run_ingest(store, config, embedded.home, progress=False)
    counts = cx.count_graph(store)
    b = run_ingest(store, config, embedded.home, progress=False)
    assert a.run_id == b.run_id and b.status == "unchanged" and cx.count_graph(store) == counts


def test_unfinished_run_is_rewritten_whole(store: Store, embedded: StoreSettings, tiny_file: Path) -> None:
    config = IngestConfig(model=str(tiny_file), method="eap", n_prompts=3)
    computed = compute_run(config, embedded.home)
    loaded, nodes, edges = computed.loaded, computed.nodes, computed.edges
    # simulate a crash half-way through writing: run marked "writing", half of its edges present
    cx.write_components(store, nodes)
    cx.begin_run(store, RunRecord(run_id="crashed", model_id=loaded.model_id, config_json=config.to_json()))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.run("MATCH (r:Run {runId: 'crashed'}) SET r.writerPid = $pid", {"pid": int(gone.stdout)}, write=True)  # its writer died
    cx.write_edges(store, edges.iloc[: len(edges) // 2], "crashed")
    assert cx.fetch_run(store, "crashed").status is RunStatus.WRITING
    result = run_ingest(store, config, embedded.home, run_id="crashed", progress=False, log=lambda m: None)
    assert result.status == "written"
    n = store.read("MATCH ()-[e:ATTRIBUTION {runId: 'crashed'}]->() RETURN count(e) AS n")["n"].iloc[0]
    assert n == len(edges) and cx.fetch_run(store, "crashed").complete


def test_run_id_with_other_configuration_is_refused(store: Store, embedded: StoreSettings, tiny_file: Path) -> None:
    with pytest.raises(RunConflict):
        run_ingest(store, IngestConfig(model=str(tiny_file), method="eap-ig", n_prompts=4, steps=3), embedded.home, run_id="twice", progress=False)


CLI_RUN = ("ingest", "--model", "induction-2l", "--method", "eap-ig", "--steps", "3", "--run-id", "cli-run", "--prompts", "4", "--quiet")


@pytest.fixture(scope="module")
def cli_run(store: Store, embedded: StoreSettings) -> str:
    """The run ``cli-run``, ingested through the CLI once for this module (every test that reads it
    asks for it, so none depends on another's order)."""
    assert main([*CLI_RUN, "--home", str(embedded.home)]) == 0
    return "cli-run"


def test_cli_ingest_query_and_write_guard(store: Store, embedded: StoreSettings, cli_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, embedded.home, *CLI_RUN)
    assert code == 0, err
    assert "already complete" in out  # the fixture wrote it; the same command again changes nothing
    code, out, _ = cli(capsys, embedded.home, "query",
                       "MATCH (a)-[e:ATTRIBUTION {runId: $run}]->(b:Logit) RETURN a.componentId AS src, e.score AS score ORDER BY abs(e.score) DESC",
                       "--param", "run=cli-run", "--json")
    assert code == 0
    rows = json.loads(out)
    direct = store.read("MATCH (a)-[e:ATTRIBUTION {runId: 'cli-run'}]->(b:Logit) RETURN a.componentId AS src, e.score AS score")
    assert len(rows) == len(direct) == 9
    assert {r["src"]: r["score"] for r in rows} == dict(zip(direct["src"], direct["score"]))
    # the induction heads are the strongest inputs to the logits (EAP-IG: plain EAP's gradients
    # vanish on this saturated model, docs/architecture.md, science notes)
    assert all(r["src"].startswith("induction-2l/L1.") for r in rows[:4])
    code, _, err = cli(capsys, embedded.home, "query", "CREATE (x:Sneaky {a: 1})")
    assert code == 2 and "--write" in err and err.count("\n") == 1
    assert store.read("MATCH (x:Sneaky) RETURN count(x) AS n")["n"].iloc[0] == 0
    code, _, _ = cli(capsys, embedded.home, "query", "CREATE (x:Sneaky {a: 1})", "--write")
    assert code == 0 and store.read("MATCH (x:Sneaky) RETURN count(x) AS n")["n"].iloc[0] == 1
    code, out, _ = cli(capsys, embedded.home, "runs", "--csv")
    assert code == 0 and "cli-run" in out and out.startswith("runId,")


def test_export_html_has_every_node_and_no_external_links(store: Store, embedded: StoreSettings, cli_run: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    page = tmp_path / "out" / "c.html"
    code, out, err = cli(capsys, embedded.home, "export", "--run", "cli-run", "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    ids = store.read("MATCH (a)-[e:ATTRIBUTION {runId: 'cli-run'}]->(b) RETURN collect(DISTINCT a.componentId) + collect(DISTINCT b.componentId) AS ids")["ids"].iloc[0]
    assert len(set(ids)) == 10
    for cid in set(ids):
        assert f'"{cid}"' in html
    assert not re.search(r"<(link|script)\b[^>]*(href|src)=", html)  # offline: nothing fetched
    assert "vis.Network" in html and '"physics": false' in html.replace(" ", "").replace('"physics":false', '"physics": false')
    code, out, _ = cli(capsys, embedded.home, "export", "--run", "cli-run", "--html", str(page), "--top", "5")
    assert code == 0 and "5 edges" in out


def test_demo_runs_end_to_end(embedded: StoreSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, embedded.home, "demo", "--out", str(tmp_path / "demo"), "--quiet")
    assert code == 0, err
    assert "Five strongest edges into the logits" in out and "Five strongest head -> head edges" in out
    assert (tmp_path / "demo" / "connectome.html").exists()
    # the textbook K-composition edge (previous-token head -> induction head, key channel) tops head->head
    head_table = out.split("Five strongest head -> head edges:")[1]
    first_row = head_table.strip().splitlines()[1]
    assert "induction-2l/L0.H0" in first_row and " k " in first_row


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["query", "MATC (n) RETURN n"], "syntax"),
        (["ingest", "--model", "no-such-model"], "unknown model"),
        (["ingest", "--model", "induction-2l", "--task", "no-such-task"], "unknown task"),
        (["ingest", "--model", "/nonexistent/model.pt"], "does not exist"),
        (["export", "--run", "no-such-run", "--html", "x.html"], "no run"),
    ],
)
def test_cli_errors_are_one_line(embedded: StoreSettings, args: list[str], needle: str) -> None:
    before = None
    with Store.connect(embedded, quiet=True) as s:
        before = cx.count_graph(s)
    proc = _run_cli(*args, "--home", str(embedded.home))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert needle in proc.stderr.lower()
    with Store.connect(embedded, quiet=True) as s:
        assert cx.count_graph(s) == before  # nothing half-written


def test_cli_bad_inputs_that_need_a_model(embedded: StoreSettings, tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    proc = _run_cli("ingest", "--model", str(corrupt), "--home", str(embedded.home))
    assert proc.returncode == 2 and "cannot read checkpoint" in proc.stderr and proc.stderr.count("\n") == 1
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"clean": [1, 2, 3, 4], "corrupted": [5, 6, 7], "target": 3}]))
    with Store.connect(embedded, quiet=True) as s:
        before = cx.count_graph(s)
    proc = _run_cli("ingest", "--model", "induction-2l", "--task", str(prompts), "--home", str(embedded.home))
    assert proc.returncode == 2 and "lengths differ" in proc.stderr and proc.stderr.count("\n") == 1
    prompts.write_text(json.dumps([{"clean": [1, 2, 3, 4], "corrupted": [5, 6, 7, 8], "target": [3, 4], "positions": [1, 4]}]))
    proc = _run_cli("ingest", "--model", "induction-2l", "--task", str(prompts), "--home", str(embedded.home))
    assert proc.returncode == 2 and "prompt 0 positions: 4 is outside the prompt" in proc.stderr and proc.stderr.count("\n") == 1
    with Store.connect(embedded, quiet=True) as s:
        assert cx.count_graph(s) == before


def test_cli_unreachable_and_wrong_password(embedded: StoreSettings) -> None:
    proc = _run_cli("query", "RETURN 1", "--uri", "bolt://127.0.0.1:1", "--password", "x")
    assert proc.returncode == 2 and "cannot reach the database" in proc.stderr and proc.stderr.count("\n") == 1
    from atlas.server import server_status

    if embedded.embedded:
        info = server_status(embedded.home)
        assert info is not None
        uri, user, database = info.uri, "root", "atlas"
    else:  # the server under ATLAS_TEST_URI
        uri, user, database = str(embedded.uri), embedded.user or "neo4j", embedded.database or ""
    proc = _run_cli("query", "RETURN 1", "--uri", uri, "--user", user, "--password", "wrong", *(["--database", database] if database else []))
    assert proc.returncode == 2 and "credentials" in proc.stderr and proc.stderr.count("\n") == 1


def test_unwritable_export_path_is_one_line(store: Store, embedded: StoreSettings, cli_run: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = cli(capsys, embedded.home, "export", "--run", "cli-run", "--html", str(blocker / "page.html"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_a_run_of_zeros_is_written_with_a_warning_and_marked(store: Store, embedded: StoreSettings, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A model whose unembedding is zero gives constant logits: every edge scores exactly 0."""
    model = make_tiny(12)
    with torch.no_grad():
        model.W_U.zero_()
    cfg = {k: getattr(model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    path = tmp_path / "flat.pt"
    torch.save({"config": cfg, "state_dict": model.state_dict()}, path)
    messages: list[str] = []
    result = run_ingest(store, IngestConfig(model=str(path), method="eap", n_prompts=2), embedded.home, run_id="zeros",
                        progress=False, log=messages.append)
    assert result.status == "written" and result.n_edges > 0
    assert any("every edge of run zeros is exactly zero" in m for m in messages)
    assert cx.require_run(store, "zeros").details["allZero"] is True
    assert main(["runs", "--json", "--home", str(embedded.home)]) == 0
    rows = {r["runId"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["zeros"]["allZero"] is True and rows["twice"]["allZero"] is False


def test_a_model_keeps_its_identity(store: Store, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Other weights under a stored model id are refused in one line before anything is computed or
    written; the :Model records its weights' hash; two path spellings of one file are one model."""
    a, b = make_tiny(21), make_tiny(22)
    cfg = {k: getattr(a.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    (tmp_path / "sub").mkdir()
    for name, model in (("a.pt", a), ("b.pt", b)):
        torch.save({"config": {**cfg, "model_name": "same-name"}, "state_dict": model.state_dict()}, tmp_path / name)
    home = embedded.home
    assert cli(capsys, home, "ingest", "--model", str(tmp_path / "a.pt"), "--method", "eap", "--prompts", "2", "--json", "--quiet")[0] == 0
    assert cli(capsys, home, "ingest", "--model", str(tmp_path / "b.pt"), "--method", "eap", "--prompts", "2", "--json", "--quiet")[0] == 0
    models = store.read("MATCH (m:Model) WHERE m.modelId STARTS WITH 'same-name-' RETURN m.modelId AS id, m.weightsHash AS h")
    assert len(models) == 2 and models["h"].str.len().eq(64).all()  # two models, not one merged
    # one file by another spelling: the same model and the same run (idempotent)
    code, out, _ = cli(capsys, home, "ingest", "--model", str(tmp_path / "sub" / ".." / "a.pt"), "--method", "eap", "--prompts", "2", "--json", "--quiet")
    assert code == 0 and json.loads(out)["status"] == "unchanged"
    # an explicit id, then other weights under it: refused, nothing written
    assert cli(capsys, home, "ingest", "--model", str(tmp_path / "a.pt"), "--model-id", "mine", "--method", "eap", "--prompts", "2", "--quiet")[0] == 0
    counts = cx.count_graph(store)
    code, out, err = cli(capsys, home, "ingest", "--model", str(tmp_path / "b.pt"), "--model-id", "mine", "--method", "eap", "--prompts", "2", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "already in the store with other weights" in err and "--model-id" in err
    assert cx.count_graph(store) == counts
    # the database refuses it too, whoever writes (the statement that would write checks)
    from ingest.model.loading import load_model, model_record

    with pytest.raises(ValidationError, match="other weights"):
        cx.write_model(store, model_record(load_model(str(tmp_path / "b.pt"), home, model_id="mine")))
    # a :Model stored before hashes existed takes the hash on its next write
    store.run("MATCH (m:Model {modelId: 'mine'}) REMOVE m.weightsHash", write=True)
    cx.write_model(store, model_record(load_model(str(tmp_path / "a.pt"), home, model_id="mine")))
    assert cx.fetch_model(store, "mine").weights_hash == load_model(str(tmp_path / "a.pt"), home).weights_hash


def test_compare_aligns_two_models_by_function(store: Store, embedded: StoreSettings, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A model and a copy with its heads permuted have one connectome up to renaming: the functional
    alignment finds the renaming, so the aligned diff is empty (Jaccard 1, Spearman 1, nothing gained
    or lost), and the matches are kept as ALIGNED_WITH with their similarity and p-value."""
    from tests.unit.test_alignment import PERMS, permuted_heads

    model = make_tiny(31)
    cfg = {k: getattr(model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "d_mlp", "act_fn", "normalization_type")}
    for name, m in (("orig.pt", model), ("perm.pt", permuted_heads(model, PERMS))):
        torch.save({"config": cfg, "state_dict": m.state_dict()}, tmp_path / name)
        assert cli(capsys, embedded.home, "ingest", "--model", str(tmp_path / name), "--method", "eap", "--prompts", "4",
                   "--run-id", name.removesuffix(".pt"), "--quiet")[0] == 0
    code, out, err = cli(capsys, embedded.home, "compare", "orig", "perm", "--null-models", "39", "--quiet", "--json")
    assert code == 0, err
    fig = json.loads(out)
    assert fig["alignment"] == "functional" and fig["aligned"]
    assert fig["weightedJaccard"] == pytest.approx(1.0) and fig["spearman"] == pytest.approx(1.0)
    assert fig["gained"] == [] and fig["lost"] == [] and fig["nShared"] == fig["nEdgesA"] == fig["nEdgesB"]
    assert fig["alignmentFigures"]["nSignificant"] == 10  # 8 heads and 2 MLPs (embedding and logits: identity)
    ids = {r["componentId_a"].split("/")[-1]: r["componentId_b"].split("/")[-1] for r in fig["matches"]}
    assert all(ids[f"L{l}.H{perm[h]}"] == f"L{l}.H{h}" for l, perm in PERMS.items() for h in range(4))
    stored = cx.fetch_alignment(store, fig["modelA"], fig["modelB"])
    heads = stored[stored["method"] == "functional"]
    assert len(heads) == 10 and heads["p"].tolist() == pytest.approx([1 / 40] * 10) and heads["similarity"].min() > 0.999
    # the text output says how components were matched
    code, out, _ = cli(capsys, embedded.home, "compare", "orig", "perm", "--null-models", "3", "--quiet")
    assert code == 0 and "aligned by function" in out and "significant" in out


def test_per_prompt_views(store: Store, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ingest --per-prompt` keeps each edge's score per prompt; `atlas prompts` shows, per prompt, the
    behaviour, a component's contribution (and where it collapses) and a circuit's faithfulness."""
    home = embedded.home
    assert cli(capsys, home, "ingest", "--model", "binding", "--task", "default", "--prompts", "6", "--per-prompt", "--run-id", "pp", "--quiet")[0] == 0
    assert cli(capsys, home, "circuit", "--run", "pp", "--top", "12")[0] == 0
    png = tmp_path / "prompts.png"
    code, out, err = cli(capsys, home, "prompts", "--run", "pp", "--component", "L1.H0", "--circuit", "pp/top12-corrupt", "--png", str(png), "--json")
    assert code == 0, err
    view = json.loads(out)
    rows = view["prompts"]
    assert view["nPrompts"] == len(rows) == 6 and view["component"] == "binding/L1.H0" and png.stat().st_size > 5000
    # attention-only, no final norm, a metric linear in the logits: the edges into the logits sum to the gap, prompt by prompt
    assert [r["intoLogits"] for r in rows] == pytest.approx([-r["gap"] for r in rows], rel=1e-4, abs=1e-4)
    # the component's contributions average to what its stored (mean) edges say
    out_edges = cx.fetch_edges(store, "pp")
    mean = out_edges.loc[out_edges["componentId_pre"] == "binding/L1.H0", "score"].sum()
    assert view["meanContribution"] == pytest.approx(mean, rel=1e-5)
    assert sum(r["share"] for r in rows) / 6 == pytest.approx(1.0)
    assert all(r["collapsed"] == (r["share"] < 0.5) for r in rows)
    assert all(isinstance(r["circuitFaithfulness"], float) for r in rows) and view["nCarried"] == sum(r["carried"] for r in rows)
    # a run without per-prompt scores says how to get them
    assert cli(capsys, home, "ingest", "--model", "binding", "--task", "default", "--prompts", "2", "--run-id", "plain", "--quiet")[0] == 0
    code, _, err = cli(capsys, home, "prompts", "--run", "plain")
    assert code == 2 and "--per-prompt" in err and err.count("\n") == 1


def test_evaluate_any_model_against_a_given_circuit(store: Store, embedded: StoreSettings, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`atlas evaluate --model FILE --task T --truth EDGES.json`: the zoo's induction model saved as a
    plain file, held to the circuit its zoo entry declares, written as a user would write it."""
    from ingest.model.loading import load_model

    zoo = load_model("induction-2l", embedded.home)
    cfg = {k: getattr(zoo.model.cfg, k) for k in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "attn_only",
                                                    "normalization_type", "positional_embedding_type")}
    torch.save({"config": cfg, "state_dict": zoo.model.state_dict()}, tmp_path / "mine.pt")
    truth = [{"source": a, "target": b, "channel": c} for a, b, c in zoo.info["groundTruth"]["edges"]]
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    code, out, err = cli(capsys, embedded.home, "evaluate", "--model", str(tmp_path / "mine.pt"), "--task", "induction-mixed",
                         "--truth", str(tmp_path / "truth.json"), "--prompts", "8", "--quiet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["nTruth"] == len(truth) and len(result["truthRanks"]) == len(truth)
    assert result["modelId"].startswith("mine-") and result["truth"].endswith("truth.json")
    assert result["structuralExcluded"] == []  # a user's list is their claim: nothing is excused...
    # ...so the two edges no token corruption can move (the previous-token head's q and k read position
    # only) count as missed: exactly zero, ranked last, and the AUC is below the zoo's 0.98
    zero = {r["edge"] for r in result["truthRanks"] if r["score"] == 0}
    assert zero == {"EMBED -> L0.H0 [q]", "EMBED -> L0.H0 [k]"} and 0.8 < result["auc"] < 0.95
    (tmp_path / "bad.json").write_text(json.dumps([{"source": "L0.H0", "target": "L9.Q", "channel": "k"}]))
    code, _, err = cli(capsys, embedded.home, "evaluate", "--model", str(tmp_path / "mine.pt"), "--task", "induction",
                       "--truth", str(tmp_path / "bad.json"))
    assert code == 2 and "'L9.Q' is not a local component id" in err and err.count("\n") == 1


def test_ingest_keeps_the_default_pathways_on_the_run(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """`atlas ingest` answers the default pathway question from the edges it holds, so the first
    `atlas paths` of a run reads it from the run instead of fetching every edge."""
    from queries.paths import CACHED_K, top_paths_frame

    code, out, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "4", "--run-id",
                         "cached-paths", "--json", "--quiet")
    assert code == 0, err
    assert "summaries" in json.loads(out)["seconds"]
    kept = json.loads(cx.fetch_run(store, "cached-paths").details["topPaths"])
    assert kept["k"] == CACHED_K
    cached = kept["paths"]
    recomputed = top_paths_frame(cx.fetch_edge_columns(store, "cached-paths"), k=CACHED_K)
    assert [(r["path"], round(r["strength"], 12)) for r in cached] == [(p, round(s, 12)) for p, s in zip(recomputed["path"], recomputed["strength"])]
    code, out, _ = cli(capsys, embedded.home, "paths", "--run", "cached-paths", "--paths", "5", "--json")
    assert code == 0 and [r["path"] for r in json.loads(out)] == [r["path"] for r in cached[:5]]


def test_whole_run_overviews(store: Store, embedded: StoreSettings, cli_run: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, embedded.home, "export", "--run", "cli-run", "--flow", str(tmp_path / "flow.png"), "--heatmap",
                         str(tmp_path / "heat.png"), "--json")
    assert code == 0, err
    written = {w["format"]: w for w in json.loads(out)}
    total = len(cx.fetch_edge_columns(store, "cli-run"))
    assert written["flow"]["edges"] == written["heatmap"]["edges"] == total  # every edge of the run counts
    assert (tmp_path / "flow.png").stat().st_size > 10_000 and (tmp_path / "heat.png").stat().st_size > 10_000


def test_a_prompts_file_is_used_whole(store: Store, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file of 20 prompts runs 20 (the default of 16 is for generated tasks); ``--prompts K`` takes
    the first K and says so on stderr; a bfloat16 run records its precision and where it ran."""
    rows = [{"clean": [1 + i % 5, 2, 3, 4, 5, 6], "corrupted": [7, 8, 9, 10, 11, 12], "target": 3} for i in range(20)]
    prompts = tmp_path / "twenty.json"
    prompts.write_text(json.dumps(rows))
    code, out, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--task", str(prompts), "--method", "eap",
                         "--run-id", "whole", "--json", "--quiet")
    assert code == 0, err
    assert cx.fetch_run(store, "whole").n_prompts == 20 and "using the first" not in err
    code, out, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--task", str(prompts), "--method", "eap",
                         "--prompts", "5", "--run-id", "first-five", "--dtype", "bfloat16", "--device", "cpu", "--json", "--quiet")
    assert code == 0, err
    assert "using the first 5 of the 20 prompts" in err
    run = cx.fetch_run(store, "first-five")
    assert run.n_prompts == 5 and run.details["dtype"] == "bfloat16" and run.details["device"] == "cpu"
    assert json.loads(run.config_json or "{}")["dtype"] == "bfloat16"


def test_a_standard_task_from_the_models_tokenizer(store: Store, embedded: StoreSettings, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``atlas ingest --task ioi`` on a Hugging Face folder with its own tokenizer: prompts from that
    tokenizer, the paper's metric by default; a zoo model (no tokenizer) is refused in one line."""
    from tests.unit.test_standard_tasks import hf_folder

    folder = hf_folder(tmp_path / "tiny-gpt2")
    code, out, err = cli(capsys, embedded.home, "ingest", "--model", str(folder), "--task", "ioi", "--method", "eap", "--prompts", "6",
                         "--run-id", "ioi-tiny", "--json", "--quiet")
    assert code == 0, err
    run = cx.fetch_run(store, "ioi-tiny")
    assert run.task == "ioi" and run.metric == "logit-diff" and run.n_prompts == 6 and (run.n_edges or 0) > 0
    code, _, err = cli(capsys, embedded.home, "ingest", "--model", "induction-2l", "--task", "greater-than", "--run-id", "never")
    assert code == 2 and "builds its prompts with the model's tokenizer" in err and err.count("\n") == 1


def test_evaluate_against_a_component_truth(store: Store, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A circuit given as components (the induction model's previous-token and induction heads) is scored
    node by node: every one of them outranks the other heads, and the node importances follow exact node
    patching; a shipped truth naming components the model lacks is one line."""
    (tmp_path / "heads.json").write_text(json.dumps(["L0.H0", "L1.H0", "L1.H1", "L1.H2", "L1.H3"]))
    code, out, err = cli(capsys, embedded.home, "evaluate", "--model", "induction-2l", "--task", "induction-mixed", "--truth",
                         str(tmp_path / "heads.json"), "--prompts", "8", "--quiet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["level"] == "components" and result["nComponents"] == 8 and result["nTruth"] == 5
    assert result["auc"] == 1.0 and result["spearman"] > 0.8
    assert [r["rank"] for r in result["truthRanks"]] == [1, 2, 3, 4, 5]
    code, _, err = cli(capsys, embedded.home, "evaluate", "--model", "induction-2l", "--truth", "ioi-gpt2-small", "--prompts", "2")
    assert code == 2 and err.count("\n") == 1 and "builds its prompts with the model's tokenizer" in err


def test_evaluate_by_lesions_the_acdc_way(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate --ablation``: path patching of every edge with that replacement scores the edges; with
    the corrupted outputs it is exact patching itself (Spearman 1 against it), with zeros it still finds
    the induction circuit; the lesion run keeps the figures."""
    code, out, err = cli(capsys, embedded.home, "evaluate", "--model", "induction-2l", "--ablation", "corrupt", "--prompts", "8", "--quiet", "--json")
    assert code == 0, err
    corrupt = json.loads(out)
    assert corrupt["method"] == "lesion (corrupt)" and corrupt["nEdges"] == 79 and corrupt["spearman"] == pytest.approx(1.0, abs=1e-9)
    code, out, err = cli(capsys, embedded.home, "evaluate", "--model", "induction-2l", "--ablation", "zero", "--prompts", "8", "--quiet", "--json")
    assert code == 0, err
    zero = json.loads(out)
    assert zero["auc"] > 0.9 and zero["ablation"] == "zero"
    run = cx.fetch_run(store, zero["runId"])
    assert run.method == "lesion" and run.details["scope"] == "edge" and run.details["groundTruthAuc"] == pytest.approx(zero["auc"])
