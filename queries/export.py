"""Exports of a run's connectome: pyvis HTML (offline, layered), GraphML, GEXF, JSON, CSV, PNG.

Every format can be restricted to the top-N edges, a saved circuit or the strongest pathways.
The HTML page embeds vis-network inline and links nothing external: pyvis's template links
bootstrap from a CDN and ``../node_modules`` files that do not exist, both removed here, so the
page opens offline and contacts no third party. Every graph file carries the run's record (GraphML
and node-link JSON as graph attributes, GEXF in its ``<meta>``). A whole run as CSV (neo4j-admin
format, lossless, importable) is :mod:`queries.transfer`'s job.
"""

from __future__ import annotations

import contextvars
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
from queries.fetch import fetch_edges, require_run
from queries.graph import edge_components, edges_to_graph

__all__ = ["KIND_COLOURS", "select_graph", "to_html", "to_graphml", "to_gexf", "to_json", "to_png",
           "draw", "to_png_side_by_side", "to_html_side_by_side", "export_run_html", "FORMATS", "layered_positions", "column_positions", "score_norm", "short_label", "figure_title", "FIGURE_DPI", "adjacency_matrix", "component_group", "flow_matrix", "max_abs_score", "comparison_marks", "timeline_png", "prompts_png"]

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
                 "frequency", "meanAct", "maxAct", "topTokens", "topContexts", "lensDla", "lensErrorCorrecting", "decodeToken",
                 "decodePrevToken", "decodePosition", "decodeAnswer", "pcaTop2", "viewVariable", "viewSeparation", "viewSeparationNull")


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
    graph = edges_to_graph(edges, edge_components(store, run.model_id, edges))
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


LABELS_UP_TO = 40
"""Pages of more nodes than this draw no labels (ids show on hover and in the search box): at
that size labels overlap whatever the layout."""
_COLUMN = 14  # nodes per sub-column within a layer's band
_ROW_PX, _SUB_PX, _GAP_PX = 60, 95, 150  # a sub-column wide enough for a short label (L0.F1014)


def layered_positions(graph: nx.MultiDiGraph) -> dict[str, tuple[float, float]]:
    """x by layer, in bands wide enough for the layer's nodes: a layer of more than ``_COLUMN``
    nodes is wrapped into sub-columns (kinds kept together), so no column runs off the page."""
    by_layer: dict[int, list[str]] = {}
    for node, attrs in graph.nodes(data=True):
        by_layer.setdefault(_layer(attrs), []).append(node)
    order = {k: i for i, k in enumerate(KIND_COLOURS)}
    out: dict[str, tuple[float, float]] = {}
    x0 = 0.0
    for layer in sorted(by_layer):
        members = sorted(by_layer[layer], key=lambda n: (order.get(graph.nodes[n].get("kind") or "", 99), n))
        cols = -(-len(members) // _COLUMN)
        rows = min(len(members), _COLUMN)
        for i, node in enumerate(members):
            col, row = divmod(i, _COLUMN)
            out[node] = (x0 + col * _SUB_PX, (row - (rows - 1) / 2) * _ROW_PX)
        x0 += (cols - 1) * _SUB_PX + _GAP_PX + 110
    return out


_CONTROLS = """<div id="atlas-controls" style="font:13px sans-serif;margin:2px 8px 6px">
<b>filter</b> layers <input id="atlas-layer-min" type="number" value="{lmin}" min="{lmin}" max="{lmax}" style="width:4em">
to <input id="atlas-layer-max" type="number" value="{lmax}" min="{lmin}" max="{lmax}" style="width:4em"> &nbsp; {kinds}
&nbsp; |score| &ge; <input id="atlas-min-score" type="number" value="0" min="0" step="any" style="width:7em">
&nbsp; <input id="atlas-search" type="search" placeholder="search component id" style="width:14em">
<button id="atlas-reset" type="button">show all</button> &nbsp; <span id="atlas-count"></span></div>"""

_SCRIPT = """<script>
(function () {
  function el(id) { return document.getElementById(id); }
  function apply() {
    var lo = parseFloat(el('atlas-layer-min').value), hi = parseFloat(el('atlas-layer-max').value);
    var w = parseFloat(el('atlas-min-score').value) || 0;
    var kinds = {};
    document.querySelectorAll('.atlas-kind').forEach(function (box) { kinds[box.value] = box.checked; });
    var ok = {};
    nodes.forEach(function (n) { ok[n.id] = n.atlasLayer >= lo && n.atlasLayer <= hi && kinds[n.atlasKind] !== false; });
    var shownEdges = 0, touched = {};
    edges.update(edges.get().map(function (e) {
      var show = ok[e.from] && ok[e.to] && e.atlasAbs >= w;
      if (show) { shownEdges += 1; touched[e.from] = true; touched[e.to] = true; }
      return {id: e.id, hidden: !show};
    }));
    var shownNodes = 0;
    nodes.update(nodes.get().map(function (n) {
      var show = ok[n.id] && (w <= 0 || touched[n.id] === true);
      if (show) { shownNodes += 1; }
      return {id: n.id, hidden: !show};
    }));
    el('atlas-count').textContent = shownNodes + ' of ' + nodes.length + ' components, ' + shownEdges + ' of ' + edges.length + ' edges shown';
  }
  function search() {
    var q = el('atlas-search').value.trim().toLowerCase();
    if (!q) { network.unselectAll(); return; }
    var hits = nodes.getIds({filter: function (n) { return !n.hidden && String(n.id).toLowerCase().indexOf(q) >= 0; }});
    network.selectNodes(hits);
    if (hits.length === 1) { network.focus(hits[0], {scale: 1.2}); } else if (hits.length > 1) { network.fit({nodes: hits}); }
    el('atlas-count').textContent = hits.length + ' match' + (hits.length === 1 ? '' : 'es') + ' for "' + q + '"';
  }
  function reset() {
    el('atlas-layer-min').value = el('atlas-layer-min').min; el('atlas-layer-max').value = el('atlas-layer-max').max;
    el('atlas-min-score').value = 0; el('atlas-search').value = '';
    document.querySelectorAll('.atlas-kind').forEach(function (box) { box.checked = true; });
    apply(); network.unselectAll(); network.fit();
  }
  window.atlasApply = apply; window.atlasSearch = search;
  window.addEventListener('load', function () {
    ['atlas-layer-min', 'atlas-layer-max', 'atlas-min-score'].forEach(function (id) { el(id).addEventListener('input', apply); });
    document.querySelectorAll('.atlas-kind').forEach(function (box) { box.addEventListener('change', apply); });
    el('atlas-search').addEventListener('input', search);
    el('atlas-reset').addEventListener('click', reset);
    apply();
    network.fit();
  });
})();
</script>"""


def to_html(graph: nx.MultiDiGraph, path: Path, title: str = "connectome", *, scale: float | None = None,
            marks: dict[tuple[str, str], str] | None = None) -> Path:
    """Write a pyvis page: x = layer (a crowded layer wrapped into sub-columns), physics off, colour
    by kind with a legend, width by |score| relative to ``scale`` (default: this graph's largest),
    grey for exact zeros, tooltips; ``marks`` ((u, v) -> ``gained``/``lost``) get a coloured shadow.
    Controls filter by layer, kind and |score| and search component ids; the view fits every node
    on load; above :data:`LABELS_UP_TO` nodes labels give way to hover tooltips. Offline."""
    from pyvis.network import Network

    if graph.number_of_nodes() == 0:
        raise ValidationError("nothing to export: the selection has no edges")
    net = Network(height="860px", width="100%", directed=True, cdn_resources="in_line", heading="")
    labels = graph.number_of_nodes() <= LABELS_UP_TO
    for node, (x, y) in layered_positions(graph).items():
        attrs = graph.nodes[node]
        kind = attrs.get("kind") or ""
        net.add_node(node, label=short_label(node) if labels else " ", title=_tooltip(node, attrs), x=x, y=y,
                     color=KIND_COLOURS.get(kind, "#999999"), shape="dot", size=14 if labels else 10, physics=False,
                     atlasLayer=_layer(attrs), atlasKind=kind)
    max_abs = scale or max((abs(d["score"]) for _, _, d in graph.edges(data=True)), default=1.0) or 1.0
    for u, v, d in graph.edges(data=True):
        score = d["score"]
        mark = (marks or {}).get((u, v))
        extra = {"shadow": {"enabled": True, "color": MARK_COLOURS[mark], "size": 14, "x": 0, "y": 0}} if mark else {}
        net.add_edge(u, v, width=0.5 + 7.5 * min(abs(score) / max_abs, 1.0),
                     title=f"{html.escape(u)} -> {html.escape(v)} [{d['channel']}]: {score:+.4g}" + (f" ({mark})" if mark else ""),
                     color=_edge_colour(score), dashes=_CHANNEL_DASH.get(d["channel"], False), arrows="to", atlasAbs=abs(score), **extra)
    net.toggle_physics(False)
    page = _EXTERNAL.sub("", net.generate_html())
    page = page.replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)
    kinds = sorted({a.get("kind") for _, a in graph.nodes(data=True) if a.get("kind") in KIND_COLOURS})
    swatches = " ".join(f'<span style="color:{KIND_COLOURS[k]}">&#9679;</span> {html.escape(k)}' for k in kinds)
    legend = (
        f'<div id="atlas-legend" style="font:13px sans-serif;margin:6px 8px"><b>{html.escape(title)}</b> &nbsp; {swatches}'
        f" &nbsp; edges: width = |score| (full width at {max_abs:.3g}); <span style=\"color:#d62728\">red</span> = corrupting it lowers"
        " the metric, <span style=\"color:#1f77b4\">blue</span> = raises it, <span style=\"color:#b0b0b0\">grey</span> = exactly 0;"
        " channel q solid, k dashed, v dotted; x = layer."
        + (' <span style="color:#2ca02c">green</span> / <span style="color:#ff7f0e">orange</span> shadow = gained / lost (top-N).'
           if marks else "")
        + (f" L&lt;l&gt;.F&lt;f&gt; = feature f, L&lt;l&gt;.ERR = error term of dictionary {html.escape('; '.join(dictionaries_of(graph)))}."
           if dictionaries_of(graph) else "")
        + " Hover for ids, scores and receptive fields.</div>"
    )
    layers = [_layer(a) for _, a in graph.nodes(data=True)]
    boxes = " ".join(f'<label><input class="atlas-kind" type="checkbox" value="{html.escape(k)}" checked>'
                     f'<span style="color:{KIND_COLOURS[k]}">&#9679;</span>{html.escape(k)}</label>' for k in kinds)
    controls = _CONTROLS.format(lmin=min(layers), lmax=max(layers), kinds=boxes)
    page = page.replace("<body>", "<body>" + legend + controls, 1)
    page = page.replace("</body>", _SCRIPT + "</body>", 1)
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
    ``networkx.node_link_graph(json.load(f))`` gives the graph back on every networkx the atlas
    allows. networkx 3.6 names the edge list ``edges``, 3.2-3.5 ``links`` (and 3.4-3.5 warn about
    the change): the file carries both, so either reader finds its key."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        data = nx.node_link_data(graph)
    edges = data.pop("edges", None) or data.pop("links", [])
    data["edges"] = data["links"] = edges
    data["nodes"] = [{k: v for k, v in n.items() if _present(v)} for n in data["nodes"]]
    Path(path).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return Path(path)


ZERO_COLOUR = "#b0b0b0"
MARK_COLOURS = {"gained": "#2ca02c", "lost": "#ff7f0e"}


def _edge_colour(score: float) -> str:
    """Blue: corrupting the edge raises the metric; red: lowers it; grey: exactly no effect."""
    return ZERO_COLOUR if score == 0 else "#d62728" if score < 0 else "#1f77b4"


def max_abs_score(*graphs: nx.MultiDiGraph) -> float:
    """The largest |score| of an edge (summed over channels per node pair) in any of ``graphs``: one
    scale for panels that are to be compared."""
    best = 0.0
    for graph in graphs:
        sums: dict[tuple[str, str], float] = {}
        for u, v, d in graph.edges(data=True):
            sums[(u, v)] = sums.get((u, v), 0.0) + d["score"]
        best = max([best, *map(abs, sums.values())])
    return best or 1.0


def short_label(cid: str) -> str:
    """A component's label on a figure: its local id without the dictionary (``L0.F93``; the key
    names the dictionaries), so labels stay short at any size."""
    return local_id(cid).split("@", 1)[0]


def dictionaries_of(graph: nx.MultiDiGraph) -> list[str]:
    """The sparse dictionaries a graph's feature and error nodes belong to (the labels' key)."""
    return sorted({local_id(n).split("@", 1)[1] for n in graph.nodes if "@" in local_id(n)})


def figure_title(graph: nx.MultiDiGraph, what: str = "") -> str:
    """A title a person can read: model, method, task and selection (the run id last, in brackets)."""
    g = graph.graph
    parts = [str(g["modelId"]) if g.get("modelId") else "", f"{g['method']} on {g['task']}" if g.get("method") and g.get("task") else ""]
    head = ": ".join(p for p in parts if p) or "connectome"
    tail = ", ".join(p for p in (what, str(g.get("selection") or "")) if p)
    return f"{head}" + (f" ({tail})" if tail else "") + (f" [run {g['runId']}]" if g.get("runId") else "")


DRAW_ROWS = 40
"""The most members a column of a static drawing holds: a larger group (a layer's 200 features) is
wrapped into side-by-side sub-columns, so a figure stays within a page's height."""


def _draw_positions(graph: nx.MultiDiGraph) -> tuple[dict[str, tuple[float, float]], float, int]:
    """(positions, width in column units, rows): one column per (layer, kind) group in forward order
    (wrapped into sub-columns past ``DRAW_ROWS``), each (sub-)column spread over the same height in id
    order."""
    import math

    pos = column_positions(list(graph.nodes), aspect=1.0)
    groups: dict[float, list[str]] = {}
    for n, (x, _y) in sorted(pos.items(), key=lambda item: (item[1][0], item[1][1])):
        groups.setdefault(x, []).append(n)
    rows = min(DRAW_ROWS, max((len(m) for m in groups.values()), default=1))
    out: dict[str, tuple[float, float]] = {}
    x0 = 0.0
    for x in sorted(groups):
        members = groups[x]
        k = math.ceil(len(members) / DRAW_ROWS)
        per = math.ceil(len(members) / k)
        for c in range(k):
            chunk = members[c * per:(c + 1) * per]
            for j, n in enumerate(chunk):
                out[n] = (x0 + 0.55 * c, -(j / (len(chunk) - 1) if len(chunk) > 1 else 0.5) * max(rows - 1, 1))
        x0 += 0.55 * (k - 1) + 1.0
    return out, x0 - 1.0, rows


def draw(graph: nx.MultiDiGraph, ax: Any, title: str = "", *, scale: float | None = None,
         marks: dict[tuple[str, str], str] | None = None) -> None:
    """Draw a connectome on a matplotlib axis: one column per layer and kind in forward order, each
    column spread over the full height; edge width by |score| relative to ``scale`` (default: this
    graph's largest), colour by sign, grey for exact zeros; ``marks`` ((u, v) -> ``gained``/``lost``)
    draws a coloured halo under those edges. Up to ``LABELS_UP_TO`` nodes every node is labelled
    (short labels, to the right of the dot); above that only the strongest half of that number."""
    pos, width, rows = _draw_positions(graph)
    simple = nx.DiGraph()
    simple.add_nodes_from(graph.nodes(data=True))
    for u, v, d in graph.edges(data=True):
        if simple.has_edge(u, v):
            simple[u][v]["score"] += d["score"]
        else:
            simple.add_edge(u, v, score=d["score"])
    max_abs = scale or max_abs_score(graph)
    for kind, colour in MARK_COLOURS.items():
        halo = [(u, v) for (u, v), k in (marks or {}).items() if k == kind and simple.has_edge(u, v)]
        if halo:
            nx.draw_networkx_edges(simple, pos, edgelist=halo, ax=ax, width=7, edge_color=colour, alpha=0.35, arrows=True, arrowstyle="-",
                                   connectionstyle="arc3,rad=0.08")
    edges = sorted(simple.edges(data=True), key=lambda e: abs(e[2]["score"]))  # the strongest drawn last, on top
    few = simple.number_of_nodes() <= LABELS_UP_TO
    nx.draw_networkx_edges(simple, pos, ax=ax, edgelist=[(u, v) for u, v, _ in edges],
                           width=[0.3 + 4 * min(abs(d["score"]) / max_abs, 1.0) for *_, d in edges],
                           edge_color=[_edge_colour(d["score"]) for *_, d in edges],
                           alpha=[0.25 + 0.6 * min(abs(d["score"]) / max_abs, 1.0) ** 0.5 for *_, d in edges],
                           arrows=True, arrowsize=8 if few else 5, connectionstyle="arc3,rad=0.08",
                           node_size=160 if few else 40)
    nx.draw_networkx_nodes(simple, pos, ax=ax, node_size=160 if few else 40, linewidths=0,
                           node_color=[KIND_COLOURS.get(a.get("kind") or "", "#999999") for _, a in simple.nodes(data=True)])
    if few:
        named = list(simple)
    else:  # a crowded drawing names only its strongest components (by |score| in and out)
        strength = {n: sum(abs(d["score"]) for *_, d in simple.in_edges(n, data=True)) + sum(abs(d["score"]) for *_, d in simple.out_edges(n, data=True))
                    for n in simple}
        named = sorted(simple, key=lambda n: -strength[n])[:LABELS_UP_TO // 2]
    for n in named:
        x, y = pos[n]
        ax.annotate(short_label(n), (x, y), xytext=(6, 0), textcoords="offset points", fontsize=7 if few else 6, va="center", ha="left",
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_title(title or figure_title(graph), fontsize=9)
    # the nodes fix the view (curved edges would otherwise widen it and squeeze the columns together)
    ax.set_xlim(-0.3, width + 0.45)
    ax.set_ylim(-max(rows - 1, 1) - 0.8, 0.8)
    ax.axis("off")


def _legend(fig: Any, kinds: set[str], marks: bool, scale: float | None, dictionaries: list[str] | None = None) -> None:
    """One legend for the figure: node kinds, edge colours, halos, the shared width scale, and the
    key of the short labels (``L0.F93`` is feature 93 of the dictionary named there)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=KIND_COLOURS[k], label=k) for k in sorted(kinds) if k in KIND_COLOURS]
    handles += [Line2D([], [], color="#1f77b4", label="corrupting raises the metric"),
                Line2D([], [], color="#d62728", label="corrupting lowers it"),
                Line2D([], [], color=ZERO_COLOUR, label="exactly 0")]
    if marks:
        handles += [Line2D([], [], color=c, linewidth=7, alpha=0.35, label=f"{k} (top-N)") for k, c in MARK_COLOURS.items()]
    if scale is not None:
        handles.append(Line2D([], [], color="black", linewidth=4.3, label=f"width 4.3 pt = |score| {scale:.3g} (both panels)"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.025), ncol=min(len(handles), 4), fontsize=8, frameon=False)
    if dictionaries:  # the key of the short labels
        fig.text(0.5, 0.005, "L<l>.F<f> = feature f, L<l>.ERR = error term of dictionary " + "; ".join(dictionaries),
                 ha="center", va="bottom", fontsize=7, wrap=True)


def _figure(n_panels: int, graphs: list[nx.MultiDiGraph]) -> tuple[Any, Any]:
    """Panels sized to the drawing: ~1.6 in per column, ~0.24 in per row of the tallest column (so
    labels never touch), within 40 x 30 in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = [_draw_positions(g)[1:] for g in graphs]
    cols = max(c for c, _ in shapes) + 1
    rows = max(r for _, r in shapes)
    width = min(40.0, max(6.0, 1.6 * cols + 1.5))
    height = min(30.0, max(4.5, 0.24 * rows + 2.2))
    fig, axes = plt.subplots(1, n_panels, figsize=(n_panels * width, height), squeeze=False)
    return fig, axes[0]


FIGURE_DPI: contextvars.ContextVar[int | None] = contextvars.ContextVar("FIGURE_DPI", default=None)
"""The resolution of raster figures (``--dpi``; None: each figure's own default). A path ending in
``.svg`` or ``.pdf`` is written as vector graphics at any setting."""


def _save(fig: Any, path: Path, dpi: int) -> Path:
    """Write a figure (format from the suffix: .png, .svg, .pdf, .jpg) at ``--dpi`` when given."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=FIGURE_DPI.get() or dpi)
    plt.close(fig)
    return Path(path)


def to_png(graph: nx.MultiDiGraph, path: Path, title: str = "") -> Path:
    """A static layered drawing (x = layer), edge width by |score|, colour by sign, with a legend."""

    fig, (ax,) = _figure(1, [graph])
    draw(graph, ax, title)
    _legend(fig, {str(d.get("kind")) for _, d in graph.nodes(data=True)}, False, None, dictionaries_of(graph))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path, 120)


def to_png_side_by_side(a: nx.MultiDiGraph, b: nx.MultiDiGraph, path: Path, titles: tuple[str, str],
                        marks: tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]] | None = None) -> Path:
    """Two connectomes next to each other on one image (for ``atlas compare``): one width scale for
    both panels, ``marks`` (per panel, (u, v) -> ``gained``/``lost``) as halos, one legend."""

    scale = max_abs_score(a, b)
    fig, axes = _figure(2, [a, b])
    draw(a, axes[0], titles[0], scale=scale, marks=marks[0] if marks else None)
    draw(b, axes[1], titles[1], scale=scale, marks=marks[1] if marks else None)
    kinds = {str(d.get("kind")) for g in (a, b) for _, d in g.nodes(data=True)}
    _legend(fig, kinds, bool(marks and (marks[0] or marks[1])), scale, sorted(set(dictionaries_of(a)) | set(dictionaries_of(b))))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path, 110)


def to_html_side_by_side(a: nx.MultiDiGraph, b: nx.MultiDiGraph, path: Path, titles: tuple[str, str],
                         marks: tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]] | None = None) -> Path:
    """One self-contained offline page showing two connectome pages side by side (each embedded whole
    in its panel), on one width scale, with gained/lost ``marks`` per panel."""
    import tempfile

    path = Path(path)
    scale = max_abs_score(a, b)
    panels = []
    with tempfile.TemporaryDirectory(prefix="atlas-compare-") as tmp:
        for i, (graph, title) in enumerate(zip((a, b), titles)):
            page = to_html(graph, Path(tmp) / f"{i}.html", title, scale=scale, marks=marks[i] if marks else None)
            panels.append((title, page.read_text(encoding="utf-8")))
    frames = "".join(
        f'<div style="flex:1;min-width:0"><h3 style="margin:4px 8px">{html.escape(t)}</h3>'
        f'<iframe title="{html.escape(t)}" srcdoc="{html.escape(body, quote=True)}" style="width:100%;height:880px;border:0"></iframe></div>'
        for t, body in panels
    )
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(' vs '.join(titles))}</title></head>"
                    f"<body style='font-family:sans-serif;margin:0'><div style='display:flex;gap:8px'>{frames}</div></body></html>", encoding="utf-8")
    return path


def comparison_marks(a: nx.MultiDiGraph, b: nx.MultiDiGraph, figures: dict[str, Any],
                     rename_a: dict[str, str] | None = None) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """Per panel, the node pairs of a comparison's ``lost`` (panel A) and ``gained`` (panel B) edges.

    ``figures`` holds the keys ``"L0.H0 -> L1.H2 [k]"`` in B's local ids; ``rename_a`` maps A's
    component ids to B's local ids (an alignment; default: A's own local ids)."""

    def pairs(keys: list[str]) -> set[tuple[str, str]]:
        return {tuple(k.rsplit(" [", 1)[0].split(" -> ", 1)) for k in keys}  # type: ignore[misc]

    lost, gained = pairs(figures.get("lost", [])), pairs(figures.get("gained", []))
    local_a = {n: local_id(n) if rename_a is None else rename_a.get(n) for n in a.nodes}  # unmatched: no counterpart
    marks_a = {(u, v): "lost" for u, v in a.edges() if (local_a[u], local_a[v]) in lost}
    marks_b = {(u, v): "gained" for u, v in b.edges() if (local_id(u), local_id(v)) in gained}
    return marks_a, marks_b


def timeline_png(frame: pd.DataFrame, path: Path, title: str) -> Path:
    """Circuit similarity to the final model over training: weighted Jaccard of the top-N edges and
    Spearman of the shared edges against the step (``frame``: ``step`` (None for the final model),
    ``weightedJaccard``, ``spearman``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = frame["step"].astype("float").to_numpy()
    known = steps[~pd.isna(steps)]
    final = (known.max() * 1.1 if len(known) and known.max() > 0 else 1.0)
    x = [final if pd.isna(s) else s for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, frame["weightedJaccard"], marker="o", label="weighted Jaccard, top-N edges")
    ax.plot(x, frame["spearman"], marker="s", label="Spearman, shared edges")
    ax.set_xlabel("training step (last point: the final model)")
    ax.set_ylabel("similarity to the final model")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="#cccccc", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path, 120)


def development_png(trajectories: pd.DataFrame, checkpoints: pd.DataFrame, summary: dict[str, Any], path: Path, title: str) -> Path:
    """Critical periods (``atlas development``): each final-circuit edge's |score| over training
    with the null threshold, the task loss on a second axis, and the loss's change point shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (edges, sparse) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, group in trajectories.groupby(["componentId_pre", "componentId_post", "channel"], sort=False):
        group = group.sort_values("step")
        edges.plot(group["step"], group["score"].abs(), marker=".", linewidth=1, label=f"{key[0]} -> {key[1]} [{key[2]}]")
    edges.axhline(summary["nullThreshold"], color="#999999", linestyle="--", linewidth=1, label="null (95th pct at init)")
    lo, hi = summary["jumpBetween"]
    edges.axvspan(lo, hi, color="#ffdd99", alpha=0.4, label="loss change point")
    edges.set_xlabel("training step")
    edges.set_ylabel("|score| of a final-circuit edge")
    loss = edges.twinx()
    loss.plot(checkpoints["step"], checkpoints["loss"], color="black", linewidth=2, label="task loss")
    loss.set_ylabel("task loss (nats)")
    edges.legend(fontsize=6, loc="upper left")
    sparse.plot(checkpoints["step"], checkpoints["gini"], marker="o", label="Gini of |score|")
    sparse.plot(checkpoints["step"], checkpoints["share90"], marker="s", label="share of edges holding 90%")
    sparse.set_xlabel("training step")
    sparse.set_ylim(-0.02, 1.02)
    sparse.legend(fontsize=7)
    fig.suptitle(f"{title} ({summary['verdict']})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, 120)


def views_png(points: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str) -> Path:
    """One 2-D scatter per source (``atlas views``), points coloured by the variable's value, each
    panel titled with its separation against the permuted-label null. A variable of up to 20 values
    is categorical (one colour each, a legend of them); more values get a continuous colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = summary["source"].tolist()
    cols = min(4, len(sources))
    rows = (len(sources) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows + 0.8), squeeze=False)
    labels = points["label"].astype(int)
    values = sorted(labels.unique())
    variable = str(summary["variable"].iloc[0]) if "variable" in summary.columns else "value"
    categorical = len(values) <= 20
    palette = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    sc = None
    for ax, (_, row) in zip(axes.flat, summary.iterrows()):
        sub = points[points["source"] == row["source"]]
        if categorical:
            for i, v in enumerate(values):
                hit = sub[sub["label"].astype(int) == v]
                ax.scatter(hit["x"], hit["y"], color=palette(i), s=6, label=str(v))
        else:
            sc = ax.scatter(sub["x"], sub["y"], c=sub["label"], cmap="viridis", vmin=min(values), vmax=max(values), s=6)
        ax.set_title(f"{short_label(str(row['source']))}: 1-NN {row['separation']:.2f} (null {row['separationNull']:.2f})", fontsize=8)
        ax.set_xlabel("dimension 1", fontsize=7)
        ax.set_ylabel("dimension 2", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(sources):]:
        ax.axis("off")
    if categorical:
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, title=variable, loc="lower center", ncol=min(len(values), 10), fontsize=7, title_fontsize=8,
                   markerscale=2, frameon=False)
        fig.tight_layout(rect=(0, 0.1 if len(values) <= 10 else 0.16, 1, 0.95))
    else:
        assert sc is not None
        fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.8, label=variable)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, 110)


def scaling_png(table: pd.DataFrame, verdicts: pd.DataFrame, path: Path, title: str) -> Path:
    """Every scaling statistic against size, one line per seed, each panel titled with its trend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = verdicts["statistic"].tolist()
    fig, axes = plt.subplots(2, (len(stats) + 1) // 2, figsize=(3.2 * ((len(stats) + 1) // 2), 6), squeeze=False)
    for ax, (_, verdict) in zip(axes.flat, verdicts.iterrows()):
        for seed, sub in table.groupby("seed"):
            sub = sub.sort_values("size")
            ax.plot(sub["size"], sub[verdict["statistic"]], marker="o", label=f"seed {seed}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("heads per layer")
        ax.set_title(f"{verdict['statistic']}: {verdict['trend']}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(stats):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, 110)


def _group(cid: str) -> tuple[int, str]:
    """(forward stage, label) of a component's (layer, kind) group: ``EMBED``, ``L1 heads``, ``L1 MLP``,
    ``L1 neurons``, ``L1 features``, ``LOGITS``."""
    from atlas.ids import parse_component_id, write_stage

    ref = parse_component_id(cid)
    kind = ref.kind.value
    if kind in ("embed", "logits"):
        return (write_stage(ref.kind, ref.layer) if kind == "embed" else 10**9), kind.upper()
    name = {"head": "heads", "mlp": "MLP", "neuron": "neurons", "feature": "features", "error": "features"}[kind]
    return write_stage(ref.kind, ref.layer), f"L{ref.layer} {name}"


def flow_matrix(edges: pd.DataFrame) -> pd.DataFrame:
    """A run's attribution summed as |score| between (layer, kind) groups, senders in rows and
    receivers in columns, both in forward order: the block summary of a connectome of any size
    (every edge counts once, so the matrix sums to the run's total |score|)."""
    groups = {cid: _group(cid) for cid in pd.unique(pd.concat([edges["componentId_pre"], edges["componentId_post"]]))}
    frame = pd.DataFrame({"src": edges["componentId_pre"].map(lambda c: groups[c][1]), "dst": edges["componentId_post"].map(lambda c: groups[c][1]),
                          "w": edges["score"].abs()})
    matrix = frame.pivot_table(index="src", columns="dst", values="w", aggfunc="sum", fill_value=0.0)
    order = [label for _, label in sorted(set(groups.values()))]
    return matrix.reindex(index=[g for g in order if g in matrix.index], columns=[g for g in order if g in matrix.columns], fill_value=0.0)


def flow_png(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """The block matrix of :func:`flow_matrix` as an annotated heatmap (share of the total |score|)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = matrix / float(matrix.to_numpy().sum() or 1.0)
    fig, ax = plt.subplots(figsize=(max(5.5, 2.2 + 0.7 * share.shape[1]), max(3.8, 1.4 + 0.5 * share.shape[0])))
    from matplotlib.colors import LogNorm

    values = share.to_numpy()
    top = float(values.max()) or 1.0
    # a log scale over three decades below the largest block: a linear one shows one block and blanks the rest
    im = ax.imshow(np.where(values > 0, values, np.nan), cmap="Blues", norm=LogNorm(vmin=top / 1000, vmax=top, clip=True))
    ax.set_xticks(range(share.shape[1]), share.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(share.shape[0]), share.index, fontsize=8)
    for i in range(share.shape[0]):
        for j in range(share.shape[1]):
            if share.iat[i, j] >= 0.005:
                ax.text(j, i, f"{share.iat[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if share.iat[i, j] > 0.1 * top else "black")
    ax.set_xlabel("receiving group")
    ax.set_ylabel("sending group")
    fig.colorbar(im, ax=ax, label="share of |score| (log; blank: none)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, 110)


def adjacency_matrix(edges: pd.DataFrame, max_nodes: int = 200) -> tuple[list[str], Any]:
    """The adjacency block matrix of a run of any size: the ``max_nodes`` components with the most
    |score| (in plus out), in forward order (layer, then kind: the groups of :func:`flow_matrix`), and
    the signed score from each (row) to each (column) summed over channels."""
    import numpy as np

    w = edges["score"].abs()
    strength = pd.concat([w.groupby(edges["componentId_pre"], observed=True).sum(),
                          w.groupby(edges["componentId_post"], observed=True).sum()]).groupby(level=0).sum()
    keep = {str(c) for c in strength.nlargest(max_nodes).index}
    pre, post = edges["componentId_pre"].astype(str), edges["componentId_post"].astype(str)
    inside = (pre.isin(keep) & post.isin(keep)).to_numpy()
    nodes = sorted(keep, key=lambda c: (_group(c), c))
    index = {c: i for i, c in enumerate(nodes)}
    grid = np.zeros((len(nodes), len(nodes)))
    np.add.at(grid, (pre[inside].map(index).to_numpy(), post[inside].map(index).to_numpy()), edges["score"].to_numpy()[inside])
    return nodes, grid


def column_positions(ids: list[str], aspect: float = 2.2) -> dict[str, tuple[float, float]]:
    """A layout for an interactive drawing of any size: one column per (layer, kind) group in forward
    order (x from 0 to ``aspect``), each column's members spread evenly over the full height (y from 0
    to 1; one member sits in the middle), in id order within the group (heads by index, neurons by
    index). Unlike :func:`layered_positions` (fixed spacing for a static page), columns never run off
    the view and a 500-node run fills the box."""
    import re as _re

    def natural(cid: str) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in _re.split(r"(\d+)", local_id(cid))]

    columns: dict[tuple[int, str], list[str]] = {}
    for cid in ids:
        columns.setdefault(_group(cid), []).append(cid)
    order = sorted(columns)
    out: dict[str, tuple[float, float]] = {}
    for i, key in enumerate(order):
        x = aspect * (i / (len(order) - 1) if len(order) > 1 else 0.5)
        members = sorted(columns[key], key=natural)
        for j, cid in enumerate(members):
            out[cid] = (x, j / (len(members) - 1) if len(members) > 1 else 0.5)
    return out


def component_group(cid: str) -> str:
    """The (layer, kind) group a component belongs to in :func:`flow_matrix`: ``L1 heads``, ``EMBED``, ..."""
    return _group(cid)[1]


def score_norm(scale: float) -> Any:
    """The colour scale of signed scores: symmetric log, linear within 1e-3 of ``scale`` (a linear
    scale shows the strongest cell of a run and leaves every other one white)."""
    from matplotlib.colors import SymLogNorm

    return SymLogNorm(linthresh=scale * 1e-3, linscale=0.5, vmin=-scale, vmax=scale, base=10)


def heatmap_png(edges: pd.DataFrame, path: Path, title: str, max_nodes: int = 200) -> Path:
    """The adjacency of the ``max_nodes`` components with the most |score| (in plus out), ordered by
    forward stage (layer, then kind) with the groups of :func:`flow_matrix` marked; colour is the
    signed score summed over channels. Readable at any run size: one pixel row per component."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes, grid = adjacency_matrix(edges, max_nodes)
    scale = float(np.abs(grid).max()) or 1.0
    size = min(12.0, 3.0 + 0.04 * len(nodes))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(grid, cmap="RdBu_r", norm=score_norm(scale), interpolation="nearest")
    labels = [_group(c)[1] for c in nodes]
    starts = [i for i in range(len(nodes)) if i == 0 or labels[i] != labels[i - 1]]
    for i in starts[1:]:
        ax.axhline(i - 0.5, color="#888888", linewidth=0.5)
        ax.axvline(i - 0.5, color="#888888", linewidth=0.5)
    # one tick per group at its middle, named with its size (a group of one or two rows is named by its tick alone)
    ends = [*starts[1:], len(nodes)]
    middles = [(a + b - 1) / 2 for a, b in zip(starts, ends)]
    names = [f"{labels[a]} ({b - a})" if b - a > 1 else labels[a] for a, b in zip(starts, ends)]
    ax.set_yticks(middles, names, fontsize=7)
    ax.set_xticks(middles, names, fontsize=7, rotation=90)
    ax.set_xlabel("receiver")
    ax.set_ylabel("sender")
    fig.colorbar(im, ax=ax, label="score summed over channels (symmetric log scale; linear within 1e-3 of the largest)")
    ax.set_title(f"{title} ({len(nodes)} components)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, 110)


def lens_png(layers: pd.DataFrame, path: Path, title: str) -> Path:
    """Predictive coding per reading point (``atlas lens``): KL(final || lens) of the logit lens and of
    the tuned lens on held-out prompts, and their top-1 agreement with the final prediction next to
    the agreement of a constant guess (chance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(layers)))
    fig, (kl, agree) = plt.subplots(1, 2, figsize=(9, 3.6))
    kl.plot(x, layers["klLogitLens"], marker="o", label="logit lens")
    kl.plot(x, layers["klTunedLens"], marker="s", label="tuned lens (held-out prompts)")
    kl.set_ylabel("KL(final || lens), nats")
    agree.plot(x, layers["agreeLogitLens"], marker="o", label="logit lens")
    agree.plot(x, layers["agreeTunedLens"], marker="s", label="tuned lens (held-out)")
    agree.axhline(float(layers["agreeChance"].iloc[0]), color="#999999", linestyle="--", linewidth=1, label="chance (constant guess)")
    agree.set_ylabel("top-1 agreement with the final prediction")
    agree.set_ylim(-0.02, 1.02)
    for ax in (kl, agree):
        ax.set_xticks(x, layers["layer"].tolist())
        ax.set_xlabel("reading point (a layer's input; final stream)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, 120)


def prompts_png(prompts: pd.DataFrame, path: Path, title: str) -> Path:
    """Per prompt: the behaviour (clean - corrupted metric) and, when present, a component's
    contribution (collapsed prompts in red) and a circuit's faithfulness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["gap"] + [c for c in ("contribution", "circuitFaithfulness") if c in prompts.columns]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.35 * len(prompts) + 2), 2.2 * len(panels)), sharex=True, squeeze=False)
    x = prompts["index"].to_numpy()
    labels = {"gap": "metric: clean - corrupted", "contribution": "component's contribution", "circuitFaithfulness": "circuit faithfulness"}
    for ax, col in zip(axes[:, 0], panels):
        colours = ["#4c78a8"] * len(prompts)
        if col == "contribution" and "collapsed" in prompts.columns:
            colours = ["#d62728" if c else "#4c78a8" for c in prompts["collapsed"]]
        if col == "circuitFaithfulness" and "carried" in prompts.columns:
            colours = ["#4c78a8" if c else "#ff7f0e" for c in prompts["carried"]]
        ax.bar(x, prompts[col].fillna(0.0), color=colours)
        ax.axhline(0, color="#999999", linewidth=0.8)
        ax.set_ylabel(labels[col], fontsize=8)
    axes[-1, 0].set_xlabel("prompt")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, 110)


FORMATS = {"html": to_html, "graphml": to_graphml, "gexf": to_gexf, "json": to_json, "png": to_png}


def export_run_html(store: Store, run_id: str, path: Path, top: int | None = None, min_weight: float = 0.0) -> tuple[Path, nx.MultiDiGraph]:
    """Fetch a run's edges (optionally the top-N by |score|) and write its HTML page."""
    graph = select_graph(store, run_id, top=top, min_weight=min_weight)
    return to_html(graph, path, title=f"connectome {run_id}"), graph
