"""DataFrame contracts between stages: the edge frame and the node frame.

Edge methods return an edge frame; the store writes one; queries return one. Columns are the
database's property names, with neuPrint's ``_pre``/``_post`` suffixes for the two ends.
Validation happens at the boundary and names the bad column with a few bad rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from atlas.errors import ValidationError
from atlas.ids import parse_component_id
from atlas.schema import Channel, ComponentKind

__all__ = [
    "EDGE_COLUMNS",
    "EDGE_OPTIONAL_COLUMNS",
    "NODE_COLUMNS",
    "empty_edge_frame",
    "validate_edges",
    "validate_nodes",
]

EDGE_COLUMNS: tuple[str, ...] = ("componentId_pre", "componentId_post", "channel", "score")
EDGE_OPTIONAL_COLUMNS: tuple[str, ...] = ("srcPos", "dstPos")
NODE_COLUMNS: tuple[str, ...] = ("componentId", "kind", "modelId", "layer", "head")

_HEAD_CHANNELS = {Channel.Q.value, Channel.K.value, Channel.V.value}
_SHOW = 5


def empty_edge_frame() -> pd.DataFrame:
    """An edge frame with the fixed columns and no rows."""
    return pd.DataFrame(
        {
            "componentId_pre": pd.Series([], dtype=object),
            "componentId_post": pd.Series([], dtype=object),
            "channel": pd.Series([], dtype=object),
            "score": pd.Series([], dtype=float),
        }
    )


def _fail(what: str, frame: pd.DataFrame, mask: Iterable[bool] | None = None) -> None:
    rows = frame if mask is None else frame[np.asarray(mask, dtype=bool)]
    shown = rows.head(_SHOW).to_dict("records")
    more = f" (and {len(rows) - _SHOW} more)" if len(rows) > _SHOW else ""
    raise ValidationError(f"{what}: {shown}{more}")


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValidationError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValidationError(f"{name} is missing column(s) {missing}; has {list(frame.columns)}")


def _parse_or_none(cid: str) -> object:
    try:
        return parse_component_id(cid)
    except ValidationError:
        return None


def validate_edges(frame: pd.DataFrame) -> pd.DataFrame:
    """Check an edge frame and return it with canonical dtypes.

    Rules: the four fixed columns exist and are non-null; ids parse and both ends belong to one
    model; ``score`` is a finite float; channels q/k/v enter heads only and heads are entered on
    q/k/v only; nothing enters the embedding or leaves the logits; no self-loops; no duplicate
    (pre, post, channel[, srcPos, dstPos]); positions, when present, are non-negative integers.

    Raises:
        ValidationError: naming the rule, the column and up to five offending rows.
    """
    _require_columns(frame, EDGE_COLUMNS, "edge frame")
    out = frame.copy()
    for col in EDGE_COLUMNS:
        if out[col].isna().any():
            _fail(f"edge frame column {col!r} has nulls", out, out[col].isna())
    # ids repeat across rows: check and parse each distinct value once, then index by row
    ends: dict[str, tuple[np.ndarray, list[object]]] = {}
    for col in ("componentId_pre", "componentId_post", "channel"):
        codes, uniques = pd.factorize(out[col])
        not_str = np.array([not isinstance(v, str) for v in uniques], dtype=bool)
        if not_str.any():
            _fail(f"edge frame column {col!r} must hold strings", out, not_str[codes])
        if col != "channel":
            ends[col] = (codes, [_parse_or_none(v) for v in uniques])
    for col, (codes, refs) in ends.items():
        invalid = np.array([r is None for r in refs], dtype=bool)[codes]
        if invalid.any():
            _fail(f"edge frame column {col!r} has invalid component ids", out, invalid)
    try:
        out["score"] = pd.to_numeric(out["score"], errors="raise").astype(float)
    except (TypeError, ValueError):
        bad = ~out["score"].map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        _fail("edge frame column 'score' must be numeric", out, bad)
    finite = np.isfinite(out["score"].to_numpy())
    if not finite.all():
        _fail("edge frame column 'score' has NaN or infinite values", out, ~finite)
    valid_channels = {c.value for c in Channel}
    bad = ~out["channel"].isin(valid_channels)
    if bad.any():
        _fail(f"edge frame column 'channel' must be one of {sorted(valid_channels)}", out, bad)

    def per_row(col: str, attr: str) -> np.ndarray:
        codes, refs = ends[col]
        return np.array([getattr(r, attr) for r in refs], dtype=object)[codes]

    bad = per_row("componentId_pre", "model_id") != per_row("componentId_post", "model_id")
    if bad.any():
        _fail("edge frame mixes models: both ends of an edge must belong to one model", out, bad)
    pre_kind, post_kind = per_row("componentId_pre", "kind"), per_row("componentId_post", "kind")
    into_head = post_kind == ComponentKind.HEAD
    head_channel = out["channel"].isin(_HEAD_CHANNELS).to_numpy()
    bad = (into_head & ~head_channel) | (~into_head & head_channel)
    if bad.any():
        _fail("edge frame channel must be q/k/v exactly when the target is a head ('in' otherwise)", out, bad)
    bad = (post_kind == ComponentKind.EMBED) | (pre_kind == ComponentKind.LOGITS)
    if bad.any():
        _fail("edge frame has edges into the embedding or out of the logits", out, bad)
    bad = out["componentId_pre"] == out["componentId_post"]
    if bad.any():
        _fail("edge frame has self-loops", out, bad)
    key = list(EDGE_COLUMNS[:3])
    for col in EDGE_OPTIONAL_COLUMNS:
        if col in out.columns:
            vals = out[col]
            ok = vals.map(lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0)
            if not ok.all():
                _fail(f"edge frame column {col!r} must hold non-negative integers", out, ~ok)
            out[col] = vals.astype("int64")
            key.append(col)
    dup = out.duplicated(subset=key, keep=False)
    if dup.any():
        _fail(f"edge frame has duplicate edges on {key}", out, dup)
    return out.reset_index(drop=True)


def validate_nodes(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a node frame: ids parse and agree with ``kind``, ``modelId``, ``layer`` and ``head``."""
    _require_columns(frame, NODE_COLUMNS, "node frame")
    out = frame.copy()
    if out["componentId"].duplicated().any():
        _fail("node frame has duplicate componentId", out, out["componentId"].duplicated(keep=False))
    bad = []
    for row in out.itertuples(index=False):
        try:
            ref = parse_component_id(row.componentId)
        except ValidationError:
            bad.append(True)
            continue
        layer_ok = ref.layer is None or ref.layer == row.layer
        units_ok = all(_index(getattr(row, c, None)) in (None, getattr(ref, c)) for c in _UNIT_COLUMNS if c in out.columns)
        bad.append(
            ref.kind.value != row.kind or ref.model_id != row.modelId or not layer_ok or ref.head != _index(row.head) or not units_ok
        )
    if any(bad):
        _fail("node frame rows disagree with their componentId", out, bad)
    out["head"] = out["head"].astype("Int64")
    out["layer"] = out["layer"].astype("int64")
    # a neuron or feature index is an integer: a column that also holds other kinds' rows (NaN)
    # is float in pandas, and would otherwise be stored as 30.0
    for c in _UNIT_COLUMNS:
        if c in out.columns:
            out[c] = out[c].astype("Int64")
    return out.reset_index(drop=True)


_UNIT_COLUMNS = ("neuron", "feature")


def _index(value: object) -> int | None:
    """An optional integer index of a node frame cell (None, NaN and pd.NA read as absent)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)  # type: ignore[call-overload]


def strongest_first(strength: np.ndarray, candidates: np.ndarray, top: int | None = None) -> np.ndarray:
    """``candidates`` (ascending row indices) ordered by ``strength`` descending, ties in row order
    (what a stable sort gives), cut to the ``top`` first: only the rows at or above the top-th
    strength are sorted, so the top 400 of 1M rows cost a partition, not a sort."""
    if top is not None and top < len(candidates):
        cut = np.partition(strength[candidates], len(candidates) - top)[len(candidates) - top]
        candidates = candidates[strength[candidates] >= cut]
    order = candidates[np.argsort(-strength[candidates], kind="stable")]
    return order if top is None else order[:top]
