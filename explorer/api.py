"""The explorer's answers: one function per JSON endpoint, each a thin shape over the functions the
command line calls (``atlas runs``, ``paths``, ``compare``, ``query``, ``export --flow/--heatmap``).

A complete run never changes, so its edges are read once and kept (:class:`RunView`, a few runs at
a time): the first request for a run pays the fetch (about a second for 1M edges), later ones work
on numpy arrays in memory. A run that is not complete is read afresh on every request and says so.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ComponentNotFound, QueryError, ReadOnlyViolation, ValidationError
from atlas.ids import local_id
from atlas.jsontext import strict_json as clean
from atlas.records import RunRecord
from atlas.schema import Method
from atlas.store import Store
from queries.criteria import ComponentCriteria
from queries.export import KIND_COLOURS, adjacency_matrix, column_positions, component_group, flow_matrix
from queries.graph import kind_and_layer

__all__ = ["RunView", "Explorer", "clean"]

MAX_TOP = 2000
"""The most edges a page draws or lists at once (the table pages; the graph draws its own top-k)."""
QUERY_ROWS = 5000
"""Rows the query console returns (it says when it cut)."""
QUERY_SECONDS = 20.0
"""The query console's time limit."""


def _frame_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [clean(r) for r in df.to_dict("records")]


@dataclass
class RunView:
    """A run's edges held as arrays: component codes into ``ids``, channel codes, scores, the order
    by |score|, and each component's rows as a sender and as a receiver."""

    run: RunRecord
    edges: pd.DataFrame
    ids: np.ndarray
    local: pd.Index
    pre: np.ndarray
    post: np.ndarray
    channels: list[str]
    channel: np.ndarray
    score: np.ndarray
    order: np.ndarray
    strength: np.ndarray
    layer: np.ndarray
    kind: np.ndarray
    _sent: tuple[np.ndarray, np.ndarray] = field(default=None)  # type: ignore[assignment]
    _received: tuple[np.ndarray, np.ndarray] = field(default=None)  # type: ignore[assignment]
    _memo: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, run: RunRecord, edges: pd.DataFrame) -> RunView:
        # categorical columns (the packed form every ingested run keeps) are re-coded onto one id list
        # without touching 1M strings; anything else is factorised
        pre_c, post_c = (pd.Categorical(edges[c]) for c in ("componentId_pre", "componentId_post"))
        ids = pd.Index(pre_c.categories.astype(str)).union(pd.Index(post_c.categories.astype(str)))
        pre = pre_c.rename_categories(pre_c.categories.astype(str)).set_categories(ids).codes.astype(np.int64)
        post = post_c.rename_categories(post_c.categories.astype(str)).set_categories(ids).codes.astype(np.int64)
        chan_c = pd.Categorical(edges["channel"].astype(str) if edges["channel"].dtype != "category" else edges["channel"])
        channels = pd.Index(chan_c.categories.astype(str)).sort_values()
        channel_codes = chan_c.rename_categories(chan_c.categories.astype(str)).set_categories(channels).codes
        score = edges["score"].to_numpy(dtype=float)
        mag = np.abs(score)
        strength = np.bincount(pre, mag, len(ids)) + np.bincount(post, mag, len(ids))
        ids = np.asarray(ids, dtype=object)
        kinds, layers = zip(*(kind_and_layer(c) for c in ids)) if len(ids) else ((), ())
        return cls(run=run, edges=edges, ids=ids, local=pd.Index([local_id(c) for c in ids]), pre=pre, post=post,
                   channels=[str(c) for c in channels], channel=channel_codes.astype(np.int64), score=score,
                   order=np.argsort(-mag, kind="stable"), strength=strength,
                   layer=np.array([-1 if v is None else v for v in layers], dtype=np.int64), kind=np.array(kinds, dtype=object))

    def _rows_of(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows sorted by the component at ``side``, where each component's rows start)."""
        cached = self._sent if side == "pre" else self._received
        if cached is None:
            codes = self.pre if side == "pre" else self.post
            rows = np.argsort(codes, kind="stable")
            starts = np.searchsorted(codes[rows], np.arange(len(self.ids) + 1))
            cached = (rows, starts)
            if side == "pre":
                self._sent = cached
            else:
                self._received = cached
        return cached

    def rows_touching(self, code: int, side: str) -> np.ndarray:
        rows, starts = self._rows_of(side)
        return rows[starts[code]:starts[code + 1]]

    def code_of(self, component: str) -> int:
        """A component's code from its full or local id (``L9.H9``)."""
        hit = np.flatnonzero(self.ids == component)
        if not len(hit):
            hit = np.flatnonzero(self.local == component)
        if not len(hit):
            raise ComponentNotFound(f"run {self.run.run_id} has no edge at component {component!r}")
        return int(hit[0])

    def edge_rows(self, rows: np.ndarray) -> list[dict[str, Any]]:
        return [{"source": self.ids[self.pre[r]], "target": self.ids[self.post[r]], "channel": self.channels[self.channel[r]],
                 "score": clean(float(self.score[r]))} for r in rows]

    def node(self, code: int) -> dict[str, Any]:
        return {"id": self.ids[code], "label": self.local[code], "kind": self.kind[code], "layer": int(self.layer[code]),
                "strength": clean(float(self.strength[code])), "group": component_group(self.ids[code])}


def _scale(view: RunView) -> float:
    return float(np.abs(view.score).max()) if len(view.score) else 0.0


class Explorer:
    """The explorer's state: one read-only store (used by one request at a time) and the kept runs."""

    def __init__(self, store: Store, *, keep_runs: int = 3, query_seconds: float = QUERY_SECONDS) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._keep = keep_runs
        self.query_seconds = query_seconds
        # the console's statements run beside the pages (the driver is thread-safe; each statement has its own session)
        self._console = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="atlas-console")

    # -- runs ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """What every page shares: the kinds' colours, the database's name, the endpoints."""
        from atlas import __version__

        return {"colours": KIND_COLOURS, "version": __version__, "database": self.store.agent,
                "endpoints": ["runs", "overview", "edges", "search", "component", "paths", "compare", "query", "cookbook", "meta"]}

    def runs(self) -> dict[str, Any]:
        """Every run (what ``atlas runs`` prints), newest first."""
        with self._lock:
            df = cx.fetch_runs(self.store)
        rows = _frame_rows(df)
        rows.reverse()
        return {"runs": rows, "colours": KIND_COLOURS}

    def view(self, run_id: str) -> RunView:
        if not isinstance(run_id, str) or not run_id:
            raise ValidationError("say which run: ?run=RUN_ID")
        with self._lock:
            kept = self._views.get(run_id)
            if kept is not None:
                self._views.move_to_end(run_id)
                return kept
            run = cx.require_run(self.store, run_id)
            edges = cx.fetch_edge_columns(self.store, run_id, categorical=True)
            if edges.empty:
                raise ValidationError(f"run {run_id} holds no edges" + (f" (a {run.method} study: its figures are on its model's components)"
                                                                         if run.method not in EDGE_METHODS else ""))
            view = RunView.build(run, edges)
            if run.complete:  # a complete run never changes; others are read afresh each time
                self._views[run_id] = view
                while len(self._views) > self._keep:
                    self._views.popitem(last=False)
            return view

    def _memo(self, view: RunView, key: str, make: Any) -> Any:
        if key not in view._memo:
            view._memo[key] = make()
        return view._memo[key]

    def _run_header(self, view: RunView) -> dict[str, Any]:
        run = view.run
        props = {k: v for k, v in run.to_props().items() if not (isinstance(v, str) and len(v) > 400)}
        return clean({**props, "complete": run.complete, "nEdgesHeld": len(view.score), "nComponents": len(view.ids),
                      "scale": _scale(view), "warning": None if run.complete else
                      f"run {run.run_id} is {run.status.value}, not complete: what is shown may change or be partial"})

    # -- a run's overview ----------------------------------------------------------------------
    def overview(self, run_id: str, top: int = 300, blocks: int = 60) -> dict[str, Any]:
        """The flow summary (layer x kind), the adjacency block matrix of the strongest components,
        and the top-``top`` subgraph laid out by layer."""
        top, blocks = _bounded(top, "top", 1, MAX_TOP), _bounded(blocks, "blocks", 2, 300)
        view = self.view(run_id)

        def flow() -> dict[str, Any]:
            m = flow_matrix(view.edges)
            total = float(m.to_numpy().sum()) or 1.0
            return {"rows": list(m.index), "cols": list(m.columns), "share": clean((m.to_numpy() / total).round(6))}

        def block() -> dict[str, Any]:
            nodes, grid = adjacency_matrix(view.edges, blocks)
            return {"nodes": [local_id(c) for c in nodes], "ids": nodes, "groups": [component_group(c) for c in nodes],
                    "score": clean(grid.round(8))}

        return {"run": self._run_header(view), "flow": self._memo(view, "flow", flow),
                "blocks": self._memo(view, f"blocks{blocks}", block), "graph": self._memo(view, f"graph{top}", lambda: self._graph(view, view.order[:top]))}

    def _graph(self, view: RunView, rows: np.ndarray) -> dict[str, Any]:
        """Nodes (a column per layer and kind, :func:`queries.export.column_positions`) and edges of the given edge rows."""
        codes = np.unique(np.concatenate([view.pre[rows], view.post[rows]])) if len(rows) else np.array([], dtype=np.int64)
        pos = column_positions([str(view.ids[c]) for c in codes])
        nodes = []
        for code in codes:
            n = view.node(int(code))
            x, y = pos[n["id"]]
            nodes.append({**n, "x": x, "y": y})
        return {"nodes": nodes, "edges": view.edge_rows(rows)}

    # -- the edge table and the search ---------------------------------------------------------
    def edges(self, run_id: str, *, top: int = 100, layer: str | None = None, kind: str | None = None, channel: str | None = None,
              min_abs: float | None = None, max_abs: float | None = None, component: str | None = None) -> dict[str, Any]:
        """The strongest edges passing the filters (either end's layer or kind, the channel, an
        |score| range, an id glob on either end), strongest first."""
        top = _bounded(top, "top", 1, MAX_TOP)
        view = self.view(run_id)
        keep = np.ones(len(view.score), dtype=bool)
        if layer:
            layers = _int_list(layer, "layer")
            keep &= np.isin(view.layer[view.pre], layers) | np.isin(view.layer[view.post], layers)
        if kind not in (None, ""):
            label = ComponentCriteria(kind=kind).kind
            keep &= (view.kind[view.pre] == label) | (view.kind[view.post] == label)
        if channel not in (None, ""):
            if channel not in view.channels:
                raise ValidationError(f"run {run_id} has no channel {channel!r}: {', '.join(view.channels)}")
            keep &= view.channel == view.channels.index(str(channel))
        mag = np.abs(view.score)
        if min_abs is not None:
            keep &= mag >= float(min_abs)
        if max_abs is not None:
            keep &= mag <= float(max_abs)
        if component not in (None, ""):
            hit = _glob(view, str(component))
            keep &= hit[view.pre] | hit[view.post]
        rows = view.order[keep[view.order]]
        return {"run": run_id, "matched": int(len(rows)), "edges": view.edge_rows(rows[:top]), "channels": view.channels}

    def search(self, run_id: str, pattern: str, limit: int = 50) -> dict[str, Any]:
        """Components whose local id matches a glob (``L5.*``, ``L9.H9``, ``*N12``), strongest first."""
        view = self.view(run_id)
        hit = np.flatnonzero(_glob(view, pattern))
        hit = hit[np.argsort(-view.strength[hit], kind="stable")]
        return {"run": run_id, "matched": int(len(hit)), "components": [view.node(int(c)) for c in hit[:_bounded(limit, "limit", 1, 1000)]]}

    # -- one component -------------------------------------------------------------------------
    def component(self, run_id: str, component: str, top: int = 15) -> dict[str, Any]:
        """A component's strongest inputs and outputs per channel, every figure stored on it by the
        toolbox, and its neighbours."""
        top = _bounded(top, "top", 1, 500)
        view = self.view(run_id)
        code = view.code_of(component)

        def strongest(side: str) -> dict[str, list[dict[str, Any]]]:
            rows = view.rows_touching(code, "post" if side == "in" else "pre")
            out: dict[str, list[dict[str, Any]]] = {}
            for ch in np.unique(view.channel[rows]):
                mine = rows[view.channel[rows] == ch]
                mine = mine[np.argsort(-np.abs(view.score[mine]), kind="stable")[:top]]
                out[view.channels[int(ch)]] = view.edge_rows(mine)
            return out

        cid = str(view.ids[code])
        with self._lock:
            props = cx.fetch_components(self.store, view.run.model_id, [cid])
            studies = cx.fetch_runs(self.store, view.run.model_id)
            prompts = None
            if view.run.details.get("perPrompt") and np.any(view.pre == code):
                from queries.prompts import fetch_prompt_view

                shown = fetch_prompt_view(self.store, view.run.run_id, component=cid).prompts
                prompts = _frame_rows(shown[[c for c in ("text", "gap", "contribution", "share", "collapsed") if c in shown.columns]])
        stored = {}
        if not props.empty:
            stored = {k: _parsed(v) for k, v in props.iloc[0].items() if k not in ("componentId",) and _present(v)}
        studies = studies[~studies["method"].isin(EDGE_METHODS)] if not studies.empty else studies
        by_method = {str(r["method"]): r for r in _frame_rows(studies)}  # the latest run of each study (runs come oldest first)
        figures = [{"property": k, "value": v, "study": _study_of(k),
                    "run": (by_method.get(_study_of(k) or "") or {}).get("runId")} for k, v in sorted(clean(stored).items())
                   if k not in ("kind", "layer", "head", "neuron", "feature", "modelId", "dictionaryId")]
        return {"run": self._run_header(view), "component": view.node(code), "properties": clean(stored), "figures": figures,
                "inputs": strongest("in"), "outputs": strongest("out"), "prompts": prompts}

    # -- paths, comparisons, Cypher ------------------------------------------------------------
    def paths(self, run_id: str, *, source: str | None = None, target: str | None = None, through: list[str] | None = None,
              k: int = 10, min_weight: float = 0.0, max_length: int | None = None) -> dict[str, Any]:
        """The top-``k`` paths (``atlas paths``: the same search over the kept edges) and their subgraph."""
        from queries.paths import fetch_paths

        k = _bounded(k, "k", 1, 200)
        view = self.view(run_id)
        with self._lock:
            found = fetch_paths(self.store, run_id, sources=ComponentCriteria.parse(source) if source else None,
                                targets=ComponentCriteria.parse(target) if target else None,
                                through=[ComponentCriteria.parse(t) for t in (through or []) if t], top=k,
                                min_weight=float(min_weight), max_length=max_length, edges=view.edges)
        paths = [{"rank": int(r["rank"]), "strength": clean(float(r["strength"])), "nodes": list(r["nodes"]),
                  "channels": list(r["channels"]), "shares": clean([float(x) for x in r.get("shares", [])])} for r in found.to_dict("records")]
        rows: set[int] = set()
        for p in paths:  # each hop's edges: its sender's rows into its receiver, on the hop's channels ("k+v": either)
            for a, b, chans in zip(p["nodes"], p["nodes"][1:], p["channels"]):
                sent = view.rows_touching(view.code_of(a), "pre")
                wanted = [view.channels.index(c) for c in str(chans).split("+") if c in view.channels]
                rows.update(int(r) for r in sent[(view.post[sent] == view.code_of(b)) & np.isin(view.channel[sent], wanted)])
        return {"run": self._run_header(view), "paths": paths, "graph": self._graph(view, np.array(sorted(rows), dtype=np.int64))}

    def compare(self, run_a: str, run_b: str, top: int = 50, changes: int = 100) -> dict[str, Any]:
        """Two runs on their aligned graph (``atlas compare A B``): the figures, the gained and lost
        top edges, the largest per-edge changes, and the alignment's matches when there is one."""
        from queries.compare import compare_runs

        top, changes = _bounded(top, "top", 1, MAX_TOP), _bounded(changes, "changes", 1, MAX_TOP)
        if not run_a or not run_b:
            raise ValidationError("say which two runs: ?a=RUN&b=RUN")
        with self._lock:
            result = compare_runs(self.store, run_a, run_b, top=top, changes=changes)
            runs = {r: self._run_header(self.view(r)) for r in (run_a, run_b)}
        alignment = None
        if result.alignment is not None:
            alignment = _frame_rows(result.alignment.head(MAX_TOP))
        return {"runs": runs, "figures": clean(dict(result.figures)), "changes": _frame_rows(result.changes), "alignment": alignment}

    def query(self, cypher: str, params: dict[str, Any] | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """A Cypher statement through the read-only user (the server refuses writes), answered within
        ``timeout_s``; at most ``QUERY_ROWS`` rows come back. The time limit is asked of the server
        (Neo4j honours a transaction's timeout) and kept here as well (ArcadeDB 26.10 ignores it over
        Bolt): past it the page is told so and the statement is left to finish on the server."""
        if not isinstance(cypher, str) or not cypher.strip():
            raise ValidationError("write a Cypher statement")
        if params is not None and not isinstance(params, dict):
            raise ValidationError("params must be a JSON object")
        timeout_s = self.query_seconds if timeout_s is None else timeout_s
        job = self._console.submit(self.store.run, cypher, params or {}, write=False, timeout=timeout_s)
        try:
            df = job.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise QueryError(f"the statement ran past the explorer's {timeout_s:g} s limit: narrow it (a run id, a LIMIT); "
                             "the server may still be finishing it") from None
        except ReadOnlyViolation:
            raise ReadOnlyViolation("the explorer only reads: the database refused the statement because it writes") from None
        return {"columns": list(df.columns), "rows": [clean(list(r)) for r in df.head(QUERY_ROWS).itertuples(index=False)],
                "truncated": len(df) > QUERY_ROWS, "nRows": len(df)}


EDGE_METHODS = (*(m.value for m in Method), "lesion")
"""Runs of these methods measure edges or lesions; any other run of a model is a study that stores figures."""
_STUDY_PREFIXES = (("lens", "lens"), ("decode", "decode"), ("view", "views"), ("pca", "views"), ("noise", "noise"), ("encode", "encode"),
                   ("gain", "gain"), ("induction", "probe"), ("prevToken", "probe"), ("duplicateToken", "probe"), ("role", "probe"),
                   ("receptive", "probe"), ("top", "sae"), ("meanAct", "sae"), ("maxAct", "sae"), ("frequency", "sae"))


def _study_of(prop: str) -> str | None:
    """The toolbox study that writes a component property (by its name's prefix), None if unknown."""
    return next((study for prefix, study in _STUDY_PREFIXES if prop.startswith(prefix)), None)


def cookbook() -> list[dict[str, Any]]:
    """The Cypher cookbook's statements (title, Cypher, example parameters), as the docs print them."""
    from queries.cookbook import cookbook as entries

    return [{"title": t, "cypher": c, "params": p} for t, c, p in entries()]


def _glob(view: RunView, pattern: str) -> np.ndarray:
    pattern = pattern.strip()
    if not pattern:
        raise ValidationError("an empty search: give an id or a glob such as L5.* or L9.H9")
    regex = re.compile(fnmatch.translate(pattern), re.IGNORECASE)
    return np.fromiter((bool(regex.match(c)) or bool(regex.match(full)) for c, full in zip(view.local, view.ids)), bool, len(view.ids))


def _bounded(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= n <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}, got {n}")
    return n


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in str(text).replace("|", ",").split(",") if v.strip()]
    except ValueError:
        raise ValidationError(f"{name} takes integers separated by commas, got {text!r}") from None


def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return True
    try:
        return not pd.isna(v)
    except (TypeError, ValueError):
        return True


def _parsed(v: Any) -> Any:
    """A stored property as its value: the toolbox keeps tables as JSON text."""
    import json

    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v
