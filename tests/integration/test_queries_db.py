"""Query modules through the real database: the hand-built graphs give the hand-computed answers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.connectome import delete_path_caches, require_run
from atlas.errors import ValidationError
from atlas.ids import parse_component_id
from atlas.records import RunRecord
from atlas.schema import RunStatus
from atlas.store import Store
from atlas_cli import main
from ingest.jobs.run import IngestConfig, run_ingest
from queries.binding import fetch_binding
from queries.criteria import ComponentCriteria
from queries.export import select_graph, to_gexf, to_graphml, to_json, to_png
from queries.hierarchy import fetch_hierarchy, write_hierarchy
from queries.motifs import fetch_motifs
from queries.paths import fetch_all_paths, fetch_paths, fetch_shortest_paths, write_path_cache
from tests.conftest import model_stub
from tests.unit.test_queries import BIND, HAND, LEVELS


def write_hand_run(store: Store, run_id: str, edges: pd.DataFrame) -> None:
    ids = sorted(set(edges["componentId_pre"]) | set(edges["componentId_post"]))
    refs = [parse_component_id(c) for c in ids]
    top = max((r.layer for r in refs if r.layer is not None), default=0) + 1
    nodes = pd.DataFrame([{"componentId": c, "kind": r.kind.value, "modelId": r.model_id,
                           "layer": r.layer if r.layer is not None else top, "head": r.head} for c, r in zip(ids, refs)])
    cx.ensure_schema(store)
    cx.write_model(store, model_stub(refs[0].model_id))
    cx.write_components(store, nodes)
    cx.begin_run(store, RunRecord(run_id=run_id, model_id=refs[0].model_id))
    cx.write_edges(store, edges, run_id)
    cx.set_run_status(store, run_id, RunStatus.COMPLETE, n_edges=len(edges))


@pytest.fixture(scope="module")
def hand(store: Store) -> Store:
    write_hand_run(store, "hand", HAND)
    write_hand_run(store, "levels", LEVELS.assign(componentId_pre=LEVELS.componentId_pre.str.replace("h/", "lv/"),
                                                   componentId_post=LEVELS.componentId_post.str.replace("h/", "lv/")))
    write_hand_run(store, "bind", BIND.assign(componentId_pre=BIND.componentId_pre.str.replace("h/", "b/"),
                                               componentId_post=BIND.componentId_post.str.replace("h/", "b/")))
    return store


def test_paths_through_the_database(hand: Store) -> None:
    paths = fetch_paths(hand, "hand", top=5)
    assert paths["strength"].tolist() == pytest.approx([0.4, 0.4, 0.2])
    through = fetch_paths(hand, "hand", through=[ComponentCriteria.parse("L0.H1")])
    assert through["path"].tolist() == ["h/EMBED -> h/L0.H1 -> h/LOGITS"]
    shortest = fetch_shortest_paths(hand, "hand", "h/EMBED", "h/LOGITS")
    assert shortest["path"].tolist() == ["h/EMBED -> h/LOGITS"]
    # with |score| >= 1.5 the direct edge goes; the fewest hops are then 2, through L0.H0 only
    assert fetch_shortest_paths(hand, "hand", "h/EMBED", "h/LOGITS", min_weight=1.5)["path"].tolist() == ["h/EMBED -> h/L0.H0 -> h/LOGITS"]
    every = fetch_all_paths(hand, "hand", "h/EMBED", "h/LOGITS", max_length=2)
    assert len(every) == 4  # direct, via L0.H1 (v), via L0.H0 on q and on k
    assert every["strength"].iloc[0] == pytest.approx(6.0)  # |3| * |2| on the q channel


def test_hierarchy_through_the_database(hand: Store) -> None:
    result = fetch_hierarchy(hand, "levels")
    assert dict(zip(result.levels["componentId"], result.levels["level"])) == {"lv/EMBED": 0, "lv/L0.H0": 1, "lv/L1.H0": 2, "lv/LOGITS": 3}
    assert result.summary["skipHistogram"] == {0: 3, 1: 2, 2: 1}
    write_hierarchy(hand, "levels", result, 0.0)
    back = hand.read("MATCH (c:Component)-[p:IN_RUN]->(:Run {runId: 'levels'}) RETURN c.componentId AS id, p.level AS level")
    assert dict(zip(back["id"], back["level"])) == {"lv/EMBED": 0, "lv/L0.H0": 1, "lv/L1.H0": 2, "lv/LOGITS": 3}
    counts = cx.count_graph(hand)
    write_hierarchy(hand, "levels", result, 0.0)
    assert cx.count_graph(hand) == counts


def test_binding_and_motifs_through_the_database(hand: Store) -> None:
    found = fetch_binding(hand, "bind")
    assert found["head"].tolist() == ["b/L1.H0"] and found["sourceA"].iloc[0] == "b/L0.H0"
    census = fetch_motifs(hand, "levels", n_random=5).set_index("motif")["count"]
    assert census["feed-forward loop"] == 4  # every triple of the 4-level chain with its skips closes a loop


def test_binding_on_the_induction_model(hand: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """The textbook answer: previous-token head on k + current token on q -> induction head -> logits."""
    run_ingest(hand, IngestConfig(model="induction-2l", task="induction-mixed", n_prompts=16), embedded.home, run_id="mixed", progress=False)
    found = fetch_binding(hand, "mixed")
    top = found.iloc[0]
    assert top["head"].startswith("induction-2l/L1.")
    assert {(top["sourceA"], top["channelA"]), (top["sourceB"], top["channelB"])} == {("induction-2l/L0.H0", "k"), ("induction-2l/EMBED", "q")}
    assert top["readers"][0] == "induction-2l/LOGITS"
    assert main(["binding", "--run", "mixed", "--save", "1", "--json", "--home", str(embedded.home)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["head"] == top["head"]
    roles = hand.read("MATCH (c)-[m:MEMBER_OF]->(:Circuit {kind: 'binding', runId: 'mixed'}) RETURN c.componentId AS id, m.role AS role")
    assert dict(zip(roles["id"], roles["role"]))[top["head"]] == "binder"


def test_query_commands_print_tables(hand: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(embedded.home)]
    assert main(["paths", "--run", "hand", "--paths", "2", *home]) == 0
    assert "h/EMBED -> h/L0.H" in capsys.readouterr().out
    assert main(["paths", "--run", "hand", "--mode", "shortest", "--source", "h/EMBED", "--target", "h/LOGITS", *home]) == 0
    assert "h/EMBED -> h/LOGITS" in capsys.readouterr().out
    assert main(["hierarchy", "--run", "levels", *home]) == 0
    assert "strictness 0.500" in capsys.readouterr().out
    assert main(["motifs", "--run", "levels", "--random", "5", "--json", *home]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["motif"] for r in rows} == {"chain", "convergence", "divergence", "feed-forward loop"}
    # four nodes in a line admit no rewiring: the table's header says the null is undefined
    assert {r["null"] for r in rows} == {"no rewiring"} and all(r["zScore"] is None for r in rows)
    assert main(["motifs", "--run", "levels", "--random", "5", *home]) == 0
    assert capsys.readouterr().out.startswith("null undefined: no degree-preserving rewiring")
    assert main(["paths", "--run", "hand", "--source", "Mlp", *home]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_graph_exports_round_trip_through_their_readers(hand: Store, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    import networkx as nx

    graph = select_graph(hand, "hand")
    for writer, name in ((to_graphml, "g.graphml"), (to_gexf, "g.gexf"), (to_json, "g.json"), (to_png, "g.png")):
        path = writer(graph, tmp_path / name)
        assert path.stat().st_size > 100
    edges = {(u, v, d["channel"], d["score"]) for u, v, d in graph.edges(data=True)}
    # node-link JSON: networkx's own reader, defaults only, gives the directed multigraph back
    back = nx.node_link_graph(json.loads((tmp_path / "g.json").read_text()))
    assert back.is_directed() and back.is_multigraph()
    assert set(back.nodes) == set(graph.nodes) and {(u, v, d["channel"], d["score"]) for u, v, d in back.edges(data=True)} == edges
    assert back.graph["runId"] == "hand" and back.graph["status"] == "complete" and back.graph["selection"] == "all edges"
    assert back.nodes["h/L0.H1"]["kind"] == graph.nodes["h/L0.H1"]["kind"]
    # GraphML keeps the run's record as graph attributes
    gml = nx.read_graphml(tmp_path / "g.graphml", force_multigraph=True)
    assert gml.graph["runId"] == "hand" and gml.graph["modelId"] == "h" and gml.graph["nEdges"] == 6
    assert {(u, v, d["channel"], d["score"]) for u, v, d in gml.edges(data=True)} == edges
    # GEXF has no graph attributes: the record is in <meta>, and networkx still reads the graph
    root = ET.parse(tmp_path / "g.gexf").getroot()
    ns = {"g": "http://gexf.net/1.2"}
    assert json.loads(root.find("g:meta/g:description", ns).text)["runId"] == "hand"
    assert set(nx.read_gexf(tmp_path / "g.gexf").nodes) == set(graph.nodes)
    assert len(select_graph(hand, "hand", top=2).edges) == 2
    assert select_graph(hand, "hand", top=2).graph["selection"] == "top 2"
    assert len(select_graph(hand, "hand", paths=1).edges) == 2


def test_compare_across_checkpoints_and_models(hand: Store, embedded: StoreSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ingest.model.zoo import train_zoo_model
    from queries.compare import compare_runs, write_alignment

    # a home of its own: training there must not replace the zoo model other tests load
    models_home = tmp_path / "models-home"
    train_zoo_model("induction-2l", models_home / "zoo" / "induction-2l", steps=20, checkpoint_every=10)
    for step in (10, 20):
        run_ingest(hand, IngestConfig(model=f"induction-2l@{step}", method="eap", n_prompts=4), models_home, run_id=f"ck{step}", progress=False)
    out = compare_runs(hand, "ck10", "ck20", top=10)
    fig = out.figures
    # 20 steps of training here are not the shipped weights: another training run, named by its final weights
    family = fig["modelB"].removesuffix("/step-20")
    assert family.startswith("induction-2l-") and len(family) == len("induction-2l-") + 8
    assert fig["modelA"] == f"{family}/step-10" and not fig["aligned"] and fig["nShared"] == 81
    assert 0 <= fig["weightedJaccard"] <= 1 and -1 <= fig["spearman"] <= 1
    same = compare_runs(hand, "ck20", "ck20").figures
    assert same["weightedJaccard"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    assert fig["alignment"] == "names"  # checkpoints of one training run: the same components
    # a different model (no MLPs vs MLPs): no pairing is assumed without being asked for
    with pytest.raises(ValidationError, match="no stored alignment"):
        compare_runs(hand, "hand", "ck20")
    cross = compare_runs(hand, "hand", "ck20", align="structure")
    assert cross.figures["aligned"] and cross.figures["alignment"] == "structure"
    query = "MATCH (:Component {modelId: 'h'})-[e:ALIGNED_WITH]->(:Component {modelId: $m}) RETURN count(e) AS n"
    assert hand.read(query, {"m": fig["modelB"]})["n"].iloc[0] == 0  # comparing reads only
    assert write_alignment(hand, cross) == 4
    n = hand.read(query, {"m": fig["modelB"]})["n"].iloc[0]
    assert n == 4
    # once stored, the alignment is what a plain comparison of these two models uses
    again = compare_runs(hand, "hand", "ck20")
    assert again.figures["alignment"] == "structure" and again.figures["nShared"] == cross.figures["nShared"]
    assert main(["compare", "ck10", "ck20", "--png", str(tmp_path / "c.png"), "--html", str(tmp_path / "c.html"), "--home", str(embedded.home)]) == 0
    assert "weighted Jaccard" in capsys.readouterr().out
    assert (tmp_path / "c.png").stat().st_size > 1000 and "srcdoc=" in (tmp_path / "c.html").read_text()
    assert not (tmp_path / "c-a.html").exists()  # one self-contained page
    assert main(["ingest", "--model", "induction-2l@999", "--home", str(embedded.home)]) == 2
    assert "no checkpoint step 999" in capsys.readouterr().err


def test_default_pathways_are_kept_on_the_run(hand: Store) -> None:
    delete_path_caches(hand, "hand")
    first = fetch_paths(hand, "hand", top=2)
    assert not require_run(hand, "hand").details.get("topPaths")  # fetching reads only
    assert write_path_cache(hand, "hand") and not write_path_cache(hand, "hand")
    assert require_run(hand, "hand").details.get("topPaths")  # kept on the complete run
    again = fetch_paths(hand, "hand", top=2)
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True), check_dtype=False)
    assert again["strength"].tolist() == pytest.approx([0.4, 0.4])
    # the answer keeps the k it was computed for: a smaller one is served, a larger one replaces it
    from queries.paths import cached_paths

    delete_path_caches(hand, "hand")
    assert write_path_cache(hand, "hand", k=1) and not write_path_cache(hand, "hand", k=1)
    assert cached_paths(require_run(hand, "hand"))[0] == 1
    assert fetch_paths(hand, "hand", top=2)["path"].tolist() == first["path"].tolist()  # 2 > 1: computed, not cut short
    assert write_path_cache(hand, "hand", k=3) and cached_paths(require_run(hand, "hand"))[0] == 3
    # constrained questions are computed afresh, not served from the kept answer
    assert fetch_paths(hand, "hand", max_length=1)["path"].tolist() == ["h/EMBED -> h/LOGITS"]
