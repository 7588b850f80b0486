"""Pictures that can be compared: one width scale across panels, gained/lost edges marked, exact
zeros drawn neutral (not in the "raises the metric" colour)."""

from __future__ import annotations

import re
from pathlib import Path

import networkx as nx

from queries.export import ZERO_COLOUR, comparison_marks, max_abs_score, to_html, to_html_side_by_side, to_png_side_by_side


def graph(model: str, scores: dict[tuple[str, str], float]) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph(runId=model)
    kinds = {"EMBED": ("Embed", -1), "L0.H0": ("Head", 0), "L0.H1": ("Head", 0), "LOGITS": ("Logit", 1)}
    for local, (kind, layer) in kinds.items():
        g.add_node(f"{model}/{local}", kind=kind, layer=layer)
    for (u, v), s in scores.items():
        g.add_edge(f"{model}/{u}", f"{model}/{v}", score=s, channel="in" if v == "LOGITS" else "q")
    return g


WEAK = graph("a", {("EMBED", "L0.H0"): 0.1, ("L0.H0", "LOGITS"): 0.05, ("L0.H1", "LOGITS"): 0.0})
STRONG = graph("b", {("EMBED", "L0.H0"): 2.0, ("L0.H1", "LOGITS"): -1.0})


def widths(page: str) -> list[float]:
    return [float(w) for w in re.findall(r'"width": ([0-9.]+)', page)]


def panels(path: Path) -> list[str]:
    """The two pages a side-by-side file embeds (one file: each page whole in its iframe's srcdoc)."""
    import html

    return [html.unescape(body) for body in re.findall(r'srcdoc="([^"]*)"', path.read_text())]


def test_one_scale_for_both_panels(tmp_path: Path) -> None:
    assert max_abs_score(WEAK) == 0.1 and max_abs_score(WEAK, STRONG) == 2.0
    to_html_side_by_side(WEAK, STRONG, tmp_path / "c.html", ("a", "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.html"]  # one self-contained file
    weak, strong = panels(tmp_path / "c.html")
    assert max(widths(strong)) == 8.0  # the strongest edge of both takes the full width...
    assert max(widths(weak)) < 1.0  # ...and the weak run's edges look weak, not as thick as the strong ones
    alone = to_html(WEAK, tmp_path / "alone.html").read_text()
    assert max(widths(alone)) == 8.0  # on its own a page still uses its own scale


def test_zero_edges_are_neutral_and_changes_are_marked(tmp_path: Path) -> None:
    figures = {"gained": ["L0.H1 -> LOGITS [in]"], "lost": ["L0.H0 -> LOGITS [in]"]}
    marks_a, marks_b = comparison_marks(WEAK, STRONG, figures)
    assert marks_a == {("a/L0.H0", "a/LOGITS"): "lost"} and marks_b == {("b/L0.H1", "b/LOGITS"): "gained"}
    # through an alignment: A's components named by B's local ids
    renamed = comparison_marks(WEAK, STRONG, {"lost": ["L0.H1 -> LOGITS [in]"]}, {"a/L0.H0": "L0.H1", "a/LOGITS": "LOGITS"})
    assert renamed[0] == {("a/L0.H0", "a/LOGITS"): "lost"}
    to_html_side_by_side(WEAK, STRONG, tmp_path / "m.html", ("a", "b"), (marks_a, marks_b))
    page, other = panels(tmp_path / "m.html")
    zero = re.search(r'\{[^{}]*"from": "a/L0.H1"[^{}]*\}', page)
    assert zero and ZERO_COLOUR in zero.group(0)  # the exact-zero edge is grey
    assert "(lost)" in page and "#ff7f0e" in page and "#2ca02c" in other
    png = to_png_side_by_side(WEAK, STRONG, tmp_path / "m.png", ("a", "b"), (marks_a, marks_b))
    assert png.stat().st_size > 5000


def test_flow_matrix_sums_every_edge_into_its_layer_and_kind_block() -> None:
    import pandas as pd

    from queries.export import flow_matrix

    edges = pd.DataFrame({
        "componentId_pre": ["m/EMBED", "m/EMBED", "m/L0.H0", "m/L0.H1", "m/L0.MLP", "m/L1.H0", "m/EMBED"],
        "componentId_post": ["m/L0.H0", "m/L0.H1", "m/L1.H0", "m/L1.H0", "m/L1.H0", "m/LOGITS", "m/LOGITS"],
        "channel": ["q", "k", "k", "v", "q", "in", "in"],
        "score": [1.0, -2.0, 0.5, -0.25, 3.0, 4.0, -1.0],
    })
    matrix = flow_matrix(edges)
    assert list(matrix.index) == ["EMBED", "L0 heads", "L0 MLP", "L1 heads"]  # forward order
    assert list(matrix.columns) == ["L0 heads", "L1 heads", "LOGITS"]
    assert matrix.loc["EMBED", "L0 heads"] == 3.0 and matrix.loc["L0 heads", "L1 heads"] == 0.75
    assert matrix.loc["L0 MLP", "L1 heads"] == 3.0 and matrix.loc["EMBED", "LOGITS"] == 1.0 and matrix.loc["L1 heads", "LOGITS"] == 4.0
    assert matrix.to_numpy().sum() == edges["score"].abs().sum()
