"""A run as files and back: a lossless CSV copy in ``neo4j-admin database import`` format.

:func:`export_run_csv` writes three files into a folder:

- ``nodes.csv``: every component the run touches (and the MLPs its neurons and features are part
  of) with all its properties: ``componentId:ID``, ``:LABEL`` (``Component;Head``), then one column
  per property with neo4j-admin's type suffix (``layer:long``, ``score:double``, ``transcoder:boolean``,
  strings bare). Lists and other non-scalar values are JSON text, listed in ``run.json``.
- ``relationships.csv``: every relationship of the run (``ATTRIBUTION``, ``ATTRIBUTION_AT`` and ``ABLATION`` edges with
  all their properties) and the ``PART_OF`` links among those components: ``:START_ID``,
  ``:END_ID``, ``:TYPE``, then typed property columns.
- ``run.json``: the ``:Run`` and ``:Model`` properties and which columns hold JSON text.

The same folder loads into Neo4j offline (``neo4j-admin database import full --nodes=nodes.csv
--relationships=relationships.csv``; the ``:Run``/``:Model`` nodes then come from ``run.json``) and into
any store over Bolt with :func:`import_run_csv`, which follows the run life cycle of ingestion:
re-importing a complete run changes nothing, an unfinished one is rewritten whole, a run id held
by another configuration is refused, and a malformed file is refused with one line naming the
file, line and column before anything is written.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import parse_component_id
from atlas.records import DictionaryRecord, ModelRecord, RunRecord
from atlas.schema import KIND_LABEL, RUN_EDGE_TYPES, Channel, RelType
from atlas.store import Store

__all__ = ["export_run_csv", "import_run_csv", "ImportResult", "FORMAT"]

FORMAT = "connectome-atlas-run"
VERSION = 1
_RUN_TYPES = {t.value for t in RUN_EDGE_TYPES}
_CHANNELS = {c.value for c in Channel}
_LABEL_KIND = {label: kind for kind, label in KIND_LABEL.items()}


@dataclass(frozen=True)
class ImportResult:
    """What an import did: ``status`` is ``written`` or ``unchanged``."""

    run_id: str
    status: str
    n_nodes: int
    n_edges: int


def _column_type(values: Iterable[Any]) -> str:
    """neo4j-admin's type of a column: ``boolean``, ``long``, ``double``, ``string`` or ``json``."""
    kinds = set()
    for v in values:
        if isinstance(v, bool):
            kinds.add("boolean")
        elif isinstance(v, int):
            kinds.add("long")
        elif isinstance(v, float):
            kinds.add("double")
        elif isinstance(v, str):
            kinds.add("string")
        else:
            kinds.add("json")
    if kinds <= {"long", "double"} and "double" in kinds:
        return "double"
    return kinds.pop() if len(kinds) == 1 else "json"


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, sort_keys=True)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "double":
        return repr(float(value))
    return str(value)


def _write_table(path: Path, fixed: list[str], rows: list[tuple[list[str], dict[str, Any]]]) -> list[str]:
    """Write ``fixed`` leading columns and every property (typed) of ``rows``; returns the JSON columns."""
    names = sorted({k for _, props in rows for k in props})
    kinds = {k: _column_type(props[k] for _, props in rows if k in props and props[k] is not None) for k in names}
    header = fixed + [k if kinds[k] in ("string", "json") else f"{k}:{kinds[k]}" for k in names]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for lead, props in rows:
            w.writerow(lead + [_cell(props.get(k), kinds[k]) for k in names])
    return [k for k in names if kinds[k] == "json"]


def export_run_csv(store: Store, run_id: str, folder: Path) -> tuple[Path, Path, Path]:
    """Write a run losslessly as ``nodes.csv``, ``relationships.csv`` and ``run.json`` in ``folder``."""
    run = cx.require_run(store, run_id)
    if not run.complete:
        raise ValidationError(f"run {run_id!r} is not complete (status {run.status.value}); only complete runs are exported")
    model = cx.fetch_model(store, run.model_id)
    if model is None:
        raise ValidationError(f"run {run_id!r} has no :Model {run.model_id!r} in the store")
    rels = cx.fetch_run_relationships(store, run_id)
    ids = set(rels["componentId_pre"]) | set(rels["componentId_post"])
    part_of = [(a, b) for a, b in cx.fetch_part_of(store, run.model_id) if a in ids]
    ids |= {b for _, b in part_of}
    components = {cid: (label, props) for cid, label, props in cx.fetch_component_properties(store, run.model_id) if cid in ids}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nodes_path, rels_path, meta_path = folder / "nodes.csv", folder / "relationships.csv", folder / "run.json"
    node_rows = [([cid, f"Component;{label}"], {k: v for k, v in props.items() if k != "componentId"})
                 for cid, (label, props) in sorted(components.items())]
    node_json = _write_table(nodes_path, ["componentId:ID", ":LABEL"], node_rows)
    rel_rows = [([a, b, t], dict(p)) for a, b, t, p in zip(rels["componentId_pre"], rels["componentId_post"], rels["type"], rels["props"])]
    rel_rows += [([a, b, RelType.PART_OF.value], {}) for a, b in sorted(part_of)]
    rel_json = _write_table(rels_path, [":START_ID", ":END_ID", ":TYPE"], rel_rows)
    dictionaries = cx.fetch_dictionaries(store, list(run.details.get("dictionaries") or []))
    meta = {"format": FORMAT, "version": VERSION, "run": run.to_props(), "model": model.to_props(),
            "dictionaries": [d.to_props() for d in dictionaries],
            "jsonProperties": {"nodes": node_json, "relationships": rel_json},
            # what the files hold, checked by the import: a run.json that disagrees with them is refused
            "files": {p.name: {"sha256": _sha256(p), "rows": rows} for p, rows in ((nodes_path, len(node_rows)), (rels_path, len(rel_rows)))}}
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return nodes_path, rels_path, meta_path


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- import --------------------------------------------------------------------------------------
def _parse_value(raw: str, kind: str, where: str) -> Any:
    if raw == "":
        return None
    try:
        if kind == "long":
            return int(raw)
        if kind == "double":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return value
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError("not true/false")
            return raw == "true"
        if kind == "json":
            return json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"{where}: {raw!r} is not a valid {kind} ({exc})") from exc
    return raw


def _read_table(path: Path, fixed: list[str], json_columns: Iterable[str]) -> list[tuple[int, list[str], dict[str, Any]]]:
    """Rows of a typed CSV as (line, fixed values, properties); one-line errors for anything malformed."""
    if not path.is_file():
        raise ValidationError(f"missing {path.name} in {path.parent}")
    json_cols = set(json_columns)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or header[: len(fixed)] != fixed:
                raise ValidationError(f"{path.name} is not an atlas export: its header must start with {','.join(fixed)}")  # its own text is not repeated
            columns = []
            for i, col in enumerate(header[len(fixed):]):
                name, _, kind = col.partition(":")
                kind = kind or ("json" if name in json_cols else "string")
                if kind not in ("long", "int", "double", "float", "boolean", "string", "json"):
                    raise ValidationError(f"{path.name}: column {len(fixed) + i + 1} of the header has an unsupported type (not an atlas export)")
                columns.append((name, {"int": "long", "float": "double"}.get(kind, kind)))
            rows = []
            for line, values in enumerate(reader, start=2):
                if len(values) != len(header):
                    raise ValidationError(f"{path.name} line {line}: {len(values)} fields, the header has {len(header)}")
                props = {}
                for (name, kind), raw in zip(columns, values[len(fixed):]):
                    value = _parse_value(raw, kind, f"{path.name} line {line} column {name!r}")
                    if value is not None:
                        props[name] = value
                rows.append((line, values[: len(fixed)], props))
            return rows
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path.name} is not UTF-8 text") from exc
    except csv.Error as exc:
        raise ValidationError(f"{path.name}: malformed CSV ({exc})") from exc


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / "run.json"
    if not path.is_file():
        raise ValidationError(f"missing run.json in {folder} (write the folder with 'atlas export --run RUN --csv-dir FOLDER')")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"run.json in {folder} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValidationError(f"run.json in {folder} is not a {FORMAT} version {VERSION} file")
    for key in ("run", "model"):
        if not isinstance(meta.get(key), dict):
            raise ValidationError(f"run.json in {folder} has no {key!r} object")
    return meta


def import_run_csv(store: Store, folder: Path, *, edges_loaded: bool = False, log: Callable[[str], None] | None = None) -> ImportResult:
    """Load a folder written by :func:`export_run_csv` into ``store``, idempotently by run status.

    ``edges_loaded``: ``neo4j-admin database import`` already loaded ``nodes.csv`` and
    ``relationships.csv`` offline; write only the records (``:Run``, ``:Model``, dictionaries, the
    run's packed columns), after checking the database holds every edge of the files.

    Raises:
        ValidationError: a missing or malformed file (one line: file, line, column).
        RunConflict: the run id exists with another configuration.
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    try:
        run = RunRecord.from_props(meta["run"])
        model = ModelRecord.from_props(meta["model"])
        dictionaries = [DictionaryRecord.from_props(d) for d in meta.get("dictionaries") or []]
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValidationError(f"run.json in {folder}: {exc}") from exc
    if run.model_id != model.model_id:
        raise ValidationError(f"run.json in {folder}: the run's model {run.model_id!r} is not the model {model.model_id!r}")
    json_cols: Mapping[str, list[str]] = meta.get("jsonProperties") or {}
    if edges_loaded and json_cols.get("relationships"):
        raise ValidationError(f"run {run.run_id!r} has list-valued edge properties ({', '.join(json_cols['relationships'])}), which "
                              "neo4j-admin loads as text: import it over Bolt (atlas import without --edges-loaded)")
    for name, recorded in (meta.get("files") or {}).items():  # folders written since the files were recorded
        if name not in ("nodes.csv", "relationships.csv") or not isinstance(recorded, dict):
            raise ValidationError(f"run.json in {folder} records an unknown file {name!r}")
        if (folder / name).is_file() and recorded.get("sha256") != _sha256(folder / name):
            raise ValidationError(f"{name} in {folder} is not the file run.json records (its sha256 differs): the folder was changed "
                                  "after export; export the run again")
    node_rows = _read_table(folder / "nodes.csv", ["componentId:ID", ":LABEL"], json_cols.get("nodes", []))
    rel_rows = _read_table(folder / "relationships.csv", [":START_ID", ":END_ID", ":TYPE"], json_cols.get("relationships", []))
    nodes = []
    for line, (cid, labels), props in node_rows:
        try:
            kind = parse_component_id(cid).kind  # kinds (and so labels) come from the ids, never from the file's text
        except ValidationError as exc:
            raise ValidationError(f"nodes.csv line {line}: {exc}") from exc
        if KIND_LABEL[kind] not in labels.split(";"):
            raise ValidationError(f"nodes.csv line {line}: {cid} is a {KIND_LABEL[kind]}, labelled {labels!r}")
        if props.get("modelId") != model.model_id:
            raise ValidationError(f"nodes.csv line {line}: {cid} belongs to model {props.get('modelId')!r}, not {model.model_id!r}")
        nodes.append({"componentId": cid, "kind": kind.value, "head": None, **props})
    known = {n["componentId"] for n in nodes}
    batches: dict[tuple[str, tuple[tuple[str, Any], ...]], list[dict[str, Any]]] = {}
    n_edges = 0
    seen: dict[tuple[Any, ...], int] = {}
    for line, (a, b, rel), props in rel_rows:
        if a not in known or b not in known:
            raise ValidationError(f"relationships.csv line {line}: {a if a not in known else b} is not in nodes.csv")
        if rel == RelType.PART_OF.value:
            continue  # derived from the components' kinds by the run writer
        if rel not in _RUN_TYPES:
            raise ValidationError(f"relationships.csv line {line}: type {rel!r} is not one of {sorted(_RUN_TYPES | {RelType.PART_OF.value})}")
        if props.pop("runId", None) != run.run_id:
            raise ValidationError(f"relationships.csv line {line}: the edge belongs to another run than {run.run_id!r}")
        value = "effect" if rel == RelType.ABLATION.value else "score"
        if value not in props or "channel" not in props:
            raise ValidationError(f"relationships.csv line {line}: a {rel} edge needs channel and {value}")
        if props["channel"] not in _CHANNELS:
            raise ValidationError(f"relationships.csv line {line}: unknown channel {str(props['channel'])[:20]!r} (one of {', '.join(sorted(_CHANNELS))})")
        key = (a, b, rel, props["channel"], props.get("ablation"), props.get("scope"))
        if key in seen:
            raise ValidationError(f"relationships.csv line {line}: a second {rel} edge {a} -> {b} on channel {props['channel']} (line {seen[key]})")
        seen[key] = line
        row = {"componentId_pre": a, "componentId_post": b, "channel": props.pop("channel"), "score": props.pop(value)}
        shared = tuple(sorted((k, v) for k, v in props.items() if k in ("ablation", "scope", "kind", "modelId")))
        row.update({k: v for k, v in props.items() if k not in dict(shared)})
        batches.setdefault((rel, shared), []).append(row)
        n_edges += 1
    # a run counts its attribution edges (per-position and ablation edges ride along), else all of them
    counted = sum(len(rows) for (rel, _), rows in batches.items() if rel == RelType.ATTRIBUTION.value) or n_edges
    if run.n_edges is not None and run.n_edges != counted:
        raise ValidationError(f"run.json says run {run.run_id!r} has {run.n_edges:,} edges but relationships.csv holds {counted:,}: "
                              "the folder is not one export; export the run again")
    existing = cx.fetch_run_for(store, run.run_id, run.config_json, hint="it cannot be imported over")
    if existing is not None and existing.complete:
        return ImportResult(run.run_id, "unchanged", 0, existing.n_edges or 0)
    edges = [cx.EdgeBatch(RelType(rel), pd.DataFrame(rows), dict(shared)) for (rel, shared), rows in sorted(batches.items(), key=lambda kv: kv[0][0])]
    frame = pd.DataFrame(nodes, dtype=object)
    cx.write_run(store, run, model, frame, edges, dictionaries=dictionaries, unfinished=existing is not None and not edges_loaded,
                 edges_in_place=edges_loaded, log=log)
    return ImportResult(run.run_id, "records written" if edges_loaded else "written", len(nodes), n_edges)
