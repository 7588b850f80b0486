"""Query modules on hand-built graphs with hand-computed answers (no database)."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import pytest

from atlas.errors import NoPath, ValidationError
from queries.binding import find_binding
from queries.criteria import ComponentCriteria
from queries.graph import collapse, edges_to_graph
from queries.hierarchy import compute_hierarchy
from queries.motifs import motif_census, null_note
from queries.paths import top_paths


def frame(rows: list[tuple[str, str, str, float]], model: str = "h") -> pd.DataFrame:
    return pd.DataFrame([(f"{model}/{a}", f"{model}/{b}", c, s) for a, b, c, s in rows],
                        columns=["componentId_pre", "componentId_post", "channel", "score"])


# EMBED -> L0.H0 (3, q) and (1, k); EMBED -> L0.H1 (-1, v); L0.H0 -> LOGITS 2; L0.H1 -> LOGITS -2; EMBED -> LOGITS 1
HAND = frame([
    ("EMBED", "L0.H0", "q", 3.0), ("EMBED", "L0.H0", "k", 1.0), ("EMBED", "L0.H1", "v", -1.0),
    ("L0.H0", "LOGITS", "in", 2.0), ("L0.H1", "LOGITS", "in", -2.0), ("EMBED", "LOGITS", "in", 1.0),
])


def test_collapse_shares_sum_to_one() -> None:
    g = collapse(edges_to_graph(HAND))
    assert g["h/EMBED"]["h/L0.H0"]["weight"] == 4.0 and sorted(g["h/EMBED"]["h/L0.H0"]["channels"]) == ["k", "q"]
    assert g["h/L0.H0"]["h/LOGITS"]["share"] == pytest.approx(0.4)
    for v in g.nodes:
        ins = [d["share"] for _, _, d in g.in_edges(v, data=True)]
        assert not ins or sum(ins) == pytest.approx(1.0)


def test_top_paths_hand_computed() -> None:
    paths = top_paths(edges_to_graph(HAND), k=5)
    # strengths: EMBED->L0.H0->LOGITS = 1 * 0.4; EMBED->L0.H1->LOGITS = 1 * 0.4; EMBED->LOGITS = 0.2
    assert paths["strength"].tolist() == pytest.approx([0.4, 0.4, 0.2])
    assert set(paths["path"].iloc[:2]) == {"h/EMBED -> h/L0.H0 -> h/LOGITS", "h/EMBED -> h/L0.H1 -> h/LOGITS"}
    assert paths["length"].tolist() == [2, 2, 1]
    through = top_paths(edges_to_graph(HAND), through=[ComponentCriteria.parse("L0.H1")])
    assert through["path"].tolist() == ["h/EMBED -> h/L0.H1 -> h/LOGITS"]
    assert top_paths(edges_to_graph(HAND), max_length=1)["path"].tolist() == ["h/EMBED -> h/LOGITS"]
    strong = top_paths(edges_to_graph(HAND), min_weight=1.5)  # drops the k edge, the v edge and EMBED->LOGITS
    assert strong["path"].tolist() == ["h/EMBED -> h/L0.H0 -> h/LOGITS"] and strong["strength"].iloc[0] == pytest.approx(0.5)


def test_split_channel_paths() -> None:
    paths = top_paths(edges_to_graph(HAND), k=10, split_channels=True)
    # into L0.H0: q has share 3/4, k 1/4; into LOGITS: 0.4, 0.4, 0.2
    by = {(p, tuple(c)): s for p, c, s in zip(paths["path"], paths["channels"], paths["strength"])}
    assert by[("h/EMBED -> h/L0.H0 -> h/LOGITS", ("q", "in"))] == pytest.approx(0.3)
    assert by[("h/EMBED -> h/L0.H0 -> h/LOGITS", ("k", "in"))] == pytest.approx(0.1)
    assert len(paths) == 4


def test_no_path_is_an_error() -> None:
    with pytest.raises(NoPath):
        top_paths(edges_to_graph(HAND), sources=ComponentCriteria(kind="Mlp"))
    with pytest.raises(ValidationError):
        top_paths(edges_to_graph(HAND), k=0)


LEVELS = frame([
    ("EMBED", "L0.H0", "q", 1.0), ("L0.H0", "L1.H0", "k", 1.0), ("L1.H0", "LOGITS", "in", 1.0),
    ("EMBED", "L1.H0", "v", 0.5), ("L0.H0", "LOGITS", "in", 0.5), ("EMBED", "LOGITS", "in", 0.25),
])


def test_hierarchy_levels_and_skips() -> None:
    h = compute_hierarchy(edges_to_graph(LEVELS))
    levels = dict(zip(h.levels["componentId"], h.levels["level"]))
    assert levels == {"h/EMBED": 0, "h/L0.H0": 1, "h/L1.H0": 2, "h/LOGITS": 3}
    skips = {(a, b): s for a, b, s in zip(h.edges["componentId_pre"], h.edges["componentId_post"], h.edges["skip"])}
    assert skips[("h/EMBED", "h/LOGITS")] == 2 and skips[("h/EMBED", "h/L1.H0")] == 1 and skips[("h/L0.H0", "h/L1.H0")] == 0
    assert h.summary["strictness"] == pytest.approx(0.5) and h.summary["skipHistogram"] == {0: 3, 1: 2, 2: 1}
    assert h.summary["depth"] == 3 and h.summary["flowHierarchy"] == 1.0
    assert h.summary["levelLayerSpearman"] == pytest.approx(1.0)
    # with a threshold the weak skips vanish and the chain is strict
    strict = compute_hierarchy(edges_to_graph(LEVELS), min_weight=0.9)
    assert strict.summary["strictness"] == 1.0


def test_hierarchy_modules_separate_two_dense_clusters() -> None:
    """Heads 0-1 and heads 2-3 are wired densely among themselves and weakly to the shared ends."""
    rows = []
    for a, b in ((0, 1), (2, 3)):
        for src in (a, b):
            for dst in (a, b):
                rows.append((f"L0.H{src}", f"L1.H{dst}", "k", 5.0))
                rows.append((f"L0.H{src}", f"L1.H{dst}", "v", 5.0))
    rows += [("EMBED", f"L0.H{h}", "q", 0.1) for h in range(4)] + [(f"L1.H{h}", "LOGITS", "in", 0.1) for h in range(4)]
    h = compute_hierarchy(edges_to_graph(frame(rows)))
    mod = dict(zip(h.levels["componentId"], h.levels["module"]))
    assert mod["h/L0.H0"] == mod["h/L1.H1"] == mod["h/L0.H1"] == mod["h/L1.H0"]
    assert mod["h/L0.H2"] == mod["h/L1.H3"] == mod["h/L0.H3"] == mod["h/L1.H2"]
    assert mod["h/L0.H0"] != mod["h/L0.H2"] and h.summary["modularity"] > 0.3


def test_cycle_is_refused() -> None:
    g = nx.DiGraph()
    g.add_edge("a", "b", weight=1.0)
    g.add_edge("b", "a", weight=1.0)
    with pytest.raises(ValidationError):
        compute_hierarchy(g)


def test_motif_counts_hand_computed() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c"), ("d", "c"), ("c", "e")])
    census = motif_census(g, n_random=5).set_index("motif")["count"]
    # FFL {a,b,c}; chains {a,c,e},{b,c,e},{d,c,e}; convergence {a,d,c},{b,d,c}; divergence none
    assert census["feed-forward loop"] == 1
    assert census["chain"] == 3
    assert census["convergence"] == 2
    assert census["divergence"] == 0


def test_motif_z_scores_detect_planted_feed_forward_loops() -> None:
    g = nx.gnm_random_graph(40, 60, seed=1, directed=True)
    g = nx.DiGraph([(u, v) for u, v in g.edges() if u < v])  # feed-forward
    for i in range(0, 36, 4):
        g.add_edges_from([(i, i + 1), (i + 1, i + 2), (i, i + 2)])
    out = motif_census(g, n_random=60, seed=0).set_index("motif")
    assert out.loc["feed-forward loop", "rewired"] > 0.3
    assert out.loc["feed-forward loop", "zScore"] > 2
    assert (out["null"] == "defined").all() and null_note(out.reset_index()) is None


def test_motif_census_says_when_its_null_is_undefined(capsys: pytest.CaptureFixture[str]) -> None:
    """A star admits no degree-preserving rewiring: no z-score exists, and the header says so."""
    star = nx.DiGraph([("hub", f"leaf{i}") for i in range(5)])
    out = motif_census(star, n_random=5)
    assert (out["null"] == "no rewiring").all() and out["zScore"].isna().all() and (out["rewired"] == 0).all()
    assert "null undefined" in null_note(out)
    # a census whose null rewired but never varied for one motif: that motif's z-score is not defined
    g = nx.gnm_random_graph(40, 60, seed=1, directed=True)
    g = nx.DiGraph([(u, v) for u, v in g.edges() if u < v])
    for i in range(0, 36, 4):
        g.add_edges_from([(i, i + 1), (i + 1, i + 2), (i, i + 2)])
    out = motif_census(g, n_random=20, seed=1)
    assert (out["null"] == "defined").all()
    out.loc[3, ["randomStd", "zScore", "null"]] = [0.0, float("nan"), "constant"]
    assert null_note(out) == ("null undefined for feed-forward loop: every random graph holds it equally often, "
                              "so its z-score is not defined")


BIND = frame([
    ("EMBED", "L0.H0", "v", 1.0), ("EMBED", "L1.H0", "q", 2.0), ("L0.H0", "L1.H0", "k", 2.0),
    ("EMBED", "L1.H0", "v", 1.0), ("L1.H0", "LOGITS", "in", 3.0), ("EMBED", "LOGITS", "in", 1.0),
    # L1.H1: q and k both from the embedding: no motif (one source); L1.H2 feeds nothing
    ("EMBED", "L1.H1", "q", 2.0), ("EMBED", "L1.H1", "k", 2.0), ("L1.H1", "LOGITS", "in", 1.0),
    ("EMBED", "L1.H2", "q", 2.0), ("L0.H0", "L1.H2", "k", 2.0),
])


def test_binding_finds_the_built_motif() -> None:
    out = find_binding(edges_to_graph(BIND))
    assert out["head"].tolist() == ["h/L1.H0"]
    row = out.iloc[0]
    assert (row["sourceA"], row["channelA"], row["sourceB"], row["channelB"]) == ("h/L0.H0", "k", "h/EMBED", "q")
    assert row["readers"] == ["h/LOGITS"] and row["vSources"] == ["h/EMBED"]
    assert row["score"] == pytest.approx(0.4 * 0.4 * 0.6)
    assert find_binding(edges_to_graph(BIND), min_share=0.5).empty
    assert row["moverChannel"] == "k"
    # against a null, an input must beat its own slot's share there (model ids may differ)
    assert find_binding(edges_to_graph(BIND), null={("L0.H0", "L1.H0", "k"): 0.3})["head"].tolist() == ["h/L1.H0"]
    assert find_binding(edges_to_graph(BIND), null={("L0.H0", "L1.H0", "k"): 0.5}).empty
    from queries.binding import null_shares

    assert null_shares(edges_to_graph(BIND))[("L0.H0", "L1.H0", "k")] == pytest.approx(0.4)


def test_criteria_cypher_is_parameterised() -> None:
    text, params = ComponentCriteria.parse("kind=Head,layer=1|2").cypher("n")
    assert "$" in text and params == {"cKind": "Head", "cLayer": [1, 2]}
    with pytest.raises(ValidationError):
        ComponentCriteria.parse("colour=red")


@pytest.mark.parametrize("split", [False, True])
def test_pruned_frame_search_equals_the_plain_search(split: bool) -> None:
    """On a random layered run the pruned search returns exactly the plain search's paths."""
    import numpy as np

    from queries.paths import top_paths_frame

    rng = np.random.default_rng(0)
    rows = []
    senders = ["EMBED"] + [f"L{l}.H{h}" for l in range(4) for h in range(4)]
    for l in range(4):
        for h in range(4):
            for s in senders[: 1 + 4 * l]:
                for ch in "qkv":
                    rows.append((s, f"L{l}.H{h}", ch, float(rng.standard_cauchy())))
    rows += [(s, "LOGITS", "in", float(rng.standard_cauchy())) for s in senders]
    edges = frame(rows, "r")
    plain = top_paths(edges_to_graph(edges), k=10, split_channels=split)
    fast = top_paths_frame(edges, k=10, split_channels=split)
    assert fast["path"].tolist() == plain["path"].tolist()
    assert fast["strength"].to_numpy() == pytest.approx(plain["strength"].to_numpy())
    through = [ComponentCriteria.parse("L2.*")]
    assert top_paths_frame(edges, k=3, through=through)["path"].tolist() == top_paths(edges_to_graph(edges), k=3, through=through)["path"].tolist()


def _all_paths(edges: pd.DataFrame, split: bool) -> list[tuple[float, list[str], list[str]]]:
    """Every simple path between any two components of a frame, by enumeration: (strength, nodes,
    channels per hop), shares as the module docstring defines them."""
    import math

    import networkx as nx

    from queries.graph import collapse
    from queries.paths import _split

    graph = edges_to_graph(edges)
    g = _split(graph, 0.0) if split else collapse(graph, 0.0)
    real = [n for n in g.nodes if not g.nodes[n].get("virtual")]
    out = []
    for a in real:
        for b in real:
            if a == b:
                continue
            for path in nx.all_simple_paths(g, a, b):
                if g.nodes[path[-1]].get("virtual"):
                    continue
                hops = [(u, v) for u, v in zip(path, path[1:]) if not g[u][v].get("virtual")]
                out.append((math.prod(g[u][v]["share"] for u, v in hops), [n for n in path if not g.nodes[n].get("virtual")],
                            ["+".join(sorted(g[u][v]["channels"])) for u, v in hops]))
    return out


@pytest.mark.parametrize("split", [False, True])
def test_k_best_sweep_equals_enumeration(split: bool) -> None:
    """The frame search (a k-best sweep over the DAG) returns the strongest of all paths that
    answer each question, in order, with their channels: sources and targets by criteria,
    ``through`` counted inside the path only, ``max_length``, and fewer paths than asked for."""
    import numpy as np

    from queries.paths import top_paths_frame

    rng = np.random.default_rng(7)
    senders = ["EMBED"] + [c for l in range(3) for c in ([f"L{l}.H{h}" for h in range(2)] + [f"L{l}.MLP"])]
    rows = []
    for l in range(3):
        visible = senders[: 1 + 3 * l]
        rows += [(s, f"L{l}.H{h}", ch, float(rng.standard_cauchy())) for h in range(2) for s in visible for ch in "qkv"]
        rows += [(s, f"L{l}.MLP", "in", float(rng.standard_cauchy())) for s in visible + [f"L{l}.H0", f"L{l}.H1"]]
    rows += [(s, "LOGITS", "in", float(rng.standard_cauchy())) for s in senders]
    edges = frame(rows, "r")
    every = _all_paths(edges, split)
    crit = ComponentCriteria.parse
    questions = [
        ({}, lambda n: n[0] == "r/EMBED" and n[-1] == "r/LOGITS"),
        ({"max_length": 2}, lambda n: n[0] == "r/EMBED" and n[-1] == "r/LOGITS" and len(n) <= 3),
        ({"sources": crit("L1.*"), "targets": crit("L2.H*")}, lambda n: n[0].startswith("r/L1.") and n[-1].startswith("r/L2.H")),
        ({"through": [crit("L1.MLP"), crit("L0.H*")]},
         lambda n: n[0] == "r/EMBED" and n[-1] == "r/LOGITS" and "r/L1.MLP" in n[1:-1] and any(x.startswith("r/L0.H") for x in n[1:-1])),
        ({"sources": crit("L2.H1"), "k": 50}, lambda n: n[0] == "r/L2.H1" and n[-1] == "r/LOGITS"),
    ]
    for kwargs, answers in questions:
        k = kwargs.pop("k", 8)
        want = sorted((p for p in every if answers(p[1])), key=lambda p: -p[0])[:k]
        got = top_paths_frame(edges, k=k, split_channels=split, **kwargs)
        assert len(got) == len(want) and len(want) >= 1, kwargs
        assert got["strength"].to_numpy() == pytest.approx([s for s, _, _ in want], rel=1e-12), kwargs
        assert [(n, c) for n, c in zip(got["nodes"], got["channels"])] == [(n, c) for _, n, c in want], kwargs
    assert len(top_paths_frame(edges, k=50, sources=crit("L2.H1"))) < 50  # all it has, no padding
    for impossible in ([crit("L7.*")], [crit("L0.H0"), crit("EMBED")]):  # no component / only the path's start
        with pytest.raises(NoPath):
            top_paths_frame(edges, through=impossible, split_channels=split)


def test_frame_search_falls_back_to_yen_when_edges_run_backwards() -> None:
    """A hand-made frame whose edges are not all forward in the layer order: no sweep is safe, the
    answer comes from Yen's algorithm and equals the graph search's."""
    from queries.paths import top_paths_frame

    looped = frame([("EMBED", "L1.H0", "q", 2.0), ("L1.H0", "L0.H0", "v", 1.0), ("L0.H0", "LOGITS", "in", 1.0),
                    ("EMBED", "L0.H0", "k", 1.0), ("L1.H0", "LOGITS", "in", 1.0)])
    fast = top_paths_frame(looped, k=5)
    assert fast["path"].tolist() == top_paths(edges_to_graph(looped), k=5)["path"].tolist()
    assert "h/EMBED -> h/L1.H0 -> h/L0.H0 -> h/LOGITS" in fast["path"].tolist()


@pytest.mark.parametrize("split", [False, True])
def test_paths_through_criteria_equal_brute_force(split: bool) -> None:
    """The constrained search (a product of the graph with the criteria met) returns exactly the
    strongest of *all* simple paths that pass through every criterion, in order."""
    import math

    import networkx as nx
    import numpy as np

    from queries.graph import collapse
    from queries.paths import _split, top_paths_frame

    rng = np.random.default_rng(3)
    senders = ["EMBED"] + [f"L{l}.H{h}" for l in range(4) for h in range(3)]
    rows = [(s, f"L{l}.H{h}", ch, float(rng.standard_cauchy())) for l in range(4) for h in range(3) for s in senders[: 1 + 3 * l] for ch in "qkv"]
    rows += [(s, "LOGITS", "in", float(rng.standard_cauchy())) for s in senders]
    edges = frame(rows, "r")
    graph = edges_to_graph(edges)
    prepared = _split(graph, 0.0) if split else collapse(graph, 0.0)
    through = [ComponentCriteria.parse("L2.*"), ComponentCriteria.parse("L0.H1")]
    found = []
    for path in nx.all_simple_paths(prepared, "r/EMBED", "r/LOGITS"):
        real = [n for n in path if not prepared.nodes[n].get("virtual")]
        if all(any(c.matches({"componentId": n, **prepared.nodes[n]}) for n in real[1:-1]) for c in through):
            strength = math.prod(prepared[a][b]["share"] for a, b in zip(path, path[1:]) if not prepared[a][b].get("virtual"))
            found.append((strength, " -> ".join(real)))
    found.sort(key=lambda x: -x[0])
    assert len(found) > 5
    ours = top_paths(graph, k=5, through=through, split_channels=split)
    assert ours["strength"].to_numpy() == pytest.approx([s for s, _ in found[:5]], rel=1e-12)
    if not split:  # split paths differ by channel only; their node lists may repeat
        assert ours["path"].tolist() == [p for _, p in found[:5]]
        assert top_paths_frame(edges, k=5, through=through)["path"].tolist() == ours["path"].tolist()
    # ids and channels as categoricals (a fetch straight from a run's packed columns): the same answers
    coded = edges.astype({c: "category" for c in ("componentId_pre", "componentId_post", "channel")})
    for kwargs in ({"k": 5}, {"k": 5, "through": through}):
        pd.testing.assert_frame_equal(top_paths_frame(coded, split_channels=split, **kwargs), top_paths_frame(edges, split_channels=split, **kwargs))


def _row_by_row_graph(edges: pd.DataFrame, components: pd.DataFrame | None = None) -> nx.MultiDiGraph:
    """The plain construction edges_to_graph must equal: one row at a time, pre then post."""
    from queries.graph import _present, kind_and_layer

    g = nx.MultiDiGraph()
    for rec in (components.to_dict("records") if components is not None else []):
        g.add_node(rec["componentId"], **{k: v for k, v in rec.items() if k != "componentId" and _present(v)})
    for rec in edges.to_dict("records"):
        for end in ("pre", "post"):
            cid = rec[f"componentId_{end}"]
            if cid not in g:
                kind, layer = kind_and_layer(cid)
                g.add_node(cid, kind=rec.get(f"kind_{end}") if _present(rec.get(f"kind_{end}")) else kind,
                           layer=rec.get(f"layer_{end}") if _present(rec.get(f"layer_{end}")) else layer)
        g.add_edge(rec["componentId_pre"], rec["componentId_post"], key=rec["channel"], channel=rec["channel"], score=float(rec["score"]))
    top = max(a["layer"] for _, a in g.nodes(data=True) if _present(a.get("layer"))) + 1
    for _, attrs in g.nodes(data=True):
        if attrs.get("kind") == "Logit" and not _present(attrs.get("layer")):
            attrs["layer"] = top
    return g


@pytest.mark.parametrize("with_ends", [False, True])
def test_graph_building_keeps_row_order_and_attributes(with_ends: bool) -> None:
    """The vectorised edges_to_graph gives the graph a row loop gives: the same nodes in the same
    order (the seeded Louvain of the hierarchy depends on it), the same attributes, the same edges
    in the same order, a repeated (pre, post, channel) keeping its last score."""
    import random

    rng = random.Random(3)
    names = ["EMBED", "LOGITS"] + [f"L{l}.H{h}" for l in range(3) for h in range(3)] + [f"L{l}.N{n}" for l in range(3) for n in range(4)]
    rows = [(rng.choice(names[:1] + names[2:]), rng.choice(names[1:]), rng.choice(["q", "k", "v", "in"]), rng.uniform(-1, 1))
            for _ in range(300)]
    edges = frame(rows)
    if with_ends:  # as fetched: kinds and layers beside the ids, the logits' layer missing
        from queries.graph import kind_and_layer

        for end in ("pre", "post"):
            ends = [kind_and_layer(c) for c in edges[f"componentId_{end}"]]
            edges[f"kind_{end}"] = [k for k, _ in ends]
            edges[f"layer_{end}"] = pd.array([lay for _, lay in ends], dtype="Int64").astype(object)
    components = pd.DataFrame([{"componentId": "h/L1.N2", "kind": "Neuron", "layer": 1, "frequency": 0.5, "topTokens": ["a", "b"]}])
    for comps in (None, components):
        got, want = edges_to_graph(edges, comps), _row_by_row_graph(edges, comps)
        assert list(got.nodes(data=True)) == list(want.nodes(data=True))
        assert list(got.edges(keys=True, data=True)) == list(want.edges(keys=True, data=True))
        assert got.number_of_edges() < len(rows)  # repeated keys were merged, as add_edge merges them
        for min_weight in (0.0, 0.3):  # channels merged in one pass: what has_edge/add_edge per edge gives
            merged, plain = collapse(got, min_weight), _edge_by_edge_collapse(got, min_weight)
            assert list(merged.nodes(data=True)) == list(plain.nodes(data=True))
            assert list(merged.edges(data=True)) == list(plain.edges(data=True))


def _edge_by_edge_collapse(graph: nx.MultiDiGraph, min_weight: float) -> nx.DiGraph:
    import math

    out = nx.DiGraph()
    out.add_nodes_from(graph.nodes(data=True))
    for u, v, d in graph.edges(data=True):
        if abs(d["score"]) < min_weight:
            continue
        if out.has_edge(u, v):
            out[u][v]["weight"] += abs(d["score"])
            out[u][v]["score"] += d["score"]
            out[u][v]["channels"].append(d["channel"])
        else:
            out.add_edge(u, v, weight=abs(d["score"]), score=d["score"], channels=[d["channel"]])
    for v in out.nodes:
        total = sum(d["weight"] for _, _, d in out.in_edges(v, data=True))
        for _, _, d in out.in_edges(v, data=True):
            d["share"] = d["weight"] / total if total > 0 else 0.0
            d["cost"] = -math.log(d["share"]) if d["share"] > 0 else math.inf
    return out


def test_motif_counts_equal_the_networkx_triadic_census() -> None:
    """The census counts triads from sparse products of the adjacency; on random digraphs with
    reciprocal arcs (which rewiring creates), isolated nodes and a self-loop it gives networkx's
    triadic_census for the four motifs."""
    import numpy as np

    from queries.motifs import MOTIFS, _counts

    rng = np.random.default_rng(1)
    for _ in range(60):
        g = nx.gnp_random_graph(int(rng.integers(3, 25)), float(rng.uniform(0.05, 0.7)), seed=int(rng.integers(2**31)), directed=True)
        want = {code: nx.triadic_census(g)[code] for code in MOTIFS}
        g.add_edge(0, 0)  # a self-loop joins no triad
        assert _counts(g) == want


def _binding_by_graph(graph: nx.MultiDiGraph, min_share: float, channels: str) -> list[tuple[str, str, str, str, float]]:
    """The binding search over a networkx graph, edge by edge: the reference for the frame search."""
    import itertools

    totals: dict[str, float] = {}
    for _, v, d in graph.edges(data=True):
        totals[v] = totals.get(v, 0.0) + abs(d["score"])
    shares: dict[str, dict[str, dict[str, float]]] = {}
    for u, v, d in graph.edges(data=True):
        if graph.nodes[v].get("kind") == "Head" and totals[v] > 0:
            shares.setdefault(v, {}).setdefault(d["channel"], {})[u] = abs(d["score"]) / totals[v]
    merged = collapse(graph)
    allowed = {("k", "q")} if channels == "qk" else {("k", "q"), ("q", "v"), ("k", "v")}
    found = []
    for head, by_channel in shares.items():
        readers = [d["share"] for _, _, d in merged.out_edges(head, data=True) if d["share"] >= min_share]
        significant = [(ch, src, s) for ch, srcs in by_channel.items() for src, s in srcs.items() if s >= min_share]
        scored = [(sa * sb * max(readers), *sorted([(ca, a), (cb, b)]))
                  for (ca, a, sa), (cb, b, sb) in itertools.combinations(significant, 2)
                  if readers and ca != cb and a != b and tuple(sorted((ca, cb))) in allowed
                  and "Head" in (graph.nodes[a].get("kind"), graph.nodes[b].get("kind"))]
        if scored:
            score, (ca, a), (cb, b) = max(scored)
            found.append((head, a, ca, b, score))
    return sorted(found, key=lambda r: -r[4])


@pytest.mark.parametrize("channels", ["qk", "any"])
def test_binding_over_frames_equals_the_graph_search(channels: str) -> None:
    """fetch_binding runs the search on the run's edge frame (grouped sums, no graph object); on
    random layered connectomes it finds the heads, pairs and scores the edge-by-edge search over the
    networkx graph finds."""
    import numpy as np

    rng = np.random.default_rng(7)
    names = ["EMBED"] + [f"L{l}.H{h}" for l in range(3) for h in range(3)] + [f"L{l}.MLP" for l in range(3)] + ["LOGITS"]
    layer = {n: -1 if n == "EMBED" else 9 if n == "LOGITS" else int(n[1]) for n in names}
    found = 0
    for _ in range(8):
        rows = []
        for post in names[1:]:
            for pre in names:
                if layer[pre] < layer[post] and rng.random() < 0.6:
                    for ch in (["q", "k", "v"] if ".H" in post else ["in"]):
                        rows.append((pre, post, ch, float(rng.normal() * rng.exponential())))
        graph = edges_to_graph(frame(rows))
        got = find_binding(graph, min_share=0.08, channels=channels)
        want = _binding_by_graph(graph, 0.08, channels)
        found += len(want)
        assert list(zip(got["head"], got["sourceA"], got["channelA"], got["sourceB"])) == [(h, a, ca, b) for h, a, ca, b, _ in want]
        assert got["score"].tolist() == pytest.approx([s for *_, s in want])
    assert found >= 5, found  # the comparison was over real findings
