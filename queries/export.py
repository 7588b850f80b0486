"""Exports of a run's connectome: a pyvis HTML page (offline, layered) and plain graph formats.

The HTML page embeds vis-network inline and links nothing external: pyvis's template links
bootstrap from a CDN and ``../node_modules`` files that do not exist, both removed here, so the
page opens offline and contacts no third party.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from atlas.errors import ValidationError
from atlas.store import Store
from queries.fetch import fetch_components, fetch_edges, require_run

__all__ = ["KIND_COLOURS", "to_networkx", "to_html", "export_run_html"]

KIND_COLOURS = {
    "Embed": "#4c78a8",
    "Head": "#f58518",
    "Mlp": "#54a24b",
    "Neuron": "#88d27a",
    "Feature": "#b279a2",
    "Logit": "#e45756",
}
_CHANNEL_DASH = {"q": False, "k": [6, 4], "v": [2, 3], "in": False}
_EXTERNAL = re.compile(
    r"<link\b[^>]*\bhref=\"[^\"]*\"[^>]*/?>|<script\b[^>]*\bsrc=\"[^\"]*\"[^>]*>\s*</script>", re.IGNORECASE | re.DOTALL
)


def to_networkx(edges: pd.DataFrame, components: pd.DataFrame | None = None) -> nx.MultiDiGraph:
    """A multigraph with one edge per (pre, post, channel); node attributes from ``components``."""
    g = nx.MultiDiGraph()
    if components is not None and not components.empty:
        for rec in components.to_dict("records"):
            g.add_node(rec["componentId"], **{k: v for k, v in rec.items() if k != "componentId" and _present(v)})
    for rec in edges.to_dict("records"):
        for end in ("pre", "post"):
            cid = rec[f"componentId_{end}"]
            if cid not in g:
                g.add_node(cid, kind=rec.get(f"kind_{end}"), layer=rec.get(f"layer_{end}"))
        g.add_edge(rec["componentId_pre"], rec["componentId_post"], key=rec["channel"], channel=rec["channel"], score=float(rec["score"]))
    return g


def _present(v: Any) -> bool:
    if v is None:
        return False
    try:
        return not pd.isna(v)
    except (TypeError, ValueError):
        return True


def _tooltip(cid: str, attrs: dict[str, Any]) -> str:
    lines = [f"<b>{html.escape(cid)}</b>"]
    for key in ("kind", "layer", "head", "prevTokenScore", "inductionScore", "topTokens"):
        if key in attrs and _present(attrs[key]):
            val = attrs[key]
            lines.append(f"{key}: {val:.3f}" if isinstance(val, float) else f"{key}: {html.escape(str(val))}")
    return "<br>".join(lines)


def to_html(graph: nx.MultiDiGraph, path: Path, title: str = "connectome") -> Path:
    """Write a pyvis page: x = layer, physics off, colour by kind, width by |score|, tooltips.

    Returns the path written.
    """
    from pyvis.network import Network

    if graph.number_of_nodes() == 0:
        raise ValidationError("nothing to export: the selection has no edges")
    net = Network(height="900px", width="100%", directed=True, cdn_resources="in_line", heading="")
    by_layer: dict[int, list[str]] = {}
    for node, attrs in graph.nodes(data=True):
        layer = attrs.get("layer")
        layer = int(layer) if _present(layer) else 0
        by_layer.setdefault(layer, []).append(node)
    for layer, members in by_layer.items():
        members.sort()
        for i, node in enumerate(members):
            attrs = graph.nodes[node]
            kind = attrs.get("kind") or "Component"
            net.add_node(
                node,
                label=node.rsplit("/", 1)[-1],
                title=_tooltip(node, attrs),
                x=(layer + 1) * 260,
                y=(i - (len(members) - 1) / 2) * 70,
                color=KIND_COLOURS.get(kind, "#999999"),
                shape="dot",
                size=14,
                physics=False,
            )
    max_abs = max((abs(d["score"]) for _, _, d in graph.edges(data=True)), default=1.0) or 1.0
    for u, v, d in graph.edges(data=True):
        score = d["score"]
        net.add_edge(
            u,
            v,
            width=0.5 + 7.5 * abs(score) / max_abs,
            title=f"{html.escape(u)} -> {html.escape(v)} [{d['channel']}]: {score:+.4g}",
            color="#d62728" if score < 0 else "#1f77b4",
            dashes=_CHANNEL_DASH.get(d["channel"], False),
            arrows="to",
        )
    net.toggle_physics(False)
    page = net.generate_html()
    page = _EXTERNAL.sub("", page)
    page = page.replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def export_run_html(store: Store, run_id: str, path: Path, top: int | None = None, min_weight: float = 0.0) -> tuple[Path, nx.MultiDiGraph]:
    """Fetch a run's edges (optionally the top-N by |score|) and write its HTML page."""
    run = require_run(store, run_id)
    edges = fetch_edges(store, run_id, top=top, min_weight=min_weight)
    comps = fetch_components(store, run["modelId"])
    keep = set(edges["componentId_pre"]) | set(edges["componentId_post"])
    comps = comps[comps["componentId"].isin(keep)] if not comps.empty else comps
    graph = to_networkx(edges, comps)
    return to_html(graph, path, title=f"connectome {run_id}"), graph
