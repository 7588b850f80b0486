"""The connectome in the database: every Cypher statement the atlas sends, as named functions.

This module is the schema's one home. ``ingest`` and ``queries`` call these functions with typed
records (:mod:`atlas.records`) and frames (:mod:`atlas.frames`) and hold no Cypher of their own;
:class:`atlas.store.Store` only carries statements to the server. Functions that change the
database are named ``write_*``, ``delete_*``, ``begin_*`` or ``ensure_*``; every other function
only reads. Values always travel as parameters; the only text formatted into a statement is a
label or relationship type from :mod:`atlas.schema`, a property name from its closed vocabulary
(:data:`atlas.schema.EDGE_PROPERTIES`, :data:`atlas.schema.RUN_CACHES`) or an integer bound.

See ``docs/architecture.md`` for the schema and the life cycle of a run.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlas.bulk import bulk_min_edges, bulk_socket, write_edges_bulk
from atlas.errors import QueryError, RunConflict, RunNotFound, ValidationError
from atlas.frames import strongest_first, validate_edges, validate_nodes
from atlas.ids import component_id, parse_component_id
from atlas.records import CircuitRecord, DictionaryRecord, ModelRecord, RunRecord, check_property_keys
from atlas.schema import (
    COMPONENT_LABEL,
    CONSTRAINTS,
    EDGE_PROPERTIES,
    INDEXES,
    KIND_LABEL,
    RUN_CACHES,
    RUN_EDGE_TYPES,
    ComponentKind,
    RelType,
    RunStatus,
)
from atlas.store import DEFAULT_BATCH, EDGE_BATCH, Store, home_write_lock

__all__ = [
    "fetch_ablation_edges",
    "EDGE_FRAME_COLUMNS",
    "ensure_schema", "fetch_schema", "count_graph",
    "write_model", "check_model_weights", "write_components", "fetch_alignment", "ALIGNMENT_PROPERTIES", "fetch_prompt_scores",
    "clear_probe_properties", "clear_component_properties", "PROBE_PROPERTIES", "write_part_of", "write_dictionaries",
    "begin_run", "set_run_status", "write_run_figures", "fetch_run", "fetch_run_for", "require_run", "fetch_runs",
    "write_edges", "delete_run_edges", "delete_run", "delete_model_edges",
    "fetch_edges", "fetch_edge_columns", "fetch_positional_edge_columns", "fetch_components", "fetch_custom",
    "write_circuit", "fetch_circuit",
    "write_similarity", "write_noise_correlations", "write_hierarchy", "write_alignment", "write_path_cache", "delete_path_caches",
    "match_paths", "fetch_model", "fetch_run_relationships", "fetch_part_of", "EdgeBatch", "write_run",
    "fetch_component_properties", "fetch_dictionaries", "delete_run_safely", "write_edge_columns", "fetch_edge_snapshot", "delete_edge_columns",
    "COLUMNS_TYPES",
]

EDGE_FRAME_COLUMNS = ["componentId_pre", "componentId_post", "kind_pre", "kind_post", "layer_pre", "layer_post", "channel", "score"]


def _clean_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None/NaN values (graph databases store absence, not null) and unwrap numpy scalars."""
    out = {}
    for k, v in props.items():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            continue
        if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
            v = v.item()
        out[k] = v
    check_property_keys(out)
    return out


def _first_int(df: pd.DataFrame, column: str = "n") -> int:
    return int(df[column].iloc[0]) if len(df) else 0


# -- schema ------------------------------------------------------------------------------------
def ensure_schema(store: Store) -> None:
    """Create the unique constraints and, on Neo4j, the relationship indexes of the schema, if missing.

    ArcadeDB gets no index on ``runId`` of relationships (and loses one an older atlas made): there
    every run's edges share one key of a non-unique index, and removing an edge scans that key's
    entries, so deleting a run was quadratic (20,000 edges of a 1.2M-edge database: 15.7 s with
    the index, 1.3 s without), while reads by ``runId`` were no faster with it (2.9 s vs 1.3 s to
    count a run). Whole-run reads there go through the run's packed columns instead.
    """
    for name, label, prop in CONSTRAINTS:
        store.run(f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE n.{prop} IS UNIQUE", write=True)
    arcadedb = store.is_arcadedb
    for name, rel, prop in INDEXES:
        if arcadedb:
            store.run(f"DROP INDEX {name} IF EXISTS", write=True)
        else:
            store.run(f"CREATE INDEX {name} IF NOT EXISTS FOR ()-[e:{rel.value}]-() ON (e.{prop})", write=True)


def fetch_schema(store: Store) -> pd.DataFrame:
    """The indexes the server reports (constraint-backed ones included)."""
    df = store.read("SHOW INDEXES")
    keep = [c for c in ("name", "type", "entityType", "labelsOrTypes", "properties") if c in df.columns]
    return df[keep]


def count_graph(store: Store) -> dict[str, int]:
    """Node and relationship counts, for idempotency checks and ``atlas db status``."""
    nodes = _first_int(store.read("MATCH (n) RETURN count(n) AS n"))
    rels = _first_int(store.read("MATCH ()-[e]->() RETURN count(e) AS n"))
    return {"nodes": nodes, "relationships": rels}


# -- models and components -------------------------------------------------------------------
def write_model(store: Store, model: ModelRecord) -> None:
    """MERGE the ``:Model`` node (keyed by ``modelId``) and set its properties.

    A model keeps its identity: an id already stored with other weights (``weightsHash``) is
    refused, in the same statement that would write it, so two writers cannot both pass a check
    and then overwrite each other. A node stored before hashes were recorded takes the hash.

    Raises:
        ValidationError: the id holds other weights.
    """
    props = _clean_props(model.to_props())
    df = store.run(
        "MERGE (m:Model {modelId: $id}) WITH m, m.weightsHash AS old "
        "WHERE old IS NULL OR $hash IS NULL OR old = $hash SET m += $props RETURN old",
        {"id": model.model_id, "hash": model.weights_hash, "props": props}, write=True,
    )
    if df.empty:
        check_model_weights(store, model.model_id, model.weights_hash)
        raise ValidationError(f"model id {model.model_id!r} is already in the store with other weights")  # pragma: no cover - raced


def check_model_weights(store: Store, model_id: str, weights_hash: str | None) -> None:
    """Refuse (one line) to give ``model_id`` weights other than those it is stored with.

    Raises:
        ValidationError: the id is stored with another weights hash.
    """
    if weights_hash is None:
        return
    df = store.read("MATCH (m:Model {modelId: $id}) RETURN m.weightsHash AS h", {"id": model_id})
    old = None if df.empty else df["h"].iloc[0]
    if isinstance(old, str) and old != weights_hash:
        raise ValidationError(
            f"model id {model_id!r} is already in the store with other weights (weights hash {old[:12]} there, {weights_hash[:12]} "
            "here): give these weights their own id with --model-id NAME, or delete the old model's runs first"
        )


def write_components(store: Store, nodes: pd.DataFrame, *, batch_size: int = DEFAULT_BATCH,
                     progress: Callable[[int], None] | None = None) -> int:
    """MERGE component nodes (one kind label each) from a node frame; extra columns become properties."""
    nodes = validate_nodes(nodes)
    check_property_keys([c for c in nodes.columns if c != "kind"], "component property")
    total = 0
    for kind, group in nodes.groupby("kind", sort=False):
        label = KIND_LABEL[ComponentKind(kind)]
        rows = [{"id": rec["componentId"], "props": _clean_props(rec)} for rec in group.drop(columns=["kind"]).to_dict("records")]
        total += store.write_rows(
            f"UNWIND $rows AS r MERGE (c:{COMPONENT_LABEL}:{label} {{componentId: r.id}}) SET c += r.props",
            rows, batch_size=batch_size, progress=progress,
        )
    return total


PROBE_PROPERTIES = ("prevTokenScore", "prevTokenChance", "duplicateTokenScore", "inductionScore", "topTokens", "topTokenActs", "topContexts",
                    "topPrompts", "probe")
"""What ``atlas probe`` writes on heads and MLPs (cleared before it writes again)."""


def clear_probe_properties(store: Store, model_id: str) -> None:
    """Remove the probe's properties from a model's heads and MLPs (names from :data:`PROBE_PROPERTIES` only)."""
    removes = ", ".join(f"c.{key}" for key in PROBE_PROPERTIES)
    store.run(f"MATCH (c:Component {{modelId: $m}}) WHERE c:Head OR c:Mlp REMOVE {removes}", {"m": model_id}, write=True)


def clear_component_properties(store: Store, model_id: str, keys: Sequence[str]) -> None:
    """Remove properties ``keys`` (checked names) from every component of a model."""
    check_property_keys(list(keys), "component property")
    removes = ", ".join(f"c.{key}" for key in keys)
    store.run(f"MATCH (c:Component {{modelId: $m}}) REMOVE {removes}", {"m": model_id}, write=True)


def write_part_of(store: Store, pairs: Sequence[tuple[str, str]]) -> int:
    """MERGE ``(part)-[:PART_OF]->(whole)`` for (part id, whole id) pairs (idempotent)."""
    return store.write_rows(
        "UNWIND $rows AS r MATCH (p:Component {componentId: r.part}) MATCH (w:Component {componentId: r.whole}) "
        f"MERGE (p)-[:{RelType.PART_OF.value}]->(w)",
        [{"part": a, "whole": b} for a, b in pairs],
    )


def write_dictionaries(store: Store, dictionaries: Sequence[DictionaryRecord]) -> int:
    """MERGE ``:Dictionary`` nodes (keyed by ``dictionaryId``) with their figures."""
    rows = [_clean_props(d.to_props()) for d in dictionaries]
    return store.write_rows("UNWIND $rows AS r MERGE (d:Dictionary {dictionaryId: r.dictionaryId}) SET d += r", rows)


def fetch_components(store: Store, model_id: str, ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Every component of a model with its properties (one column per property); ``ids``: only
    these components (a large run's analyses touch a fraction of the model's neurons, and each
    neuron carries its receptive field)."""
    wanted = None if ids is None else sorted(set(ids))
    df = store.read(
        "MATCH (c:Component {modelId: $model}) WHERE $ids IS NULL OR c.componentId IN $ids RETURN c.componentId AS componentId, "
        "[l IN labels(c) WHERE l <> 'Component'][0] AS kind, properties(c) AS props ORDER BY c.layer, c.componentId",
        {"model": model_id, "ids": wanted},
    )
    if df.empty:
        return df
    props = pd.json_normalize(df["props"].tolist())
    props = props.drop(columns=[c for c in ("componentId",) if c in props.columns])
    return pd.concat([df.drop(columns=["props"]), props], axis=1)


# -- runs --------------------------------------------------------------------------------------
WRITER_LEASE_S = 600.0
"""How long a writer on another host holds a run without finishing it (same-host writers are
checked by their process id instead)."""
_WRITER_KEYS = ("writerToken", "writerPid", "writerHost", "writerSince")


def _writer_alive(props: Mapping[str, Any]) -> bool:
    """Whether the process that claimed a ``writing`` run may still be writing it."""
    from atlas.server import pid_alive

    if not props.get("writerToken"):
        return False
    pid, host = props.get("writerPid"), props.get("writerHost")
    if host == socket.gethostname() and isinstance(pid, int):
        return pid > 0 and pid_alive(pid)
    since = props.get("writerSince")
    return isinstance(since, (int, float)) and time.time() - since < WRITER_LEASE_S


def begin_run(store: Store, run: RunRecord) -> str:
    """Claim the run for this process and MERGE the ``:Run`` (status ``writing``) and its
    ``OF_MODEL`` link; returns the claim's token.

    One writer per run: a run whose writer is still alive (same host: its process runs; another
    host: it claimed less than :data:`WRITER_LEASE_S` ago) is refused, and a crashed writer's run
    is taken over. Of two processes that claim at the same moment exactly one wins: each CREATEs a
    ``(:RunClaim {claimKey: "<runId>|<the writer token it saw>"})`` and the unique constraint on
    ``claimKey`` lets one through (a compare-and-set on the run's own properties is not enough:
    ArcadeDB lets two such updates both commit). Claims go when the run completes or fails.

    Raises:
        RunConflict: another process writes (or has just completed) the run.
    """
    current = store.read("MATCH (r:Run {runId: $id}) RETURN properties(r) AS p", {"id": run.run_id})
    observed = ""
    if len(current):
        props = dict(current["p"].iloc[0])
        if props.get("status") == RunStatus.COMPLETE.value:
            raise RunConflict(f"run {run.run_id!r} was completed by another process meanwhile; nothing changed")
        if props.get("status") == RunStatus.WRITING.value and _writer_alive(props):
            raise RunConflict(f"run {run.run_id!r} is being written by process {props.get('writerPid')} on {props.get('writerHost')}; "
                              "wait for it to finish, or choose another --run-id")
        observed = str(props.get("writerToken") or "")
    token = uuid.uuid4().hex
    try:
        store.run("CREATE (:RunClaim {claimKey: $key, runId: $id, token: $token})",
                  {"key": f"{run.run_id}|{observed}", "id": run.run_id, "token": token}, write=True)
    except QueryError as exc:  # the unique claimKey constraint: another process claimed first
        winner = store.read("MATCH (r:Run {runId: $id}) RETURN r.writerPid AS pid, r.writerHost AS host", {"id": run.run_id})
        who = (f" (pid {winner['pid'].iloc[0]}, {winner['host'].iloc[0]})" if len(winner) and winner["pid"].notna().iloc[0] else "")
        raise RunConflict(f"another process is writing run {run.run_id!r}{who}: it claimed the run at the same moment; "
                          "wait for it to finish, or choose another --run-id") from exc
    claim = {"writerToken": token, "writerPid": os.getpid(), "writerHost": socket.gethostname(), "writerSince": time.time()}
    props = _clean_props({**run.to_props(), "status": RunStatus.WRITING.value, **claim})
    store.run(
        "MERGE (r:Run {runId: $id}) SET r += $props "
        f"WITH r MATCH (m:Model {{modelId: $modelId}}) MERGE (r)-[:{RelType.OF_MODEL.value}]->(m)",
        {"id": run.run_id, "props": props, "modelId": run.model_id}, write=True,
    )
    return token


def set_run_status(store: Store, run_id: str, status: RunStatus, *, n_edges: int | None = None, n_nodes: int | None = None) -> None:
    """Move a run along its life cycle (``complete`` is set last, with its counts); a finished
    (complete or failed) run is released by its writer."""
    release = " REMOVE " + ", ".join(f"r.{k}" for k in _WRITER_KEYS) if status is not RunStatus.WRITING else ""
    store.run("MATCH (r:Run {runId: $id}) SET r += $props" + release,
              {"id": run_id, "props": _clean_props({"status": status.value, "nEdges": n_edges, "nNodes": n_nodes})}, write=True)
    if release:
        store.run("MATCH (c:RunClaim {runId: $id}) DELETE c", {"id": run_id}, write=True)


def write_run_figures(store: Store, run_id: str, figures: Mapping[str, Any]) -> None:
    """Record figures derived from a run on its ``:Run`` node (verification, evaluation)."""
    store.run("MATCH (r:Run {runId: $id}) SET r += $props", {"id": run_id, "props": _clean_props(figures)}, write=True)


def fetch_run(store: Store, run_id: str) -> RunRecord | None:
    """The run of this id, or None."""
    df = store.read("MATCH (r:Run {runId: $id}) RETURN properties(r) AS p", {"id": run_id})
    return None if df.empty else RunRecord.from_props(dict(df["p"].iloc[0]))


def fetch_run_for(store: Store, run_id: str, config_json: str | None, *, hint: str = "choose another --run-id") -> RunRecord | None:
    """The run of this id if it was made with this configuration, None if there is none;
    RunConflict when the id is taken by another configuration (for ingest, lesions and import alike)."""
    existing = fetch_run(store, run_id)
    if existing is not None and existing.config_json != config_json:
        raise RunConflict(f"run {run_id!r} exists with a different configuration; {hint}")
    return existing


RUNS_COLUMNS = ("runId", "modelId", "task", "method", "metric", "granularity", "status", "nPrompts", "nEdges", "allZero", "createdAt")
"""The columns of :func:`fetch_runs` (also when there is no run)."""


def fetch_runs(store: Store, model_id: str | None = None) -> pd.DataFrame:
    """One row per run: ``runId, modelId, task, method, metric, granularity, status, nPrompts, nEdges, allZero, createdAt``;
    ``status`` is the run's own, but ``interrupted`` for a run left ``writing`` by a process that is gone
    (``allZero``: every edge scored exactly 0, i.e. the metric never moved; such runs are flagged, not hidden)."""
    df = store.read(
        "MATCH (r:Run) WHERE $model IS NULL OR r.modelId = $model "
        "RETURN r.runId AS runId, r.modelId AS modelId, r.task AS task, r.method AS method, r.metric AS metric, "
        "coalesce(r.granularity, 'head') AS granularity, "
        "r.status AS status, r.nPrompts AS nPrompts, r.nEdges AS nEdges, coalesce(r.allZero, false) AS allZero, "
        "r.createdAt AS createdAt, r.writerToken AS writerToken, r.writerPid AS writerPid, r.writerHost AS writerHost, "
        "r.writerSince AS writerSince "
        "ORDER BY r.createdAt, r.runId",
        {"model": model_id},
    )
    if df.empty:
        return pd.DataFrame(columns=list(RUNS_COLUMNS))
    # a run left 'writing' by a process that is gone is not being written: say so
    dead = [s == RunStatus.WRITING.value and not _writer_alive({k: _none_if_nan(r[k]) for k in _WRITER_KEYS})
            for s, (_, r) in zip(df["status"], df.iterrows())]
    df.loc[dead, "status"] = "interrupted"
    return df.drop(columns=list(_WRITER_KEYS))


def _none_if_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def require_run(store: Store, run_id: str) -> RunRecord:
    """The run of this id; RunNotFound (listing what exists) when absent."""
    run = fetch_run(store, run_id)
    if run is None:
        runs = fetch_runs(store)
        known = runs["runId"].tolist() if "runId" in runs else []  # an empty database returns no columns
        hint = f"; known runs: {', '.join(known[:5])}" + (" ..." if len(known) > 5 else "") if known else "; the database has no runs yet"
        raise RunNotFound(f"no run {run_id!r}{hint}")
    return run


# -- edges -------------------------------------------------------------------------------------
def _value_property(rel_type: RelType) -> str:
    return "effect" if rel_type is RelType.ABLATION else "score"


def write_edges(
    store: Store,
    edges: pd.DataFrame,
    run_id: str | None,
    *,
    rel_type: RelType = RelType.ATTRIBUTION,
    props: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """CREATE relationships from an edge frame. Both ends must exist as components.

    Edges go in transactions of ``batch_size`` (default ``$ATLAS_EDGE_BATCH``, else 50,000).
    Each batch travels as integer codes: the component ids it touches once, then per edge the
    positions of its two ends in that list, and string columns as codes into their distinct
    values. The server looks each component up once per batch instead of twice per edge, and
    the driver packs small integers instead of long strings (1.1M edges of a GPT-2-shaped
    neuron run: 34k edges/s, was 21k with the ids per edge).

    The frame's ``score`` is stored as ``score`` on ``ATTRIBUTION`` and ``COMPOSITION`` and as
    ``effect`` on ``ABLATION``; extra columns and ``props`` (the same for every row) become
    properties, named from :data:`atlas.schema.EDGE_PROPERTIES` only; ``run_id`` None stores none
    (the structural ``COMPOSITION`` edges).

    On the embedded server, a write of at least ``ATLAS_BULK_MIN`` edges (default 5,000) goes
    through the server's bulk socket into ArcadeDB's in-process batch API instead (:mod:`atlas.bulk`;
    about twice Bolt's rate, the same edges and properties); ``ATLAS_BULK=0`` keeps everything on Bolt.

    Not idempotent by itself (CREATE is ~30x faster than MERGE on relationships): callers
    delete what they rewrite, as ``ingest.jobs.run`` does for unfinished runs.

    Raises:
        ValidationError: a component an edge names is not in the database (nothing of that
            batch is written).
    """
    edges = validate_edges(edges)
    value = _value_property(rel_type)
    extra = [c for c in edges.columns if c not in ("componentId_pre", "componentId_post")]
    names = [value if c == "score" else c for c in extra] + list(props or {})
    unknown = sorted(set(names) - EDGE_PROPERTIES)
    if unknown:
        raise ValidationError(f"edge properties {unknown} are not in the schema's vocabulary {sorted(EDGE_PROPERTIES)}")
    n = len(edges)
    path = bulk_socket(store.settings) if n >= bulk_min_edges() and not store.read_only else None
    if path is not None:  # the embedded server's in-process batch API (see atlas.bulk)
        columns = {(value if c == "score" else c): edges[c] for c in extra}
        fixed = {**({"runId": run_id} if run_id is not None else {}), **dict(props or {})}
        with home_write_lock(store.settings, exclusive=True):  # no Bolt write of this home meanwhile
            wrote = write_edges_bulk(path, rel_type.value, edges["componentId_pre"], edges["componentId_post"], columns, fixed, progress)
        if wrote is not None:
            return n
    ends, ids = pd.factorize(pd.concat([edges["componentId_pre"], edges["componentId_post"]], ignore_index=True))
    pre, post = ends[:n], ends[n:]
    coded: dict[str, tuple[np.ndarray, list[Any]]] = {}  # string columns: codes + distinct values
    plain: dict[str, list[Any]] = {}
    assigns = []
    for i, col in enumerate(extra):
        key = value if col == "score" else col
        values = edges[col]
        if pd.api.types.is_string_dtype(values):  # str, string, category, or objects that are all strings (or missing)
            codes, uniques = pd.factorize(values, use_na_sentinel=False)  # a missing value is a code too: stored as no property
            coded[f"c{i}"] = (codes, [None if pd.isna(v) else v for v in uniques.tolist()])
            assigns.append(f"{key}: $d{i}[$c{i}[i]]")
        else:
            plain[f"c{i}"] = [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]
            assigns.append(f"{key}: $c{i}[i]")
    assigns += [f"{k}: $props.{k}" for k in (props or {})]
    if run_id is not None:
        assigns.insert(0, "runId: $runId")
    cypher = (
        "UNWIND range(0, size($ids) - 1) AS j MATCH (n:Component {componentId: $ids[j]}) "
        "WITH j, n ORDER BY j WITH collect(n) AS nodes WHERE size(nodes) = size($ids) "
        "UNWIND range(0, size($a) - 1) AS i WITH nodes[$a[i]] AS x, nodes[$b[i]] AS y, i "
        f"CREATE (x)-[e:{rel_type.value} {{{', '.join(assigns)}}}]->(y) RETURN count(e) AS n"
    )
    size = batch_size or _edge_batch()
    fixed = {"runId": run_id, "props": dict(props or {})}

    def batches() -> Iterator[tuple[int, dict[str, Any]]]:
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            used, local = np.unique(np.concatenate([pre[lo:hi], post[lo:hi]]), return_inverse=True)
            params = {**fixed, "ids": ids[used].tolist(), "a": local[: hi - lo].tolist(), "b": local[hi - lo :].tolist()}
            for key, (codes, uniques) in coded.items():
                params[key] = codes[lo:hi].tolist()
                params["d" + key[1:]] = uniques
            for key, column in plain.items():
                params[key] = column[lo:hi]
            yield hi - lo, params

    written = store.write_batches(cypher, batches(), progress=progress)
    sizes = [min(size, n - lo) for lo in range(0, n, size)]
    short = [k for k, (got, want) in enumerate(zip(written, sizes, strict=True)) if got != want]
    if short:
        missing = _missing_components(store, ids[np.unique(np.concatenate([pre, post]))].tolist())
        raise ValidationError(f"edges name components that are not in the database: {missing[:5]}"
                              + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
                              + f"; {sum(written)} of {n} edges were written, write the components first")
    return n


def _missing_components(store: Store, ids: list[str]) -> list[str]:
    found = store.read("UNWIND $ids AS cid MATCH (c:Component {componentId: cid}) RETURN c.componentId AS id", {"ids": ids})
    have = set(found["id"]) if "id" in found else set()
    return [c for c in ids if c not in have]


def _edge_batch() -> int:
    raw = os.environ.get("ATLAS_EDGE_BATCH", str(EDGE_BATCH))
    if not raw.isdigit() or int(raw) < 1:
        raise ValidationError(f"ATLAS_EDGE_BATCH must be a positive integer, got {raw!r}")
    return int(raw)


def delete_run_edges(store: Store, run_id: str, *, rel_type: RelType = RelType.ATTRIBUTION, batch_size: int = 100_000) -> int:
    """Delete a run's relationships of one type, in batches; returns how many went.

    On ArcadeDB each batch scans the type's relationships (there is no ``runId`` index there, see
    :func:`ensure_schema`), so batches are large: 1.1M edges of a 2.2M-edge database go in 60 s.
    """
    total = 0
    while True:
        n = _first_int(store.run(
            f"MATCH ()-[e:{rel_type.value} {{runId: $runId}}]->() WITH e LIMIT $n DELETE e RETURN count(*) AS n",
            {"runId": run_id, "n": batch_size}, write=True,
        ))
        total += n
        if n < batch_size:
            return total


def delete_run(store: Store, run_id: str) -> int:
    """Delete a run: its attribution and ablation edges, its hierarchy links and its ``:Run`` node
    (components, shared by every run of the model, stay). Returns the edges deleted."""
    n = sum(delete_run_edges(store, run_id, rel_type=t) for t in (*RUN_EDGE_TYPES, RelType.NOISE_CORRELATED))
    delete_edge_columns(store, run_id)
    store.run("MATCH (r:Run {runId: $id}) DETACH DELETE r", {"id": run_id}, write=True)
    store.run("MATCH (c:RunClaim {runId: $id}) DELETE c", {"id": run_id}, write=True)
    return n


def delete_run_safely(store: Store, run_id: str) -> int | None:
    """Delete a run through its life cycle (``atlas runs --delete``): refused while a live writer holds
    it; else its status becomes ``deleting`` first (it is no longer whole, and every reader says so),
    then its edges go in batches, its circuits, and its ``:Run`` node last. Interrupted, the run stays
    ``deleting`` and deleting it again finishes. Returns the edges deleted, None when there was no run
    (deleting twice changes nothing).

    Raises:
        RunConflict: a live process is writing the run.
    """
    current = store.read("MATCH (r:Run {runId: $id}) RETURN properties(r) AS p", {"id": run_id})
    if current.empty:
        return None
    props = dict(current["p"].iloc[0])
    if props.get("status") == RunStatus.WRITING.value and _writer_alive(props):
        raise RunConflict(f"run {run_id!r} is being written by process {props.get('writerPid')} on {props.get('writerHost')}; "
                          "delete it once that process has finished or been stopped")
    store.run("MATCH (r:Run {runId: $id}) SET r.status = $status, r.deletingSince = $since",
              {"id": run_id, "status": RunStatus.DELETING.value, "since": time.time()}, write=True)
    n = sum(delete_run_edges(store, run_id, rel_type=t) for t in (*RUN_EDGE_TYPES, RelType.NOISE_CORRELATED))
    delete_edge_columns(store, run_id)
    store.run("MATCH (c:Circuit {runId: $id}) DETACH DELETE c", {"id": run_id}, write=True)
    store.run("MATCH (r:Run {runId: $id}) DETACH DELETE r", {"id": run_id}, write=True)
    store.run("MATCH (c:RunClaim {runId: $id}) DELETE c", {"id": run_id}, write=True)
    return n


def delete_model_edges(store: Store, model_id: str, rel_type: RelType) -> int:
    """Delete a model's relationships of one type (for task-free edges such as COMPOSITION)."""
    return _first_int(store.run(
        f"MATCH (a:Component {{modelId: $model}})-[e:{rel_type.value}]->() DELETE e RETURN count(*) AS n", {"model": model_id}, write=True,
    ))


# -- columnar copies of a run's edges ----------------------------------------------------------
COLUMNS_TYPES: tuple[RelType, ...] = (RelType.ATTRIBUTION, RelType.ATTRIBUTION_AT)
"""The relationship types whose edges a run also keeps as columns (:func:`write_edge_columns`)."""
_COLUMNS_PART = 262_144
_COLUMNS_MAX_PARTS = 64
_INT_COLUMNS = ("srcPos", "dstPos")


def _columns_key(run_id: str, rel_type: RelType, part: int) -> str:
    return f"{run_id}|{rel_type.value}|{part}"


def delete_edge_columns(store: Store, run_id: str) -> None:
    """Delete a run's columnar copies (every type)."""
    store.run("MATCH (s:EdgeColumns {runId: $id}) DELETE s", {"id": run_id}, write=True)


def write_edge_columns(store: Store, run_id: str, rel_type: RelType, edges: pd.DataFrame, nodes: pd.DataFrame) -> int:
    """Keep a run's edges of one type also as packed columns on ``:EdgeColumns`` nodes, so whole-run
    reads fetch a few binary properties instead of a million rows (1M edges: ~17 MB in 4 parts).

    Part 0 holds the dictionary (component ids with their kind label and layer, channel names);
    every part holds int32 codes of both ends, int8 channel codes, float64 scores (and int32
    ``srcPos``/``dstPos``), little-endian. Written by :func:`write_run` before the run is complete,
    deleted with the run; a run is immutable once complete, so the copy stays exact. Returns the
    parts written (0 when an end is missing from ``nodes``: reads then use the edges themselves).
    """
    if rel_type not in COLUMNS_TYPES:
        raise ValidationError(f"columnar copies are kept for {[t.value for t in COLUMNS_TYPES]}, not {rel_type.value}")
    n = len(edges)
    codes, ids = pd.factorize(pd.concat([edges["componentId_pre"], edges["componentId_post"]], ignore_index=True))
    info = nodes.drop_duplicates("componentId").set_index("componentId")
    if not pd.Index(ids).isin(info.index).all():
        return 0
    kinds = [KIND_LABEL[ComponentKind(k)] for k in info.loc[ids, "kind"]]
    layers = [None if pd.isna(v) else int(v) for v in info.loc[ids, "layer"]]
    channel_codes, channels = pd.factorize(edges["channel"])
    pre, post = codes[:n].astype("<i4"), codes[n:].astype("<i4")
    score = edges["score"].to_numpy(dtype="<f8")
    extra = {c: edges[c].to_numpy(dtype="<i4") for c in _INT_COLUMNS if c in edges.columns}
    size = max(_COLUMNS_PART, -(-n // _COLUMNS_MAX_PARTS))
    n_parts = max(1, -(-n // size))
    for part in range(n_parts):
        a, b = part * size, min(n, (part + 1) * size)
        props: dict[str, Any] = {
            "columnsKey": _columns_key(run_id, rel_type, part), "runId": run_id, "relType": rel_type.value, "part": part,
            "nParts": n_parts, "n": n, "pre": pre[a:b].tobytes(), "post": post[a:b].tobytes(),
            "channel": channel_codes[a:b].astype("i1").tobytes(), "score": score[a:b].tobytes(),
            **{c: v[a:b].tobytes() for c, v in extra.items()},
        }
        if part == 0:
            props.update({"ids": [str(i) for i in ids], "kinds": kinds, "layers": layers, "channels": [str(c) for c in channels]})
        store.run("MERGE (s:EdgeColumns {columnsKey: $key}) SET s += $props", {"key": props["columnsKey"], "props": props}, write=True)
    return n_parts


def _strings(values: list[str], codes: np.ndarray) -> pd.Series:
    """``values[codes]`` as a string column, decoded by Arrow (3x faster than through Python objects)."""
    import pyarrow as pa

    return pd.Series(pd.array(pa.array(values, type=pa.string()).take(pa.array(codes)), dtype="str"))


@dataclass(frozen=True)
class _Coded:
    """A run's packed columns as read: codes into the part-0 tables (``ids``, ``kinds``, ``layers``,
    ``channels``), scores and any position columns, all in the order written."""

    head: dict[str, Any]
    pre: np.ndarray
    post: np.ndarray
    channel: np.ndarray
    score: np.ndarray
    extra: dict[str, np.ndarray]

    def kind_is(self, codes: np.ndarray, kind: str) -> np.ndarray:
        """Whether each coded component has label ``kind`` (compared once per component)."""
        return (np.asarray(self.head["kinds"], dtype=object) == kind)[codes]

    def frame(self, rows: np.ndarray | None = None, *, categorical: bool = False) -> pd.DataFrame:
        """The edge frame of ``rows`` (indices, in that order; None: every edge)."""
        def pick(values: np.ndarray) -> np.ndarray:
            return values if rows is None else values[rows]

        head, pre, post, channel, score = self.head, pick(self.pre), pick(self.post), pick(self.channel), pick(self.score)
        if categorical:
            return pd.DataFrame({
                "componentId_pre": pd.Categorical.from_codes(pre, categories=head["ids"]),
                "componentId_post": pd.Categorical.from_codes(post, categories=head["ids"]),
                "channel": pd.Categorical.from_codes(channel, categories=head["channels"]),
                "score": score,
            })
        layers = np.array(head["layers"], dtype=object if None in head["layers"] else "int64")
        frame = pd.DataFrame({
            "componentId_pre": _strings(head["ids"], pre), "componentId_post": _strings(head["ids"], post),
            "kind_pre": _strings(head["kinds"], pre), "kind_post": _strings(head["kinds"], post),
            "layer_pre": layers[pre], "layer_post": layers[post],
            "channel": _strings(head["channels"], channel), "score": score,
        })
        for name, values in self.extra.items():
            frame[name] = pick(values).astype("int64")
        return frame


def _fetch_coded(store: Store, run_id: str, rel_type: RelType) -> _Coded | None:
    """A run's packed columns of one edge type, undecoded; None when the run has no whole copy."""
    if rel_type not in COLUMNS_TYPES:
        return None
    keys = [_columns_key(run_id, rel_type, i) for i in range(_COLUMNS_MAX_PARTS)]
    rows = store.read("MATCH (s:EdgeColumns) WHERE s.columnsKey IN $keys RETURN properties(s) AS p", {"keys": keys})
    parts = sorted((dict(p) for p in rows["p"]), key=lambda p: p["part"]) if len(rows) else []
    if not parts or parts[0]["part"] != 0 or len(parts) != parts[0]["nParts"] or [p["part"] for p in parts] != list(range(len(parts))):
        return None

    def column(name: str, dtype: str) -> np.ndarray:
        return np.concatenate([np.frombuffer(bytes(p[name]), dtype=dtype) for p in parts])

    head = parts[0]
    pre, post = column("pre", "<i4"), column("post", "<i4")
    if len(pre) != head["n"]:
        return None
    return _Coded(head, pre, post, column("channel", "i1"), column("score", "<f8"),
                  {name: column(name, "<i4") for name in _INT_COLUMNS if name in head})


def fetch_edge_snapshot(store: Store, run_id: str, rel_type: RelType = RelType.ATTRIBUTION, *,
                        categorical: bool = False, min_weight: float = 0.0) -> pd.DataFrame | None:
    """A run's edges of one type from their columnar copy, as the edge frame's columns (plus
    ``srcPos``/``dstPos`` where kept), in the order written; None when the run has no whole copy.

    ``categorical``: the four frame columns only, component ids and channels as pandas
    categoricals straight from the stored codes (no string per row: 1M edges in a third of the
    time), for whole-run analyses that factorize them anyway. ``min_weight``: only edges with
    ``|score| >= min_weight``, chosen on the codes before any string is decoded."""
    coded = _fetch_coded(store, run_id, rel_type)
    if coded is None:
        return None
    rows = np.flatnonzero(np.abs(coded.score) >= min_weight) if min_weight > 0 else None
    return coded.frame(rows, categorical=categorical)


def fetch_edges(
    store: Store,
    run_id: str,
    *,
    top: int | None = None,
    min_weight: float = 0.0,
    kind_pre: str | None = None,
    kind_post: str | None = None,
    rel_type: RelType = RelType.ATTRIBUTION,
) -> pd.DataFrame:
    """Edges of a run with both ends' kinds and layers, strongest ``|score|`` first.

    Args:
        run_id: The run.
        top: Keep the ``top`` strongest edges (after filtering); None keeps all.
        min_weight: Keep edges with ``|score| >= min_weight``.
        kind_pre, kind_post: Restrict ends by label (``Head``, ``Mlp``, ``Embed``, ``Logit``, ...).
        rel_type: ``ATTRIBUTION`` (default) or ``ABLATION`` (its ``effect`` comes back as ``score``).

    Example:
        >>> fetch_edges(store, run_id, top=5, kind_post="Logit")  # doctest: +SKIP
    """
    require_run(store, run_id)
    if top is not None and top < 1:
        raise ValidationError(f"top must be at least 1, got {top}")
    if min_weight < 0:
        raise ValidationError(f"min_weight must be non-negative, got {min_weight}")
    coded = _fetch_coded(store, run_id, rel_type) if rel_type is RelType.ATTRIBUTION else None
    if coded is not None:  # the run's columnar copy: filtered, sorted and cut here on the codes, then decoded
        strength = np.abs(coded.score)
        keep = strength >= min_weight
        if kind_pre is not None and kind_pre != COMPONENT_LABEL:
            keep &= coded.kind_is(coded.pre, kind_pre)
        if kind_post is not None and kind_post != COMPONENT_LABEL:
            keep &= coded.kind_is(coded.post, kind_post)
        return coded.frame(strongest_first(strength, np.flatnonzero(keep), top))[EDGE_FRAME_COLUMNS]
    score = _value_property(rel_type)
    df = store.read(
        f"MATCH (a:Component)-[e:{rel_type.value} {{runId: $runId}}]->(b:Component) "
        f"WHERE abs(e.{score}) >= $minWeight "
        "AND ($kindPre IS NULL OR $kindPre IN labels(a)) AND ($kindPost IS NULL OR $kindPost IN labels(b)) "
        "RETURN a.componentId AS componentId_pre, b.componentId AS componentId_post, "
        "[l IN labels(a) WHERE l <> 'Component'][0] AS kind_pre, [l IN labels(b) WHERE l <> 'Component'][0] AS kind_post, "
        f"a.layer AS layer_pre, b.layer AS layer_post, e.channel AS channel, e.{score} AS score"
        # ORDER BY only with LIMIT: sorting a whole 1M-edge run in the server blows its query heap budget
        + (f" ORDER BY abs(e.{score}) DESC LIMIT $top" if top is not None else ""),
        {"runId": run_id, "minWeight": float(min_weight), "kindPre": kind_pre, "kindPost": kind_post, "top": top},
    )
    if df.empty:
        return pd.DataFrame(columns=EDGE_FRAME_COLUMNS)
    if top is None:
        df = df.reindex(df["score"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    return df


def fetch_ablation_edges(store: Store, run_id: str) -> pd.DataFrame:
    """A lesion run's ``ABLATION`` edges as the four frame columns (``score`` holds each edge's ``effect``)."""
    require_run(store, run_id)
    rows = store.read("MATCH (a:Component)-[e:ABLATION {runId: $run}]->(b:Component) "
                      "RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, e.effect AS score", {"run": run_id})
    return pd.DataFrame({"componentId_pre": rows["pre"] if len(rows) else [], "componentId_post": rows["post"] if len(rows) else [],
                         "channel": rows["channel"] if len(rows) else [], "score": rows["score"].astype(float) if len(rows) else []})


def fetch_edge_columns(store: Store, run_id: str, min_weight: float = 0.0, *, categorical: bool = False) -> pd.DataFrame:
    """A run's edges as the four frame columns only: from the run's packed columns, else fetched as
    one row of lists (2.4x faster than row by row over Bolt), else row by row when the server
    refuses to hold the lists (its query heap budget). ``categorical``: ids and channels as
    categoricals where the packed columns exist (see :func:`fetch_edge_snapshot`)."""
    require_run(store, run_id)
    snapshot = fetch_edge_snapshot(store, run_id, categorical=categorical, min_weight=min_weight)
    if snapshot is not None:
        return snapshot[["componentId_pre", "componentId_post", "channel", "score"]]
    match = "MATCH (a:Component)-[e:ATTRIBUTION {runId: $run}]->(b:Component) WHERE abs(e.score) >= $w "
    params = {"run": run_id, "w": float(min_weight)}
    try:
        row = store.read(match + "RETURN collect(a.componentId) AS pre, collect(b.componentId) AS post, "
                         "collect(e.channel) AS channel, collect(e.score) AS score", params)
        data = {k: row[k].iloc[0] for k in ("pre", "post", "channel", "score")} if len(row) else None
    except QueryError:
        data = None
    if data is None:
        rows = store.read(match + "RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, e.score AS score", params)
        data = {k: rows[k].tolist() for k in ("pre", "post", "channel", "score")}
    return pd.DataFrame({"componentId_pre": data["pre"], "componentId_post": data["post"],
                         "channel": data["channel"], "score": pd.Series(data["score"], dtype=float)})


def fetch_positional_edge_columns(store: Store, run_id: str, min_weight: float = 0.0) -> pd.DataFrame:
    """A per-position run's ``ATTRIBUTION_AT`` edges as frame columns plus ``srcPos``/``dstPos``,
    fetched as one row of lists (as :func:`fetch_edge_columns`).

    Raises:
        ValidationError: the run was not ingested with ``--per-position``.
    """
    run = require_run(store, run_id)
    if not run.details.get("perPosition"):
        raise ValidationError(f"run {run_id} has no per-position edges: ingest it with --per-position")
    snapshot = fetch_edge_snapshot(store, run_id, RelType.ATTRIBUTION_AT, min_weight=min_weight)
    if snapshot is not None:
        return snapshot[["componentId_pre", "componentId_post", "channel", "score", "srcPos", "dstPos"]]
    match = f"MATCH (a:Component)-[e:{RelType.ATTRIBUTION_AT.value} {{runId: $run}}]->(b:Component) WHERE abs(e.score) >= $w "
    params = {"run": run_id, "w": float(min_weight)}
    keys = ("pre", "post", "channel", "score", "src", "dst")
    try:
        row = store.read(match + "RETURN collect(a.componentId) AS pre, collect(b.componentId) AS post, collect(e.channel) AS channel, "
                         "collect(e.score) AS score, collect(e.srcPos) AS src, collect(e.dstPos) AS dst", params)
        data = {k: row[k].iloc[0] for k in keys} if len(row) else None
    except QueryError:
        data = None
    if data is None:
        rows = store.read(match + "RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, e.score AS score, "
                          "e.srcPos AS src, e.dstPos AS dst", params)
        data = {k: rows[k].tolist() for k in keys}
    return pd.DataFrame({"componentId_pre": data["pre"], "componentId_post": data["post"], "channel": data["channel"],
                         "score": pd.Series(data["score"], dtype=float), "srcPos": pd.Series(data["src"], dtype="int64"),
                         "dstPos": pd.Series(data["dst"], dtype="int64")})


def fetch_prompt_scores(store: Store, run_id: str) -> pd.DataFrame:
    """A run's edges with their per-prompt scores (``promptScores``; runs made with ``--per-prompt``)."""
    require_run(store, run_id)
    return store.read(
        "MATCH (a:Component)-[e:ATTRIBUTION {runId: $run}]->(b:Component) WHERE e.promptScores IS NOT NULL "
        "RETURN a.componentId AS componentId_pre, b.componentId AS componentId_post, e.channel AS channel, e.score AS score, "
        "e.promptScores AS promptScores",
        {"run": run_id},
    )


def fetch_custom(store: Store, cypher: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run any read-only Cypher (values as ``$parameters``) and return its rows: the escape hatch."""
    return store.read(cypher, dict(params or {}))


# -- circuits ----------------------------------------------------------------------------------
def write_circuit(store: Store, circuit: CircuitRecord) -> None:
    """MERGE a ``:Circuit`` and replace its ``MEMBER_OF {role}`` links."""
    ensure_schema(store)
    store.run(
        "MERGE (c:Circuit {circuitId: $id}) SET c += $props "
        f"WITH c OPTIONAL MATCH (:Component)-[m:{RelType.MEMBER_OF.value}]->(c) DELETE m",
        {"id": circuit.circuit_id, "props": _clean_props(circuit.to_props())},
        write=True,
    )
    store.write_rows(
        "UNWIND $rows AS r MATCH (c:Circuit {circuitId: $id}) MATCH (n:Component {componentId: r.id}) "
        f"CREATE (n)-[:{RelType.MEMBER_OF.value} {{role: r.role}}]->(c)",
        [{"id": k, "role": v} for k, v in circuit.members.items()],
        params={"id": circuit.circuit_id},
    )


def fetch_circuit(store: Store, circuit_id: str) -> CircuitRecord | None:
    """A saved circuit with its members, or None."""
    df = store.read(
        f"MATCH (c:Circuit {{circuitId: $id}}) OPTIONAL MATCH (n:Component)-[m:{RelType.MEMBER_OF.value}]->(c) "
        "RETURN properties(c) AS p, collect(n.componentId) AS ids, collect(m.role) AS roles",
        {"id": circuit_id},
    )
    if df.empty:
        return None
    row = df.iloc[0]
    return CircuitRecord.from_props(dict(row["p"]), dict(zip(row["ids"], row["roles"])))


# -- derived results ---------------------------------------------------------------------------
def write_similarity(store: Store, pairs: pd.DataFrame, probe: str) -> int:
    """(Re)write ``(a)-[:SIMILAR_TO {cka, cca, rsa, probe}]->(b)`` for the frame's ``a, b, cka, cca, rsa`` rows."""
    rel = RelType.SIMILAR_TO.value
    store.run(f"MATCH (a:Component)-[e:{rel}]->(b:Component) WHERE a.componentId IN $ids DELETE e",
              {"ids": sorted(set(pairs["a"]) | set(pairs["b"]))}, write=True)
    return store.write_rows(
        "UNWIND $rows AS r MATCH (a:Component {componentId: r.a}) MATCH (b:Component {componentId: r.b}) "
        f"CREATE (a)-[:{rel} {{cka: r.cka, cca: r.cca, rsa: r.rsa, probe: $probe}}]->(b)",
        pairs[["a", "b", "cka", "cca", "rsa"]].to_dict("records"), params={"probe": probe},
    )


def write_noise_correlations(store: Store, pairs: pd.DataFrame, run_id: str, sigma: float, probe: str) -> int:
    """(Re)write a noise run's ``(a)-[:NOISE_CORRELATED {r, signal, rNull, z, sigma, probe, runId}]->(b)``
    from an ``a, b, r, signal, rNull, z`` frame (the run's previous ones go first)."""
    rel = RelType.NOISE_CORRELATED.value
    store.run(f"MATCH (:Component)-[e:{rel} {{runId: $run}}]->(:Component) DELETE e", {"run": run_id}, write=True)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in pairs[["a", "b", "r", "signal", "rNull", "z"]].to_dict("records")]
    return store.write_rows(
        "UNWIND $rows AS r MATCH (a:Component {componentId: r.a}) MATCH (b:Component {componentId: r.b}) "
        f"CREATE (a)-[:{rel} {{r: r.r, signal: r.signal, rNull: r.rNull, z: r.z, sigma: $sigma, probe: $probe, runId: $run}}]->(b)",
        rows, params={"sigma": float(sigma), "probe": probe, "run": run_id},
    )


def write_hierarchy(store: Store, run_id: str, levels: pd.DataFrame, min_weight: float) -> int:
    """(Re)write ``(c)-[:IN_RUN {level, module, minWeight}]->(:Run)`` from a ``componentId, level, module`` frame."""
    rel = RelType.IN_RUN.value
    store.run(f"MATCH (:Component)-[e:{rel}]->(:Run {{runId: $run}}) DELETE e", {"run": run_id}, write=True)
    rows = [
        {"id": r["componentId"], "level": None if pd.isna(r["level"]) else int(r["level"]),
         "module": None if pd.isna(r["module"]) else int(r["module"])}
        for r in levels.to_dict("records")
    ]
    return store.write_rows(
        "UNWIND $rows AS r MATCH (c:Component {componentId: r.id}) MATCH (run:Run {runId: $run}) "
        f"CREATE (c)-[:{rel} {{level: r.level, module: r.module, minWeight: $w}}]->(run)",
        rows, params={"run": run_id, "w": float(min_weight)},
    )


ALIGNMENT_PROPERTIES = ("similarity", "score", "p", "q", "significant", "method")
"""What an ``ALIGNED_WITH`` carries (columns of an alignment frame; absent columns are not written)."""


def write_alignment(store: Store, model_a: str, model_b: str, alignment: pd.DataFrame, method: str) -> int:
    """(Re)write ``ALIGNED_WITH`` from model A's to model B's components: one per row of
    ``alignment`` (``componentId_a, componentId_b`` and any of :data:`ALIGNMENT_PROPERTIES`; a
    row's own ``method`` wins over ``method``). NaN values are left out."""
    rel = RelType.ALIGNED_WITH.value
    store.run(f"MATCH (a:Component {{modelId: $ma}})-[e:{rel}]->(b:Component {{modelId: $mb}}) DELETE e",
              {"ma": model_a, "mb": model_b}, write=True)
    rows = []
    for rec in alignment.to_dict("records"):
        props: dict[str, Any] = {"method": method}
        for key in ALIGNMENT_PROPERTIES:
            value = rec.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            props[key] = bool(value) if key == "significant" else value if key == "method" else float(value)
        rows.append({"a": rec["componentId_a"], "b": rec["componentId_b"], "props": props})
    return store.write_rows(
        "UNWIND $rows AS r MATCH (a:Component {componentId: r.a}) MATCH (b:Component {componentId: r.b}) "
        f"CREATE (a)-[e:{rel}]->(b) SET e += r.props",
        rows,
    )


def fetch_alignment(store: Store, model_a: str, model_b: str) -> pd.DataFrame:
    """The stored ``ALIGNED_WITH`` pairs from model A's to model B's components, with their properties."""
    rel = RelType.ALIGNED_WITH.value
    df = store.read(f"MATCH (a:Component {{modelId: $ma}})-[e:{rel}]->(b:Component {{modelId: $mb}}) "
                    "RETURN a.componentId AS componentId_a, b.componentId AS componentId_b, properties(e) AS props",
                    {"ma": model_a, "mb": model_b})
    if df.empty:
        return pd.DataFrame(columns=["componentId_a", "componentId_b", *ALIGNMENT_PROPERTIES])
    props = pd.DataFrame(list(df["props"]))
    return pd.concat([df.drop(columns=["props"]), props], axis=1)


def write_path_cache(store: Store, run_id: str, key: str, paths_json: str) -> None:
    """Keep a run's strongest paths on its ``:Run`` (``key`` from :data:`atlas.schema.RUN_CACHES`)."""
    if key not in RUN_CACHES:
        raise ValidationError(f"unknown run cache {key!r}: one of {sorted(RUN_CACHES)}")
    store.run(f"MATCH (r:Run {{runId: $id}}) SET r.{key} = $json", {"id": run_id, "json": paths_json}, write=True)


def delete_path_caches(store: Store, run_id: str) -> None:
    """Forget a run's cached paths (benchmarks measure the first call)."""
    store.run("MATCH (r:Run {runId: $id}) REMOVE " + ", ".join(f"r.{k}" for k in sorted(RUN_CACHES)), {"id": run_id}, write=True)


def match_paths(store: Store, run_id: str, source: str, target: str, *, min_weight: float, max_length: int,
                shortest: bool, limit: int = 20) -> pd.DataFrame:
    """Paths between two components over a run's edges with ``|score| >= min_weight``, matched in
    the database: the shortest ones (all of the minimum length) or the ``limit`` strongest
    (product of ``|score|``) of at most ``max_length`` hops. One row per path:
    ``nodes, scores, channels, length`` (and ``strength``)."""
    if not 1 <= int(max_length) <= 6:
        raise ValidationError("max_length must be between 1 and 6 (path counts grow exponentially)")
    pattern = (f"MATCH p = (a:Component {{componentId: $source}})-[:{RelType.ATTRIBUTION.value}*1..{int(max_length)}]->"
               "(b:Component {componentId: $target}) WHERE all(e IN relationships(p) WHERE e.runId = $run AND abs(e.score) >= $w) ")
    params = {"source": source, "target": target, "run": run_id, "w": float(min_weight), "limit": int(limit)}
    if shortest:
        # shortestPath(...) WHERE filters after the search on ArcadeDB: a bounded match cut to its minimum instead
        return store.read(pattern + "WITH collect(p) AS found, min(length(p)) AS shortest "
                          "UNWIND found AS p WITH p, shortest WHERE length(p) = shortest "
                          "RETURN [n IN nodes(p) | n.componentId] AS nodes, [e IN relationships(p) | e.score] AS scores, "
                          "[e IN relationships(p) | e.channel] AS channels, length(p) AS length", params)
    return store.read(pattern + "WITH p, reduce(s = 1.0, e IN relationships(p) | s * abs(e.score)) AS strength "
                      "RETURN [n IN nodes(p) | n.componentId] AS nodes, [e IN relationships(p) | e.channel] AS channels, "
                      "[e IN relationships(p) | e.score] AS scores, length(p) AS length, strength ORDER BY strength DESC LIMIT $limit",
                      params)


# -- whole runs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeBatch:
    """Edges of one relationship type for :func:`write_run`, with properties shared by every row."""

    rel_type: RelType
    frame: pd.DataFrame
    props: Mapping[str, Any] = field(default_factory=dict)


def _part_of_pairs(nodes: pd.DataFrame) -> list[tuple[str, str]]:
    """Neurons, features and error terms are ``PART_OF`` the MLP of their layer."""
    parts = nodes[nodes["kind"].isin([ComponentKind.NEURON.value, ComponentKind.FEATURE.value, ComponentKind.ERROR.value])]
    return [(cid, component_id(ref.model_id, ComponentKind.MLP, layer=int(layer)))
            for cid, layer, ref in zip(parts["componentId"], parts["layer"], map(parse_component_id, parts["componentId"]))]


def write_run(
    store: Store,
    run: RunRecord,
    model: ModelRecord,
    nodes: pd.DataFrame,
    edges: Sequence[EdgeBatch],
    *,
    dictionaries: Sequence[DictionaryRecord] = (),
    unfinished: bool = False,
    edges_in_place: bool = False,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """The life cycle of a run in the database, in one place (ingest and import both use it).

    ``edges_in_place``: the relationships are already in the database (loaded offline by
    ``neo4j-admin database import``): they are counted per type against ``edges`` instead of
    written (a mismatch is a ValidationError and the run stays unfinished), and never deleted.

    1. schema, the ``:Model``, the components and their ``PART_OF`` links, the dictionaries (MERGE);
    2. the ``:Run`` claimed for this process (:func:`begin_run`) with status ``writing``;
    3. an ``unfinished`` run's partial edges are deleted; its edges in batched transactions, and
       the attribution edges also as columns (:func:`write_edge_columns`);
    4. status ``complete`` last, with ``nEdges`` and ``nNodes`` (the record's own when it has them).
    On any failure while writing edges they are deleted again and the run is marked ``failed``.
    """
    ensure_schema(store)
    write_model(store, model)
    write_components(store, nodes)
    pairs = _part_of_pairs(nodes)
    if pairs:
        write_part_of(store, pairs)
    if dictionaries:
        write_dictionaries(store, dictionaries)
    types = sorted({batch.rel_type for batch in edges})
    begin_run(store, run)  # claimed: no other process writes this run from here on
    if edges_in_place:
        try:
            for t in types:
                want = sum(len(b.frame) for b in edges if b.rel_type == t)
                have = _first_int(store.read(f"MATCH ()-[e:{t.value}]->() WHERE e.runId = $run RETURN count(e) AS n", {"run": run.run_id}))
                if have != want:
                    raise ValidationError(f"run {run.run_id!r}: the database holds {have} {t.value} edges of it, the files {want}; "
                                          "load relationships.csv first (neo4j-admin database import), or import without --edges-loaded")
            delete_edge_columns(store, run.run_id)
            for batch in edges:
                if batch.rel_type in COLUMNS_TYPES and not batch.props:
                    write_edge_columns(store, run.run_id, batch.rel_type, batch.frame, nodes)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to report
                delete_edge_columns(store, run.run_id)
                set_run_status(store, run.run_id, RunStatus.FAILED)
            raise
        set_run_status(store, run.run_id, RunStatus.COMPLETE, n_edges=run.n_edges if run.n_edges is not None else sum(len(b.frame) for b in edges),
                       n_nodes=run.n_nodes if run.n_nodes is not None else len(nodes))
        return
    if unfinished:
        removed = sum(delete_run_edges(store, run.run_id, rel_type=t) for t in types)
        if log is not None:
            log(f"run {run.run_id} was unfinished: removed {removed} partial edges, writing it again")
    try:
        delete_edge_columns(store, run.run_id)
        for batch in edges:
            write_edges(store, batch.frame, run.run_id, rel_type=batch.rel_type, props=batch.props, progress=progress)
            if batch.rel_type in COLUMNS_TYPES and not batch.props:
                write_edge_columns(store, run.run_id, batch.rel_type, batch.frame, nodes)
    except BaseException:
        try:
            delete_edge_columns(store, run.run_id)
            for t in types:
                delete_run_edges(store, run.run_id, rel_type=t)
            set_run_status(store, run.run_id, RunStatus.FAILED)
        except Exception:  # the original error is the one to report
            pass
        raise
    # a copied run keeps its own counts (an attribution run's nEdges leaves out later verification edges)
    n_edges = run.n_edges if run.n_edges is not None else sum(len(b.frame) for b in edges)
    set_run_status(store, run.run_id, RunStatus.COMPLETE, n_edges=n_edges, n_nodes=run.n_nodes if run.n_nodes is not None else len(nodes))


def fetch_model(store: Store, model_id: str) -> ModelRecord | None:
    """The ``:Model`` of this id, or None."""
    df = store.read("MATCH (m:Model {modelId: $id}) RETURN properties(m) AS p", {"id": model_id})
    return None if df.empty else ModelRecord.from_props(dict(df["p"].iloc[0]))


def fetch_run_relationships(store: Store, run_id: str) -> pd.DataFrame:
    """Every relationship carrying ``runId`` = the run (attribution, per-position attribution and
    ablation edges alike) with all its properties: columns ``componentId_pre, componentId_post, type, props``."""
    columns = ["componentId_pre", "componentId_post", "type", "props"]
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    for rel in RUN_EDGE_TYPES:
        df = store.read(
            f"MATCH (a:Component)-[e:{rel.value} {{runId: $run}}]->(b:Component) "
            "RETURN a.componentId AS pre, b.componentId AS post, properties(e) AS props",
            {"run": run_id},
        )
        if len(df):
            rows += [(a, b, rel.value, dict(p)) for a, b, p in zip(df["pre"], df["post"], df["props"])]
    return pd.DataFrame(rows, columns=columns)


def fetch_part_of(store: Store, model_id: str) -> list[tuple[str, str]]:
    """The ``(part, whole)`` pairs of a model's components."""
    df = store.read(
        f"MATCH (p:Component {{modelId: $model}})-[:{RelType.PART_OF.value}]->(w:Component) RETURN p.componentId AS part, w.componentId AS whole",
        {"model": model_id},
    )
    return list(zip(df["part"], df["whole"])) if len(df) else []


def fetch_component_properties(store: Store, model_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every component of a model as ``(componentId, kind label, properties)``, values exactly as
    stored (no DataFrame widening of integers to floats)."""
    df = store.read(
        "MATCH (c:Component {modelId: $model}) RETURN c.componentId AS id, "
        "[l IN labels(c) WHERE l <> 'Component'][0] AS label, properties(c) AS props",
        {"model": model_id},
    )
    return [(cid, label, dict(props)) for cid, label, props in zip(df["id"], df["label"], df["props"])] if len(df) else []


def fetch_dictionaries(store: Store, dictionary_ids: Sequence[str]) -> list[DictionaryRecord]:
    """The ``:Dictionary`` records of these ids (those that exist)."""
    if not dictionary_ids:
        return []
    df = store.read("MATCH (d:Dictionary) WHERE d.dictionaryId IN $ids RETURN properties(d) AS p ORDER BY d.dictionaryId",
                    {"ids": list(dictionary_ids)})
    return [DictionaryRecord.from_props(dict(p)) for p in df["p"]] if len(df) else []
