"""Trial-to-trial variability: noise correlations and encoding models with their noise ceiling.

A transformer is deterministic, so "trials" are made as in an experiment with a noisy sensor: each
stimulus (a task prompt) is presented ``repeats`` times with Gaussian noise added to its token
embeddings (``sigma`` times each embedding's norm, independent per repeat, position and dimension).
A component's response is the norm of its output at every scored position of the prompt.

**Noise correlations** (``noise_correlations``): for each pair of components, the signal
correlation is the correlation over stimuli of their mean responses; the noise correlation is the
correlation of their trial-to-trial deviations from those means, pooled over stimuli. Its null
permutes one component's repeats within each stimulus (the shared noise is cut, the stimulus
structure kept; ``shuffles`` draws): ``z = (r - mean_null) / sd_null``.

**Encoding models** (``encoding_models``): cross-validated ridge regressions (folds grouped by
prompt; the penalty chosen by generalised cross-validation inside each training fold) predict a
component's single-trial response from task variables (one-hot ``token``,
``prev-token``, ``position``, and all three together): held-out R2, next to the **noise ceiling**,
the share of single-trial variance that is stimulus-driven at all (``1 - mean within-stimulus
variance / total variance``), the most any model of the stimulus can explain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ValidationError
from ingest.model.graph import ModelGraph
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_output
from ingest.model.tasks import PromptBatch

__all__ = ["noisy_responses", "noise_correlations", "encoding_models", "ENCODING_SETS"]

ENCODING_SETS = {"token": ("token",), "prev-token": ("prev-token",), "position": ("position",), "all": ("token", "prev-token", "position")}


def noisy_responses(model: Any, graph: ModelGraph, batch: PromptBatch, *, repeats: int = 8, sigma: float = 0.05,
                    seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Component ids and responses ``[component, stimulus-position, repeat]`` (output norms at the
    batch's scored positions, one noisy presentation per repeat)."""
    if repeats < 2:
        raise ValidationError("noise needs at least 2 repeats per stimulus")
    if sigma <= 0:
        raise ValidationError(f"--sigma must be positive, got {sigma}")
    senders = [s for s in graph.senders if s.kind.value in ("head", "mlp")]
    names = {hook_name("z", l) for l in range(graph.n_layers)} | ({hook_name("mlp_out", l) for l in range(graph.n_layers)} if graph.has_mlp else set())
    gen = torch.Generator().manual_seed(seed)
    mask = batch.mask
    out = np.zeros((len(senders), int(mask.sum()), repeats))
    for k in range(repeats):
        def noisy(embed: torch.Tensor, hook: Any) -> torch.Tensor:
            noise = torch.randn(embed.shape, generator=gen, dtype=embed.dtype)
            return embed + sigma * embed.norm(dim=-1, keepdim=True) * noise / noise.shape[-1] ** 0.5

        with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name("embed"), noisy)]):
            _, cache = model.run_with_cache(batch.clean, names_filter=lambda n: n in names)
        for i, s in enumerate(senders):
            if s.kind.value == "head":
                o = head_output(model, s.layer, s.head, cache[hook_name("z", s.layer)])
            else:
                o = cache[hook_name("mlp_out", s.layer)]
            out[i, :, k] = o.norm(dim=-1)[mask].detach().double().cpu().numpy()
    return [s.component_id for s in senders], out


def noise_correlations(ids: list[str], responses: np.ndarray, *, shuffles: int = 20, seed: int = 0) -> pd.DataFrame:
    """Signal and noise correlation of every component pair (``a < b``), with the noise correlation's
    permutation null and z-score (see module docstring)."""
    rng = np.random.default_rng(seed)
    means = responses.mean(axis=2, keepdims=True)
    resid = responses - means  # [c, stim, rep]
    rows = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = resid[i].ravel(), resid[j].ravel()
            if a.std() < 1e-12 or b.std() < 1e-12:
                continue
            r = float(np.corrcoef(a, b)[0, 1])
            null = []
            for _ in range(shuffles):
                perm = rng.permuted(resid[j], axis=1)  # repeats reordered within each stimulus
                null.append(np.corrcoef(a, perm.ravel())[0, 1])
            sd = float(np.std(null)) or 1e-12
            ma, mb = means[i, :, 0], means[j, :, 0]
            signal = float(np.corrcoef(ma, mb)[0, 1]) if ma.std() > 1e-12 and mb.std() > 1e-12 else None
            rows.append({"a": ids[i], "b": ids[j], "r": r, "signal": signal, "rNull": float(np.mean(null)), "z": (r - float(np.mean(null))) / sd})
    return pd.DataFrame(rows, columns=["a", "b", "r", "signal", "rNull", "z"])


def _one_hot(values: np.ndarray) -> np.ndarray:
    _, codes = np.unique(values, return_inverse=True)
    return np.eye(codes.max() + 1)[codes]


def encoding_models(ids: list[str], responses: np.ndarray, batch: PromptBatch, *, folds: int = 5) -> pd.DataFrame:
    """Held-out R2 of ridge encoding models per component and variable set (the penalty chosen inside
    each training fold by generalised cross-validation), with the noise ceiling."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold

    if batch.n_prompts < folds:
        raise ValidationError(f"encoding models with {folds}-fold cross-validation need at least {folds} prompts, got {batch.n_prompts}")
    mask = batch.mask.cpu().numpy()
    b, p = mask.shape
    prev = np.concatenate([np.full((b, 1), -1), batch.clean[:, :-1].cpu().numpy()], axis=1)
    variables = {"token": batch.clean.cpu().numpy()[mask], "prev-token": prev[mask], "position": np.broadcast_to(np.arange(p), (b, p))[mask]}
    groups = np.broadcast_to(np.arange(b)[:, None], (b, p))[mask]
    designs = {name: np.hstack([_one_hot(variables[v]) for v in parts]) for name, parts in ENCODING_SETS.items()}
    rows = []
    for i, cid in enumerate(ids):
        trials = responses[i]  # [stim, rep]
        within = float(trials.var(axis=1, ddof=1).mean())
        total = float(trials.var(ddof=1))
        ceiling = 1 - within / total if total > 0 else None
        y = trials[:, 0]  # one single trial per stimulus, as an experiment records
        row: dict[str, Any] = {"componentId": cid, "noiseCeiling": ceiling}
        for name, x in designs.items():
            pred = np.zeros_like(y)
            for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
                pred[test] = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(x[train], y[train]).predict(x[test])
            sst = float(((y - y.mean()) ** 2).sum())
            row[f"r2{''.join(w.capitalize() for w in name.split('-'))}"] = 1 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else None
        rows.append(row)
    return pd.DataFrame(rows)
