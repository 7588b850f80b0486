"""Strict JSON data: every ``--json`` of the CLI and every answer of the explorer goes through
:func:`strict_json` (a bare ``NaN`` is not JSON, and strict parsers reject it)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["strict_json"]


def strict_json(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null, numpy scalars and arrays Python
    values, pandas' missing values null, anything else unknown a string."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return strict_json(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
