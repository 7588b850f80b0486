"""Dimensionality reduction for looking: a layer's population responses in two dimensions.

Each component of a layer (its output) and the residual streams around it are embedded in 2-D by
PCA (always) or UMAP (``umap-learn``, when installed), one point per (prompt, position) where the
colouring variable is defined (:mod:`ingest.toolbox.decode`'s variables). Next to each picture: the share
of variance the two principal components hold (``pcaTop2``, stored on components) and how well the
variable separates in the picture, leave-one-out 1-nearest-neighbour accuracy in 2-D against the same
with permuted labels (``separation``, ``separationNull``): a picture that looks organised by chance
says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atlas.errors import ValidationError
from ingest.model.graph import ModelGraph
from ingest.model.tasks import PromptBatch
from ingest.toolbox.decode import layer_sources, variable_labels

__all__ = ["population_views", "METHODS"]

METHODS = ("pca", "umap")


def _pca(x: np.ndarray) -> tuple[np.ndarray, float]:
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float((s**2).sum())
    return xc @ vt[:2].T, float((s[:2] ** 2).sum() / total) if total > 0 else 0.0


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise ValidationError("UMAP views need umap-learn (pip install umap-learn); --method pca needs nothing more") from None
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)


def _one_nn(coords: np.ndarray, labels: np.ndarray) -> float:
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def population_views(model: Any, graph: ModelGraph, batch: PromptBatch, layer: int, variable: str, *, method: str = "pca",
                     seed: int = 0, max_points: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """2-D embeddings of a layer's components and streams coloured by ``variable``: (points: ``source``,
    ``x``, ``y``, ``label``; summary: ``source``, ``componentId``, ``pcaTop2``, ``separation``,
    ``separationNull``, ``n``)."""
    if method not in METHODS:
        raise ValidationError(f"unknown view {method!r}: choose one of {list(METHODS)}")
    if not 0 <= layer < graph.n_layers:
        raise ValidationError(f"layer {layer} is outside the model's {graph.n_layers} layers")
    mask, labels = variable_labels(batch, variable)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(labels), size=min(max_points, len(labels)), replace=False))
    labels = labels[keep]
    sources = layer_sources(model, graph, batch, layer)
    points, summary = [], []
    for name, cid, acts in sources:
        x = acts.detach().double().cpu().numpy()[mask][keep]
        coords, top2 = _pca(x)
        if method == "umap":
            coords = _umap(x, seed)
        separation = _one_nn(coords, labels)
        null = float(np.mean([_one_nn(coords, rng.permutation(labels)) for _ in range(3)]))
        points.append(pd.DataFrame({"source": name, "x": coords[:, 0], "y": coords[:, 1], "label": labels}))
        summary.append({"source": name, "componentId": cid, "variable": variable, "method": method, "pcaTop2": top2,
                        "separation": separation, "separationNull": null, "n": int(len(labels))})
    return pd.concat(points, ignore_index=True), pd.DataFrame(summary)
