"""Critical periods: when does each edge of the final circuit form, and does the circuit form before,
with or after the behaviour?

Inputs are a training run's checkpoints in step order, each with its edge frame (one method, task
and prompt set for all) and its task loss. The first checkpoint is the model as initialised (the
zoo's ``NAME@0``), the null: an edge of the final circuit (the final checkpoint's ``top`` edges by
``|score|``) has **formed** at the first checkpoint from which its ``|score|`` stays above the 95th
percentile of all ``|score|`` at initialisation (``formedAt``). Crossing that null says an edge is
no longer an untrained model's; it happens early for most edges while the whole model's scale
grows, so the timing verdict uses one clock for edges and behaviour alike, the **change point**: a
series' split into two constant segments with the least squared error (a mean shift), dated at the
first checkpoint of the second segment. Each edge's ``|score|`` has one (``jumpAt``), the loss has
one (the **behavioural jump**); the circuit's jump (the median of its edges' change points)
**precedes** the behavioural one when it falls in an earlier interval between checkpoints,
**coincides** when it falls in the same one and **follows** otherwise.

Sparsity over training: the Gini coefficient of ``|score|`` over all edges, the share of edges that
carry 90% of the total ``|score|``, and the total, per checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atlas.errors import ValidationError

__all__ = ["Development", "analyse_development", "change_point", "gini", "share_for_mass"]

_KEY = ["componentId_pre", "componentId_post", "channel"]


@dataclass(frozen=True)
class Development:
    """``trajectories``: one row per (final-circuit edge, checkpoint) with ``score``; ``edges``: per edge
    its ``formedAt`` step (None if never); ``checkpoints``: per checkpoint loss and sparsity; ``summary``."""

    trajectories: pd.DataFrame
    edges: pd.DataFrame
    checkpoints: pd.DataFrame
    summary: dict[str, Any]


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; towards 1: one holds everything)."""
    v = np.sort(np.abs(np.asarray(values, dtype=float)))
    if v.size == 0 or v.sum() == 0:
        return 0.0
    n = v.size
    return float((2 * np.arange(1, n + 1) - n - 1).dot(v) / (n * v.sum()))


def share_for_mass(values: np.ndarray, mass: float = 0.9) -> float:
    """The smallest share of values (largest first) whose sum reaches ``mass`` of the total."""
    v = np.sort(np.abs(np.asarray(values, dtype=float)))[::-1]
    if v.size == 0 or v.sum() == 0:
        return 0.0
    k = int(np.searchsorted(np.cumsum(v) / v.sum(), mass - 1e-12) + 1)
    return k / v.size


def change_point(values: Sequence[float]) -> tuple[int, float]:
    """The index where a series splits best into two constant segments (least squared error) and the
    change of the mean there (second segment minus first). Needs at least 2 values."""
    y = np.asarray(values, dtype=float)
    if y.size < 2:
        raise ValidationError("a change point needs at least two checkpoints")
    best, best_err = 1, np.inf
    for k in range(1, y.size):
        err = ((y[:k] - y[:k].mean()) ** 2).sum() + ((y[k:] - y[k:].mean()) ** 2).sum()
        if err < best_err - 1e-15:
            best, best_err = k, err
    return best, float(y[best:].mean() - y[:best].mean())


def analyse_development(steps: Sequence[int], frames: Sequence[pd.DataFrame], losses: Sequence[float], *, top: int = 10,
                        quantile: float = 0.95) -> Development:
    """Formation of the final circuit's edges against the behavioural jump (see module docstring).

    Args:
        steps: Training steps in increasing order; the first is the initialisation (the null).
        frames: Each checkpoint's edge frame (``componentId_pre/_post`` in one model's *local* ids or
            any ids shared across checkpoints, ``channel``, ``score``).
        losses: Each checkpoint's task loss.
    """
    if not (len(steps) == len(frames) == len(losses)) or len(steps) < 3:
        raise ValidationError("development needs at least three checkpoints (the initialisation, one during training, the final)")
    if list(steps) != sorted(set(steps)):
        raise ValidationError(f"checkpoint steps must increase, got {list(steps)}")
    final = frames[-1].assign(strength=frames[-1]["score"].abs()).nlargest(top, "strength")
    circuit = final[_KEY]
    null = float(np.quantile(frames[0]["score"].abs().to_numpy(), quantile)) if len(frames[0]) else 0.0
    rows = []
    for step, frame in zip(steps, frames, strict=True):
        ranked = frame[_KEY + ["score"]].assign(rank=frame["score"].abs().rank(ascending=False, method="min"))
        got = circuit.merge(ranked, on=_KEY, how="left").fillna({"score": 0.0, "rank": float(len(frame) + 1)})
        rows.append(got.assign(step=int(step)))
    traj = pd.concat(rows, ignore_index=True)

    def first_for_good(group: pd.DataFrame, holds: np.ndarray) -> int | None:
        for i in range(len(holds)):
            if holds[i:].all():
                return int(group["step"].iloc[i])
        return None

    edges = []
    for key, group in traj.groupby(_KEY, sort=False):
        group = group.sort_values("step")
        k_edge, rise = change_point(group["score"].abs().to_numpy())
        edges.append({**dict(zip(_KEY, key)), "formedAt": first_for_good(group, (group["score"].abs() > null).to_numpy()),
                      "jumpAt": int(group["step"].iloc[k_edge]), "jumpIndex": k_edge, "rise": rise,
                      "finalScore": float(group["score"].iloc[-1])})
    edge_frame = pd.DataFrame(edges)
    checkpoints = pd.DataFrame({
        "step": [int(s) for s in steps], "loss": [float(v) for v in losses],
        "gini": [gini(f["score"].to_numpy()) for f in frames],
        "share90": [share_for_mass(f["score"].to_numpy()) for f in frames],
        "totalAbsScore": [float(f["score"].abs().sum()) for f in frames],
        "circuitAboveNull": [int((traj[traj.step == s]["score"].abs() > null).sum()) for s in steps],
    })
    k, drop = change_point(losses)
    jump_from, jump_to = int(steps[k - 1]), int(steps[k])
    known = edge_frame["formedAt"].dropna()
    formation = float(np.median(known)) if len(known) else None
    jump_index = float(np.median(edge_frame["jumpIndex"]))
    verdict = "precedes" if jump_index < k else "coincides" if jump_index == k else "follows"
    summary = {
        "nullThreshold": null, "nullQuantile": quantile, "top": int(len(circuit)), "jumpBetween": [jump_from, jump_to], "lossChange": drop,
        "circuitFormation": formation, "formedEdges": int(len(known)),
        "circuitJump": float(np.median(edge_frame["jumpAt"])), "verdict": verdict,
        "giniFirst": float(checkpoints["gini"].iloc[0]), "giniLast": float(checkpoints["gini"].iloc[-1]),
    }
    return Development(traj, edge_frame, checkpoints, summary)
