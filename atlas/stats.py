"""Small statistics shared by ingest and the queries, without importing ``scipy.stats`` (0.6-0.8 s, more
than a whole command takes on a 1M-edge run otherwise)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["spearman"]


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho (average ranks for ties), as ``scipy.stats.spearmanr`` gives it; NaN when
    either side is constant."""
    rx, ry = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy(), pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
