"""Typed records that travel between the layers and the store: frozen dataclasses, not dicts.

Each record knows its node's properties (camelCase, as stored) through ``to_props`` and is read
back with ``from_props``; what a record does not name travels in ``details`` (method-specific
properties of a run, the statistics of a dictionary), whose keys :func:`check_property_keys`
checks before they reach the database. Statements live in :mod:`atlas.connectome`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from atlas.errors import ValidationError
from atlas.schema import RunStatus

__all__ = ["ModelRecord", "RunRecord", "DictionaryRecord", "CircuitRecord", "check_property_keys", "camel"]

_KEY_RE = re.compile(r"^[a-z][A-Za-z0-9]*$")


def camel(name: str) -> str:
    """``n_prompts`` -> ``nPrompts``: a field's property name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def check_property_keys(keys: Iterable[str], what: str = "property") -> None:
    """Refuse a property key that is not a camelCase identifier (letters and digits, lower first)."""
    bad = sorted(k for k in keys if not isinstance(k, str) or not _KEY_RE.match(k))
    if bad:
        raise ValidationError(f"invalid {what} name(s) {bad[:5]}: property names are camelCase identifiers")


def _props(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(record):
        if f.name == "details":
            continue
        value = getattr(record, f.name)
        if value is not None:
            out[camel(f.name)] = value.value if isinstance(value, RunStatus) else value
    details = dict(getattr(record, "details", {}) or {})
    check_property_keys(details)
    clash = sorted(set(details) & set(out))
    if clash:
        raise ValidationError(f"{type(record).__name__} details repeat its fields: {clash}")
    return {**out, **{k: v for k, v in details.items() if v is not None}}


def _split(cls: type, props: Mapping[str, Any]) -> dict[str, Any]:
    names = {camel(f.name): f.name for f in fields(cls) if f.name != "details"}
    known = {names[k]: v for k, v in props.items() if k in names}
    return {**known, "details": {k: v for k, v in props.items() if k not in names}}


@dataclass(frozen=True)
class ModelRecord:
    """A ``:Model`` node: the architecture of a mapped transformer."""

    model_id: str
    name: str
    architecture: str
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int | None
    d_vocab: int
    n_ctx: int
    source: str
    weights_hash: str | None = None
    """SHA-256 of the weights (and of the config fields that change the function); None on models
    stored before the atlas recorded it."""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, Any]:
        return _props(self)

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> ModelRecord:
        data = _split(cls, props)
        missing = [camel(f.name) for f in fields(cls) if f.name not in data and f.name not in ("details", "d_mlp", "weights_hash")]
        if missing:
            raise ValidationError(f"a :Model without {missing}")
        data.setdefault("d_mlp", None)
        return cls(**data)


@dataclass(frozen=True)
class RunRecord:
    """A ``:Run`` node: one measurement of a model's edges. ``status`` becomes complete last.

    ``details`` holds what only some runs have (``steps``, ``granularity``, ``ablation``, ...) and
    the derived properties written onto the run later (path caches, evaluation figures).
    """

    run_id: str
    model_id: str
    task: str | None = None
    method: str | None = None
    metric: str | None = None
    n_prompts: int | None = None
    config_json: str | None = None
    status: RunStatus = RunStatus.WRITING
    created_at: str | None = None
    atlas_version: str | None = None
    n_edges: int | None = None
    n_nodes: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status is RunStatus.COMPLETE

    def to_props(self) -> dict[str, Any]:
        return _props(self)

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> RunRecord:
        data = _split(cls, props)
        try:
            data["status"] = RunStatus(data.get("status", RunStatus.WRITING.value))
        except ValueError:
            data["status"] = RunStatus.FAILED  # an unknown status is never whole
        if "modelId" not in props or "runId" not in props:
            raise ValidationError(f"a :Run node without runId/modelId: {sorted(props)[:8]}")
        return cls(**data)


@dataclass(frozen=True)
class DictionaryRecord:
    """A ``:Dictionary`` node: a sparse dictionary (SAE or transcoder) with its quality figures."""

    dictionary_id: str
    model_id: str
    hook_name: str
    path: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, Any]:
        return _props(self)

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> DictionaryRecord:
        """From camelCase properties: id, model, hook and path, the rest (None dropped) as details."""
        data = _split(cls, {k: v for k, v in props.items() if v is not None})
        return cls(**data)


@dataclass(frozen=True)
class CircuitRecord:
    """A ``:Circuit`` node and its members (componentId -> role)."""

    circuit_id: str
    run_id: str
    kind: str
    members: Mapping[str, str] = field(default_factory=dict)
    edge_keys: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, Any]:
        props = _props(self)
        props.pop("members", None)
        props["edgeKeys"] = list(self.edge_keys)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, Any], members: Mapping[str, str] | None = None) -> CircuitRecord:
        data = _split(cls, props)
        data["edge_keys"] = tuple(data.get("edge_keys") or ())
        data["members"] = dict(members or {})
        return cls(**data)
