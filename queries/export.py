"""Exports of a run's connectome: pyvis HTML (offline, layered), GraphML, GEXF, JSON, CSV, PNG.

Every format can be restricted to the top-N edges, a saved circuit or the strongest pathways.
The HTML page embeds vis-network inline and links nothing external: pyvis's template links
bootstrap from a CDN and ``../node_modules`` files that do not exist, both removed here, so the
page opens offline and contacts no third party. Every graph file carries the run's record (GraphML
and node-link JSON as graph attributes, GEXF in its ``<meta>``). A whole run as CSV (neo4j-admin
format, lossless, importable) is :mod:`queries.transfer`'s job.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import local_id
from atlas.store import Store
from queries.fetch import fetch_components, fetch_edges, require_run
from queries.graph import edges_to_graph

__all__ = ["KIND_COLOURS", "select_graph", "to_html", "to_graphml", "to_gexf", "to_json", "to_png",
           "draw", "to_png_side_by_side", "to_html_side_by_side", "export_run_html", "FORMATS"]

KIND_COLOURS = {
    "Embed": "#4c78a8",
    "Head": "#f58518",
    "Mlp": "#54a24b",
    "Neuron": "#88d27a",
    "Feature": "#b279a2",
    "Error": "#9d9d9d",
    "Logit": "#e45756",
}
_CHANNEL_DASH = {"q": False, "k": [6, 4], "v": [2, 3], "in": False}
_EXTERNAL = re.compile(
    r"<link\b[^>]*\bhref=\"[^\"]*\"[^>]*/?>|<script\b[^>]*\bsrc=\"[^\"]*\"[^>]*>\s*</script>", re.IGNORECASE | re.DOTALL
)
_TOOLTIP_KEYS = ("kind", "layer", "head", "neuron", "feature", "dictionaryId", "prevTokenScore", "duplicateTokenScore", "inductionScore",
                 "frequency", "meanAct", "maxAct", "topTokens", "topContexts")


def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, (list, tuple, dict)):
        return True
    try:
        return not pd.isna(v)
    except (TypeError, ValueError):
        return True


def select_graph(store: Store, run_id: str, *, top: int | None = None, min_weight: float = 0.0,
                 circuit: str | None = None, paths: int | None = None) -> nx.MultiDiGraph:
    """A run's connectome, optionally only its top-N edges, a saved circuit's edges, or the edges of
    its ``paths`` strongest pathways (channels split)."""
    run = require_run(store, run_id)
    edges = fetch_edges(store, run_id, top=top, min_weight=min_weight)
    if circuit is not None:
        saved = cx.fetch_circuit(store, circuit)
        if saved is None:
            raise ValidationError(f"no circuit {circuit!r}")
        keys = saved.edge_keys
        if not keys:
            raise ValidationError(f"circuit {circuit!r} records no edges (binding circuits hold members only)")
        wanted = set(keys)
        edges = edges[[f"{a}|{b}|{c}" in wanted for a, b, c in zip(edges["componentId_pre"], edges["componentId_post"], edges["channel"])]]
    if paths is not None:
        from queries.paths import top_paths

        found_paths = top_paths(edges_to_graph(edges), k=paths, split_channels=True)
        hops = {(a, b, c) for nodes, chans in zip(found_paths["nodes"], found_paths["channels"]) for a, b, c in zip(nodes, nodes[1:], chans)}
        edges = edges[[(a, b, c) in hops for a, b, c in zip(edges["componentId_pre"], edges["componentId_post"], edges["channel"])]]
    if edges.empty:
        raise ValidationError("nothing to export: the selection has no edges")
    comps = fetch_components(store, run.model_id)
    if not comps.empty:
        comps = comps[comps["componentId"].isin(set(edges["componentId_pre"]) | set(edges["componentId_post"]))]
    graph = edges_to_graph(edges, comps)
    # the run's own record travels with every export (scalars only: GraphML and GEXF hold no lists)
    meta = {k: v for k, v in run.to_props().items() if isinstance(v, (str, int, float, bool))}
    graph.graph.update({**meta, "selection": _selection(top, min_weight, circuit, paths)})
    return graph


def _selection(top: int | None, min_weight: float, circuit: str | None, paths: int | None) -> str:
    parts = [f"top {top}" if top is not None else "", f"|score| >= {min_weight:g}" if min_weight else "",
             f"circuit {circuit}" if circuit else "", f"{paths} strongest paths" if paths is not None else ""]
    return ", ".join(p for p in parts if p) or "all edges"


def _tooltip(cid: str, attrs: dict[str, Any]) -> str:
    lines = [f"<b>{html.escape(cid)}</b>"]
    for key in _TOOLTIP_KEYS:
        if key in attrs and _present(attrs[key]):
            val = attrs[key]
            if isinstance(val, float):
                lines.append(f"{key}: {val:.3f}")
            elif isinstance(val, (list, tuple)):
                lines.append(f"{key}: {html.escape(', '.join(map(str, val[:5])))}")
            else:
                lines.append(f"{key}: {html.escape(str(val))}")
    return "<br>".join(lines)


def _layer(attrs: dict[str, Any]) -> int:
    layer = attrs.get("layer")
    return int(layer) if layer is not None and _present(layer) else 0


def to_html(graph: nx.MultiDiGraph, path: Path, title: str = "connectome") -> Path:
    """Write a pyvis page: x = layer, physics off, colour by kind, width by |score|, tooltips."""
    from pyvis.network import Network

    if graph.number_of_nodes() == 0:
        raise ValidationError("nothing to export: the selection has no edges")
    net = Network(height="900px", width="100%", directed=True, cdn_resources="in_line", heading="")
    by_layer: dict[int, list[str]] = {}
    for node, attrs in graph.nodes(data=True):
        by_layer.setdefault(_layer(attrs), []).append(node)
    for layer, members in by_layer.items():
        members.sort()
        for i, node in enumerate(members):
            attrs = graph.nodes[node]
            net.add_node(node, label=local_id(node), title=_tooltip(node, attrs), x=(layer + 1) * 260,
                         y=(i - (len(members) - 1) / 2) * 70, color=KIND_COLOURS.get(attrs.get("kind") or "", "#999999"),
                         shape="dot", size=14, physics=False)
    max_abs = max((abs(d["score"]) for _, _, d in graph.edges(data=True)), default=1.0) or 1.0
    for u, v, d in graph.edges(data=True):
        score = d["score"]
        net.add_edge(u, v, width=0.5 + 7.5 * abs(score) / max_abs,
                     title=f"{html.escape(u)} -> {html.escape(v)} [{d['channel']}]: {score:+.4g}",
                     color="#d62728" if score < 0 else "#1f77b4", dashes=_CHANNEL_DASH.get(d["channel"], False), arrows="to")
    net.toggle_physics(False)
    page = _EXTERNAL.sub("", net.generate_html())
    page = page.replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)
    kinds = sorted({a.get("kind") for _, a in graph.nodes(data=True) if a.get("kind") in KIND_COLOURS})
    swatches = " ".join(f'<span style="color:{KIND_COLOURS[k]}">&#9679;</span> {html.escape(k)}' for k in kinds)
    legend = (
        f'<div id="atlas-legend" style="font:13px sans-serif;margin:6px 8px"><b>{html.escape(title)}</b> &nbsp; {swatches}'
        " &nbsp; edges: width = |score|; <span style=\"color:#d62728\">red</span> = corrupting it lowers the metric,"
        " <span style=\"color:#1f77b4\">blue</span> = raises it; channel q solid, k dashed, v dotted; x = layer."
        " Hover for ids, scores and receptive fields.</div>"
    )
    page = page.replace("<body>", "<body>" + legend, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _flat(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy whose attributes are scalars (lists/dicts as JSON text; missing values dropped), as
    GraphML and GEXF require; the graph's own attributes (the run's record) come along."""
    out = nx.MultiDiGraph(**{k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in graph.graph.items() if _present(v)})
    for n, a in graph.nodes(data=True):
        out.add_node(n, **{k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in a.items() if _present(v)})
    for u, v, k, d in graph.edges(keys=True, data=True):
        out.add_edge(u, v, key=k, **{kk: vv for kk, vv in d.items() if _present(vv)})
    return out


def to_graphml(graph: nx.MultiDiGraph, path: Path) -> Path:
    """GraphML (Gephi, Cytoscape, yEd); list-valued properties are JSON text; the run's record as
    graph attributes (``networkx.read_graphml`` returns them in ``G.graph``)."""
    nx.write_graphml(_flat(graph), path)
    return Path(path)


def to_gexf(graph: nx.MultiDiGraph, path: Path) -> Path:
    """GEXF (Gephi). GEXF has no graph attributes: the run's record goes into ``<meta>`` as
    ``<description>`` (JSON) and ``<keywords>`` (run id, model, method), which Gephi shows."""
    import xml.etree.ElementTree as ET

    nx.write_gexf(_flat(graph), path)
    ns = "http://gexf.net/1.2"
    ET.register_namespace("", ns)
    tree = ET.parse(path)
    meta = tree.getroot().find(f"{{{ns}}}meta")
    if meta is None:
        meta = ET.Element(f"{{{ns}}}meta")
        tree.getroot().insert(0, meta)
    ET.SubElement(meta, f"{{{ns}}}keywords").text = ", ".join(str(graph.graph[k]) for k in ("runId", "modelId", "method") if k in graph.graph)
    ET.SubElement(meta, f"{{{ns}}}description").text = json.dumps(dict(graph.graph), sort_keys=True, default=str)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return Path(path)


def to_json(graph: nx.MultiDiGraph, path: Path) -> Path:
    """Node-link JSON as networkx writes it (directed multigraph; the run's record in ``graph``):
    ``networkx.node_link_graph(json.load(f))`` gives the graph back."""
    data = nx.node_link_data(graph, edges="edges")
    data["nodes"] = [{k: v for k, v in n.items() if _present(v)} for n in data["nodes"]]
    Path(path).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return Path(path)


def draw(graph: nx.MultiDiGraph, ax: Any, title: str = "") -> None:
    """Draw a layered connectome on a matplotlib axis (x = layer, width by |score|, colour by sign)."""
    pos: dict[str, tuple[float, float]] = {}
    by_layer: dict[int, list[str]] = {}
    for n, a in graph.nodes(data=True):
        by_layer.setdefault(_layer(a), []).append(n)
    for layer, members in by_layer.items():
        for i, n in enumerate(sorted(members)):
            pos[n] = (layer, -(i - (len(members) - 1) / 2))
    simple = nx.DiGraph()
    simple.add_nodes_from(graph.nodes(data=True))
    for u, v, d in graph.edges(data=True):
        if simple.has_edge(u, v):
            simple[u][v]["score"] += d["score"]
        else:
            simple.add_edge(u, v, score=d["score"])
    max_abs = max((abs(d["score"]) for *_, d in simple.edges(data=True)), default=1.0) or 1.0
    nx.draw_networkx_edges(simple, pos, ax=ax, width=[0.3 + 4 * abs(d["score"]) / max_abs for *_, d in simple.edges(data=True)],
                           edge_color=["#d62728" if d["score"] < 0 else "#1f77b4" for *_, d in simple.edges(data=True)],
                           arrows=True, alpha=0.7, connectionstyle="arc3,rad=0.08")
    nx.draw_networkx_nodes(simple, pos, ax=ax, node_size=380,
                           node_color=[KIND_COLOURS.get(a.get("kind") or "", "#999999") for _, a in simple.nodes(data=True)])
    nx.draw_networkx_labels(simple, pos, ax=ax, labels={n: local_id(n) for n in simple}, font_size=7)
    ax.set_title(title or str(graph.graph.get("runId", "")))
    ax.axis("off")


def _figure(n_panels: int, graphs: list[nx.MultiDiGraph]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = max(len({_layer(a) for _, a in g.nodes(data=True)}) for g in graphs)
    rows = max(max((sum(1 for _, a in g.nodes(data=True) if _layer(a) == lay) for lay in {_layer(a) for _, a in g.nodes(data=True)}), default=1) for g in graphs)
    fig, axes = plt.subplots(1, n_panels, figsize=(n_panels * max(6, 2.2 * layers), max(4, 0.6 * rows)), squeeze=False)
    return fig, axes[0]


def to_png(graph: nx.MultiDiGraph, path: Path, title: str = "") -> Path:
    """A static layered drawing (x = layer), edge width by |score|, colour by sign."""
    import matplotlib.pyplot as plt

    fig, (ax,) = _figure(1, [graph])
    draw(graph, ax, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def to_png_side_by_side(a: nx.MultiDiGraph, b: nx.MultiDiGraph, path: Path, titles: tuple[str, str]) -> Path:
    """Two connectomes drawn next to each other on one image (for ``atlas compare``)."""
    import matplotlib.pyplot as plt

    fig, axes = _figure(2, [a, b])
    draw(a, axes[0], titles[0])
    draw(b, axes[1], titles[1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def to_html_side_by_side(a: nx.MultiDiGraph, b: nx.MultiDiGraph, path: Path, titles: tuple[str, str]) -> Path:
    """An offline page showing two connectome pages side by side (the two pages sit next to it)."""
    path = Path(path)
    left, right = path.with_name(path.stem + "-a.html"), path.with_name(path.stem + "-b.html")
    to_html(a, left, titles[0])
    to_html(b, right, titles[1])
    frames = "".join(
        f'<div style="flex:1"><h3>{html.escape(t)}</h3><iframe src="{html.escape(p.name)}" style="width:100%;height:880px;border:0"></iframe></div>'
        for t, p in zip(titles, (left, right))
    )
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(' vs '.join(titles))}</title></head>"
                    f"<body style='font-family:sans-serif'><div style='display:flex;gap:8px'>{frames}</div></body></html>", encoding="utf-8")
    return path


FORMATS = {"html": to_html, "graphml": to_graphml, "gexf": to_gexf, "json": to_json, "png": to_png}


def export_run_html(store: Store, run_id: str, path: Path, top: int | None = None, min_weight: float = 0.0) -> tuple[Path, nx.MultiDiGraph]:
    """Fetch a run's edges (optionally the top-N by |score|) and write its HTML page."""
    graph = select_graph(store, run_id, top=top, min_weight=min_weight)
    return to_html(graph, path, title=f"connectome {run_id}"), graph
