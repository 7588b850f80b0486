"""Static figures that hold up at size: a feature-level connectome drawn at 10, 40 and 200 nodes
keeps every node in view, labels that never overlap (all of them up to 40 nodes), short labels with
a key of the dictionaries, and a title a person can read; the adjacency and flow overviews use
log colour scales (a weak block is still visible); ``--dpi`` and vector formats work.

The drawings are saved under docs/figures/ (the docs show them), so they are of the code as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from queries.export import FIGURE_DPI, draw, flow_matrix, flow_png, heatmap_png, score_norm, short_label, to_png
from queries.graph import edges_to_graph

DOCS = Path(__file__).resolve().parents[2] / "docs" / "figures"
DICT = "modadd-1l.sae128.0.mlp_out"


def feature_graph(n_features: int, seed: int = 0) -> tuple[object, pd.DataFrame]:
    """A layer's heads and ``n_features`` features of one dictionary (plus its error term) between
    the embedding and the logits, with heavy-tailed scores, as a feature-level run looks."""
    rng = np.random.default_rng(seed)
    m = "modadd-1l"
    feats = [f"{m}/L0.F{f}@{DICT}" for f in sorted(rng.choice(4096, n_features, replace=False))] + [f"{m}/L0.ERR@{DICT}"]
    heads = [f"{m}/L0.H{h}" for h in range(4)]
    rows = [(f"{m}/EMBED", h, "v", rng.normal()) for h in heads] + [(h, f"{m}/LOGITS", "in", rng.normal()) for h in heads]
    for f in feats:
        rows += [(s, f, "in", rng.standard_cauchy() * 0.1) for s in [f"{m}/EMBED", *heads] if rng.random() < 0.5]
        rows.append((f, f"{m}/LOGITS", "in", rng.standard_cauchy() * 0.3))
    edges = pd.DataFrame(rows, columns=["componentId_pre", "componentId_post", "channel", "score"])
    graph = edges_to_graph(edges)
    graph.graph.update({"modelId": m, "method": "eap", "task": "default", "runId": "3f9c2a0e", "selection": f"top {len(edges)}"})
    return graph, edges


@pytest.mark.parametrize("n_features", [3, 33, 193])
def test_a_feature_connectome_is_readable_at_10_40_and_200_nodes(n_features: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph, _ = feature_graph(n_features)
    n = graph.number_of_nodes()
    assert n in (10, 40, 200)
    DOCS.mkdir(parents=True, exist_ok=True)
    to_png(graph, DOCS / f"connectome-{n}-nodes.png")

    fig, ax = plt.subplots(figsize=(12, 10))
    draw(graph, ax)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for collection in ax.collections:  # every node in view
        for x, y in collection.get_offsets():
            assert x0 < x < x1 and y0 < y < y1
    labels = [t for t in ax.texts if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    names = [t.get_text() for t in labels]
    if n <= 40:
        assert sorted(names) == sorted(short_label(c) for c in graph.nodes)  # every node named, briefly
    else:
        assert len(names) == 20
    assert all("@" not in name for name in names)  # the dictionary goes in the key, not on every label
    overlaps = [(names[i], names[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert overlaps == []
    title = ax.get_title()
    assert title.startswith("modadd-1l: eap on default") and len(title) < 90
    plt.close(fig)


def test_overviews_use_log_colour_scales_so_weak_blocks_show() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    norm = score_norm(100.0)
    white = np.array([1.0, 1.0, 1.0])
    for v in (0.1, -0.1, 1.0, 100.0):  # three decades below the strongest cell: still clearly coloured
        rgb = np.array(colormaps["RdBu_r"](norm(v))[:3])
        assert np.abs(rgb - white).max() > 0.12, v
    assert norm(0.0) == pytest.approx(0.5)
    graph, edges = feature_graph(193)
    heatmap_png(edges, DOCS / "adjacency-200-nodes.png", "adjacency of the strongest components")
    flow_png(flow_matrix(edges), DOCS / "flow.png", "flow between layer x kind groups")


def test_dpi_and_vector_formats(tmp_path: Path) -> None:
    from PIL import Image

    graph, _ = feature_graph(3)
    small = to_png(graph, tmp_path / "a.png")
    token = FIGURE_DPI.set(240)
    try:
        large = to_png(graph, tmp_path / "b.png")
        vector = to_png(graph, tmp_path / "c.svg")
    finally:
        FIGURE_DPI.reset(token)
    assert Image.open(large).size[0] == pytest.approx(2 * Image.open(small).size[0], rel=0.02)
    assert "<svg" in vector.read_text()[:2000]


def test_the_html_page_labels_briefly_and_names_the_dictionary_once(tmp_path: Path) -> None:
    import re

    from queries.export import to_html

    graph, _ = feature_graph(33)
    page = to_html(graph, tmp_path / "p.html", "test").read_text()
    labels = re.findall(r'"label": "([^"]*)"', page)
    assert len(labels) == 40 and all("@" not in label for label in labels) and "L0.ERR" in labels
    assert page.count(DICT) >= 1 and f"error term of dictionary {DICT}" in page
