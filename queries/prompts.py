"""Per-prompt views of a run made with ``--per-prompt``: when does a component (or a circuit) carry
the behaviour, and on which prompts does it collapse?

For each prompt of the run (in its order, with its tokens and text):
  - ``metricClean``, ``metricCorrupted``, ``gap`` = clean - corrupted: the behaviour itself;
  - ``intoLogits``: the sum of that prompt's scores of the edges into the logits (for EAP-IG-act and
    patching-like completeness, close to corrupted - clean);
  - with a component: ``contribution`` = the sum of its outgoing edges' scores on that prompt (what
    corrupting its output does, to first order), ``share`` = contribution / its mean over prompts,
    and ``collapsed`` = share < ``collapse`` (default 0.5): the prompts where the component's usual
    contribution is missing;
  - with a saved circuit whose faithfulness was measured per prompt: ``circuitFaithfulness`` =
    (m(circuit) - m(empty)) / (m(full) - m(empty)) on that prompt (NaN where the prompt's own gap is
    under 1e-6: nothing to carry) and ``carried`` = faithfulness >= ``carried`` (default 0.5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import local_id
from atlas.store import Store

__all__ = ["PromptView", "fetch_prompt_view"]


@dataclass(frozen=True)
class PromptView:
    """One row per prompt (see module docstring) and the view's figures."""

    prompts: pd.DataFrame
    figures: dict[str, Any]


def fetch_prompt_view(store: Store, run_id: str, component: str | None = None, circuit: str | None = None,
                      collapse: float = 0.5, carried: float = 0.5) -> PromptView:
    """The per-prompt view of ``run_id`` (read-only).

    Raises:
        ValidationError: the run has no per-prompt scores, the component or circuit is not the run's.
    """
    run = cx.require_run(store, run_id)
    if not run.details.get("perPrompt"):
        raise ValidationError(f"run {run_id!r} has no per-prompt scores: ingest it again with --per-prompt (and a new --run-id)")
    prompts = pd.DataFrame(json.loads(run.details["promptsJson"]))
    prompts["gap"] = prompts["metricClean"] - prompts["metricCorrupted"]
    edges = cx.fetch_prompt_scores(store, run_id)
    scores = np.array(edges["promptScores"].tolist(), dtype=float).reshape(len(edges), len(prompts))
    into_logits = edges["componentId_post"].map(local_id).eq("LOGITS").to_numpy()
    prompts["intoLogits"] = scores[into_logits].sum(axis=0)
    figures: dict[str, Any] = {"runId": run_id, "nPrompts": len(prompts), "method": run.method, "metric": run.metric}
    if component is not None:
        cid = component if "/" in component else f"{run.model_id}/{component}"
        out = (edges["componentId_pre"] == cid).to_numpy()
        if not out.any():
            raise ValidationError(f"{cid} sends no edge in run {run_id}: give a component id such as {run.model_id}/L1.H0")
        contribution = scores[out].sum(axis=0)
        mean = float(contribution.mean())
        prompts["contribution"] = contribution
        prompts["share"] = contribution / mean if mean != 0 else np.nan
        prompts["collapsed"] = prompts["share"] < collapse
        figures.update({"component": cid, "meanContribution": mean, "collapse": collapse, "nCollapsed": int(prompts["collapsed"].sum())})
    if circuit is not None:
        record = cx.fetch_circuit(store, circuit)
        if record is None or record.run_id != run_id:
            raise ValidationError(f"no circuit {circuit!r} of run {run_id} (atlas circuit --run {run_id} saves one)")
        if "promptMetricCircuit" not in record.details:
            raise ValidationError(f"circuit {circuit!r} was saved before faithfulness was kept per prompt: save it again")
        kept, full, empty = (np.array(record.details[f"promptMetric{k}"], dtype=float) for k in ("Circuit", "Full", "Empty"))
        gap = full - empty
        with np.errstate(divide="ignore", invalid="ignore"):
            prompts["circuitFaithfulness"] = np.where(np.abs(gap) > 1e-6, (kept - empty) / gap, np.nan)
        prompts["carried"] = prompts["circuitFaithfulness"] >= carried
        figures.update({"circuit": circuit, "faithfulness": record.details.get("faithfulness"), "carried": carried,
                        "nCarried": int(prompts["carried"].sum())})
    return PromptView(prompts.drop(columns=["clean", "corrupted"]), figures)
