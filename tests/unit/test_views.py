"""2-D population views: separation scores that can tell structure from chance, on the zoo's
hand-built parts (learned positions in the embedding stream; the previous-token head)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from atlas.errors import ValidationError
from ingest.model.graph import build_graph
from ingest.model.loading import load_model
from ingest.model.tasks import get_task
from ingest.toolbox.views import _one_nn, population_views


def test_one_nearest_neighbour_separation() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    clusters = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])[labels] + rng.normal(0, 0.5, (100, 2))
    assert _one_nn(clusters, labels) == 1.0
    assert _one_nn(rng.normal(0, 1, (100, 2)), labels) < 0.45  # no structure: near chance (0.25)


def test_views_of_induction_layer_zero() -> None:
    model = load_model("induction-2l", Path("/nonexistent-atlas-home")).model
    graph = build_graph(model, "ind")
    batch = get_task("induction").make_batch(model, 16, 0)
    points, summary = population_views(model, graph, batch, 0, "position")
    rows = summary.set_index("source")
    assert rows.loc["resid_pre", "separation"] > 0.9 and rows.loc["resid_pre", "separationNull"] < 0.15
    assert len(points) == 6 * 16 * 24 and set(points["source"]) == set(summary["source"])
    assert ((summary["pcaTop2"] > 0) & (summary["pcaTop2"] <= 1)).all()
    _, prev = population_views(model, graph, batch, 0, "prev-token")
    rows = prev.set_index("source")
    others = rows.loc[["ind/L0.H1", "ind/L0.H2", "ind/L0.H3"], "separation"]
    assert rows.loc["ind/L0.H0", "separation"] > 0.3 > others.max() and rows.loc["ind/L0.H0", "separationNull"] < 0.05
    if importlib.util.find_spec("umap") is None:  # optional: without umap-learn, one clear line
        with pytest.raises(ValidationError, match="pip install umap-learn"):
            population_views(model, graph, batch, 0, "position", method="umap")
    else:
        _, with_umap = population_views(model, graph, batch, 0, "position", method="umap")
        assert (with_umap["method"] == "umap").all() and with_umap.set_index("source").loc["resid_pre", "separation"] > 0.5
    with pytest.raises(ValidationError, match="unknown view"):
        population_views(model, graph, batch, 0, "position", method="tsne")
