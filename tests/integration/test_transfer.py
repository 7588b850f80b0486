"""A run exported as CSV and imported into a fresh home is the same run: lossless and idempotent."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings, resolve_store_settings
from atlas.errors import RunConflict, ValidationError
from atlas.schema import RunStatus
from atlas.server import start_server, stop_server
from atlas.store import Store
from atlas_cli import main
from ingest.jobs.run import IngestConfig, run_ingest
from ingest.jobs.studies import verify_run
from queries.transfer import export_run_csv, import_run_csv
from tests.conftest import TEST_URI

RUN = "transfer-neurons"


@pytest.fixture(scope="module")
def rich_run(store: Store, embedded: StoreSettings) -> str:
    """A neuron-level per-prompt run (list-valued receptive fields and edge scores, PART_OF links) with ABLATION patch edges too."""
    config = IngestConfig(model="modadd-1l", task="default", method="eap-ig", n_prompts=8, steps=2, granularity="neuron", top_neurons=3,
                          per_prompt=True)  # list-valued edge properties (promptScores) and the prompts on the run
    run_ingest(store, config, embedded.home, run_id=RUN, progress=False)
    verify_run(store, RUN, 5, embedded.home, progress=False)
    return RUN


def _another_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Store]:
    if TEST_URI is not None:
        pytest.skip("needs a second, empty database next to the one at ATLAS_TEST_URI")
    home = tmp_path_factory.mktemp(name)
    start_server(home, quiet=True)
    try:
        with Store.connect(resolve_store_settings(home=home), quiet=True) as s:
            yield s
    finally:
        stop_server(home)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A second embedded server in its own, new atlas home."""
    yield from _another_server(tmp_path_factory, "fresh-home")


def _snapshot(store: Store, run_id: str) -> dict[str, Any]:
    run = cx.require_run(store, run_id)
    model = cx.fetch_model(store, run.model_id)
    rels = cx.fetch_run_relationships(store, run_id)
    ids = set(rels["componentId_pre"]) | set(rels["componentId_post"])
    part_of = sorted((a, b) for a, b in cx.fetch_part_of(store, run.model_id) if a in ids)
    ids |= {b for _, b in part_of}
    comps = {cid: (label, props) for cid, label, props in cx.fetch_component_properties(store, run.model_id) if cid in ids}
    edges = Counter((a, b, t, json.dumps(p, sort_keys=True)) for a, b, t, p in zip(rels["componentId_pre"], rels["componentId_post"], rels["type"], rels["props"]))
    return {"run": run, "model": model, "components": comps, "edges": edges, "partOf": part_of}


def test_export_import_is_lossless(store: Store, rich_run: str, fresh: Store, tmp_path: Path) -> None:
    export_run_csv(store, rich_run, tmp_path / "run")
    assert cx.count_graph(fresh) == {"nodes": 0, "relationships": 0}
    out = import_run_csv(fresh, tmp_path / "run")
    assert out.status == "written"
    a, b = _snapshot(store, rich_run), _snapshot(fresh, rich_run)
    assert b["run"] == a["run"]  # every property, derived figures and creation time included
    assert b["model"] == a["model"]
    assert b["components"] == a["components"]  # labels and every property, value types kept (ints stay ints)
    assert b["edges"] == a["edges"] and sum(b["edges"].values()) == out.n_edges
    assert {t for _, _, t, _ in b["edges"]} == {"ATTRIBUTION", "ABLATION"}
    assert b["partOf"] == a["partOf"] and a["partOf"]
    # idempotent by run status, as ingestion is
    counts = cx.count_graph(fresh)
    again = import_run_csv(fresh, tmp_path / "run")
    assert again.status == "unchanged" and cx.count_graph(fresh) == counts


def test_csv_is_neo4j_admin_format(store: Store, rich_run: str, tmp_path: Path) -> None:
    nodes, rels, meta = export_run_csv(store, rich_run, tmp_path / "run")
    with open(nodes) as fh:
        header = next(csv.reader(fh))
    assert header[:2] == ["componentId:ID", ":LABEL"] and "layer:long" in header
    # every other column is NAME or NAME:TYPE with a neo4j-admin type
    for col in header[2:]:
        name, _, kind = col.partition(":")
        assert name.isidentifier() and kind in ("", "long", "double", "boolean"), col
    with open(rels) as fh:
        header = next(csv.reader(fh))
    assert header[:3] == [":START_ID", ":END_ID", ":TYPE"] and "score:double" in header
    assert json.loads(meta.read_text())["run"]["runId"] == rich_run


def test_unfinished_import_is_rewritten_and_conflicts_refused(store: Store, rich_run: str, fresh: Store, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    export_run_csv(store, rich_run, folder)
    import_run_csv(fresh, folder)
    before = cx.count_graph(fresh)
    # an import killed half-way: the run is 'writing' and half its edges are gone
    cx.set_run_status(fresh, rich_run, RunStatus.WRITING)
    fresh.run("MATCH ()-[e:ATTRIBUTION {runId: $r}]->() WITH e LIMIT 10 DELETE e", {"r": rich_run}, write=True)
    assert import_run_csv(fresh, folder, log=lambda m: None).status == "written"
    assert cx.count_graph(fresh) == before and cx.require_run(fresh, rich_run).complete
    meta = json.loads((folder / "run.json").read_text())
    meta["run"]["configJson"] = '{"other": true}'
    (folder / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunConflict):
        import_run_csv(fresh, folder)


def _corrupt(folder: Path, name: str, edit: Any) -> None:
    path = folder / name
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _set(rows: list[list[str]], column_prefix: str, value: str) -> list[list[str]]:
    i = next(j for j, c in enumerate(rows[0]) if c.startswith(column_prefix))
    rows[1][i] = value
    return rows


CORRUPTIONS = {
    "missing column": ("nodes.csv", lambda rows: [r[1:] for r in rows], "header must start with"),
    "non-numeric score": ("relationships.csv", lambda rows: _set(rows, "score", "high"), "not a valid double"),
    "non-numeric layer": ("nodes.csv", lambda rows: _set(rows, "layer", "two"), "not a valid long"),
    "short row": ("nodes.csv", lambda rows: rows[:1] + [rows[1][:3]] + rows[2:], "fields, the header has"),
    "unknown end": ("relationships.csv", lambda rows: _set(rows, ":START_ID", "modadd-1l/L0.H99"), "is not in nodes.csv"),
    "bad id": ("nodes.csv", lambda rows: _set(rows, "componentId", "not an id"), "nodes.csv line 2"),
    "wrong label": ("nodes.csv", lambda rows: _set(rows, ":LABEL", "Component;Feature"), "labelled"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_malformed_csv_is_one_line_and_writes_nothing(store: Store, rich_run: str, tmp_path: Path, name: str,
                                                      capsys: pytest.CaptureFixture[str], embedded: StoreSettings) -> None:
    good = tmp_path / "good"
    export_run_csv(store, rich_run, good)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    file, edit, needle = CORRUPTIONS[name]
    _corrupt(bad, file, edit)
    meta = json.loads((bad / "run.json").read_text())
    meta["run"]["runId"] = "never-written"
    meta.pop("files")  # a folder made by hand (or by an atlas before checksums): the files' own checks answer
    (bad / "run.json").write_text(json.dumps(meta))
    _corrupt(bad, "relationships.csv", lambda rows: [rows[0]] + [[*r[:3], *(("never-written" if h == "runId" else v) for h, v in zip(rows[0][3:], r[3:]))] for r in rows[1:]])
    with pytest.raises(ValidationError, match=needle):
        import_run_csv(store, bad)
    assert cx.fetch_run(store, "never-written") is None
    code = main(["import", str(bad), "--home", str(embedded.home)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err


def test_cli_export_import_json(store: Store, rich_run: str, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(embedded.home)]
    assert main(["export", "--run", rich_run, "--csv-dir", str(tmp_path / "c"), "--node-link", str(tmp_path / "g.json"), "--json", *home]) == 0
    written = json.loads(capsys.readouterr().out)
    assert {w["format"] for w in written} == {"csv", "node-link"}
    assert main(["import", str(tmp_path / "c"), "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out) == {"runId": rich_run, "status": "unchanged", "nNodes": 0,
                                                   "nEdges": cx.require_run(store, rich_run).n_edges}
    assert main(["export", "--run", rich_run, "--csv-dir", str(tmp_path / "d"), "--top", "3", *home]) == 2
    assert "whole run" in capsys.readouterr().err


def test_per_prompt_scores_travel(store: Store, rich_run: str) -> None:
    """The fixture's run keeps a score per prompt on every attribution edge (so the lossless test covers lists on edges)."""
    scores = cx.fetch_prompt_scores(store, rich_run)
    run = cx.require_run(store, rich_run)
    assert len(scores) == run.n_edges and all(len(v) == 8 for v in scores["promptScores"])
    assert len(json.loads(run.details["promptsJson"])) == 8


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A third embedded server, standing in for a database neo4j-admin loaded offline."""
    yield from _another_server(tmp_path_factory, "offline-home")


def _load_like_neo4j_admin(store: Store, folder: Path) -> None:
    """What ``neo4j-admin database import full --nodes=nodes.csv --relationships=relationships.csv``
    leaves behind: every row a node or relationship with its labels, type and typed properties,
    nothing else (no :Run, :Model or run columns)."""
    from atlas.schema import KIND_LABEL
    from queries.transfer import _read_meta, _read_table

    json_cols = _read_meta(folder).get("jsonProperties") or {}
    labels_ok = {"Component", *KIND_LABEL.values()}
    for _, (cid, labels), props in _read_table(folder / "nodes.csv", ["componentId:ID", ":LABEL"], json_cols.get("nodes", [])):
        assert set(labels.split(";")) <= labels_ok
        props = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in props.items()}  # JSON columns load as text
        store.run(f"CREATE (c:{':'.join(labels.split(';'))}) SET c = $p, c.componentId = $id", {"p": props, "id": cid}, write=True)
    for _, (a, b, rel), props in _read_table(folder / "relationships.csv", [":START_ID", ":END_ID", ":TYPE"], json_cols.get("relationships", [])):
        assert rel in {"ATTRIBUTION", "ATTRIBUTION_AT", "ABLATION", "PART_OF"}
        props = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in props.items()}
        store.run(f"MATCH (x:Component {{componentId: $a}}), (y:Component {{componentId: $b}}) CREATE (x)-[e:{rel}]->(y) SET e = $p",
                  {"a": a, "b": b, "p": props}, write=True)


def test_records_after_an_offline_bulk_load(store: Store, embedded: StoreSettings, offline: Store, tmp_path: Path) -> None:
    rich_run = "transfer-plain"
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4), embedded.home, run_id=rich_run, progress=False)
    folder = tmp_path / "run"
    export_run_csv(store, rich_run, folder)
    with pytest.raises(ValidationError, match="holds 0 ATTRIBUTION edges"):  # the bulk load has not happened
        import_run_csv(offline, folder, edges_loaded=True)
    assert cx.require_run(offline, rich_run).status is RunStatus.FAILED  # its claim released: a later import may retry
    offline.run("MATCH (n) DETACH DELETE n", write=True)  # neo4j-admin's full import makes a new database
    _load_like_neo4j_admin(offline, folder)
    counts = cx.count_graph(offline)
    out = import_run_csv(offline, folder, edges_loaded=True)
    assert out.status == "records written"
    assert cx.count_graph(offline)["relationships"] == counts["relationships"] + 1  # the run's OF_MODEL link, no edge twice
    a, b = _snapshot(store, rich_run), _snapshot(offline, rich_run)
    assert b["run"] == a["run"] and b["model"] == a["model"] and b["edges"] == a["edges"]
    mine, theirs = cx.fetch_edges(offline, rich_run), cx.fetch_edges(store, rich_run)  # through the run's packed columns
    key = ["componentId_pre", "componentId_post", "channel"]
    pd.testing.assert_frame_equal(mine.sort_values(key).reset_index(drop=True)[theirs.columns],
                                  theirs.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert import_run_csv(offline, folder, edges_loaded=True).status == "unchanged"


def test_offline_bulk_load_of_list_valued_edges_is_refused(store: Store, rich_run: str, offline: Store, tmp_path: Path) -> None:
    export_run_csv(store, rich_run, tmp_path / "run")
    with pytest.raises(ValidationError, match="promptScores"):
        import_run_csv(offline, tmp_path / "run", edges_loaded=True)
    assert cx.fetch_run(offline, rich_run) is None


def _channel(rows: list[list[str]], value: str) -> list[list[str]]:
    i = rows[0].index("channel")
    rows[1][i] = value
    return rows


@pytest.mark.parametrize("case", ["changed after export", "edge count", "unknown channel", "duplicate edge"])
def test_an_import_that_disagrees_with_its_files_leaves_nothing(store: Store, rich_run: str, tmp_path: Path, case: str,
                                                                 capsys: pytest.CaptureFixture[str], embedded: StoreSettings) -> None:
    """run.json records each file's sha256 and the run's edge count: a folder edited after export, a
    count that disagrees, an unknown channel or a repeated edge is refused before anything is written
    (no :Run, not even a failed one), in one line that quotes no file content."""
    folder = tmp_path / "f"
    export_run_csv(store, rich_run, folder)
    meta = json.loads((folder / "run.json").read_text())
    meta["run"]["runId"] = "never-written"
    _corrupt(folder, "relationships.csv", lambda rows: [rows[0]] + [[*r[:3], *(("never-written" if h == "runId" else v) for h, v in zip(rows[0][3:], r[3:]))] for r in rows[1:]])
    if case == "changed after export":
        needle = "is not the file run.json records"
    else:
        meta.pop("files")
        if case == "edge count":
            meta["run"]["nEdges"] = int(meta["run"]["nEdges"]) - 1
            needle = "edges but relationships.csv holds"
        elif case == "unknown channel":
            _corrupt(folder, "relationships.csv", lambda rows: _channel(rows, "z"))
            needle = "unknown channel 'z'"
        else:
            _corrupt(folder, "relationships.csv", lambda rows: [*rows, rows[1]])
            needle = "a second"
    (folder / "run.json").write_text(json.dumps(meta))
    before = cx.count_graph(store)
    code = main(["import", str(folder), "--home", str(embedded.home)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert cx.fetch_run(store, "never-written") is None and cx.count_graph(store) == before


def test_an_error_never_quotes_the_file_it_was_pointed_at(store: Store, rich_run: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], embedded: StoreSettings) -> None:
    folder = tmp_path / "f"
    export_run_csv(store, rich_run, folder)
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:the-secret-line:/root:/bin/bash\n")
    (folder / "nodes.csv").unlink()
    (folder / "nodes.csv").symlink_to(secret)
    meta = json.loads((folder / "run.json").read_text())
    meta.pop("files")
    (folder / "run.json").write_text(json.dumps(meta))
    code = main(["import", str(folder), "--home", str(embedded.home)])
    err = capsys.readouterr().err
    assert code == 2 and "not an atlas export" in err and "secret" not in err and "root" not in err
