"""Population coding: how similarly components represent the same stimuli (RSA, CKA, CCA).

Stimuli are the (sequence, position) rows of the probe set (:mod:`ingest.toolbox.probes`); a component's
representation is what it writes into the residual stream there (``[stimuli, d_model]``); a layer's
is the residual stream after it. All measures compare two representations of the same stimuli in the
same row order (docs/architecture.md, science notes):
  - linear CKA (Kornblith et al. 2019): ``|Y'X|_F^2 / (|X'X|_F |Y'Y|_F)`` on column-centred X, Y;
    invariant to rotation, isotropic scaling and translation; biased upward when features >> stimuli,
    so the debiased HSIC form (Song et al. 2012) is offered (``debiased=True``);
  - CCA: mean of the singular values of ``Q_X' Q_Y`` (orthonormal bases of the centred views);
    invariant to any invertible linear map, hence trivially 1 when features >= stimuli, so it refuses
    unless stimuli > 4x features, and SVCCA (Raghu et al. 2017) first keeps the top singular
    directions covering 99% of the variance;
  - RSA (Kriegeskorte et al. 2008): RDMs of 1 - Pearson correlation between stimuli, compared by
    Spearman correlation of their upper triangles (on a seeded subset of stimuli).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ValidationError
from atlas.stats import spearman
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_outputs

__all__ = ["linear_cka", "linear_cka_matrix", "cca_similarity", "rsa_similarity", "representations", "population_tables"]


def _centre(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValidationError(f"representations must be [stimuli, features], got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True)


def _check(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValidationError(f"representations must share their stimuli (rows): {x.shape[0]} vs {y.shape[0]}")
    if x.shape[0] < 4:
        raise ValidationError("at least 4 stimuli are needed")


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) on Gram matrices with zeroed diagonals."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones = np.ones(n)
    term = np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) - 2 * (ones @ k @ l @ ones) / (n - 2)
    return float(term / (n * (n - 3)))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same stimuli (see module docstring); NaN when
    either is constant."""
    _check(x, y)
    xc, yc = _centre(x), _centre(y)
    if debiased:
        kx, ky = xc @ xc.T, yc @ yc.T
        hxy, hxx, hyy = _hsic_unbiased(kx, ky), _hsic_unbiased(kx, kx), _hsic_unbiased(ky, ky)
        return float(hxy / np.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else float("nan")
    nx, ny = np.linalg.norm(xc.T @ xc), np.linalg.norm(yc.T @ yc)
    if nx <= 0 or ny <= 0:
        return float("nan")
    return float(linear_cka_matrix(xc[None], np.array([nx]), yc[None], np.array([ny]))[0, 0])


def linear_cka_matrix(xa: np.ndarray, na: np.ndarray, xb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Linear CKA ``|y'x|_F^2 / (|x'x|_F |y'y|_F)`` of every pair of ``k_a`` and ``k_b`` column-centred
    representations ``xa`` ``[k_a, rows, d]``, ``xb`` ``[k_b, rows, d']`` with their ``|x'x|_F`` norms
    ``na``, ``nb``: ``[k_a, k_b]``, 0 next to a constant one.

    Feature space when the widths are small next to the stimuli (``[k, k', d, d']`` cross products),
    else Gram space (``<x x', y y'>`` on ``[rows, rows]``), whichever is cheaper."""
    (ka, rows, d), (kb, _, d2) = xa.shape, xb.shape
    if d * d2 <= rows * rows:  # one matrix product: [ka d, rows] @ [rows, kb d']
        cross = xa.transpose(0, 2, 1).reshape(ka * d, rows) @ xb.transpose(1, 0, 2).reshape(rows, kb * d2)
        num = (cross.reshape(ka, d, kb, d2) ** 2).sum(axis=(1, 3))
    else:
        ga = (xa @ xa.transpose(0, 2, 1)).reshape(ka, -1)
        gb = (xb @ xb.transpose(0, 2, 1)).reshape(kb, -1)
        num = ga @ gb.T
    den = na[:, None] * nb[None, :]
    return np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), 0.0, 1.0)


def _basis(x: np.ndarray, keep: float | None) -> np.ndarray:
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int((s > s[0] * 1e-10).sum()) if s.size and s[0] > 0 else 0
    if keep is not None and rank:
        energy = np.cumsum(s[:rank] ** 2) / (s[:rank] ** 2).sum()
        rank = int(np.searchsorted(energy, keep) + 1)
    return u[:, :rank]


def cca_similarity(x: np.ndarray, y: np.ndarray, svcca: float | None = 0.99) -> float:
    """Mean canonical correlation (SVCCA with ``svcca`` variance kept; None for plain CCA)."""
    _check(x, y)
    if x.shape[0] <= 4 * max(x.shape[1], y.shape[1]) and svcca is None:
        raise ValidationError("CCA needs many more stimuli than features (else it is trivially 1); use SVCCA or more stimuli")
    qx, qy = _basis(_centre(x), svcca), _basis(_centre(y), svcca)
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return float("nan")
    if x.shape[0] <= 4 * max(qx.shape[1], qy.shape[1]):
        raise ValidationError("CCA needs many more stimuli than kept directions (else it is trivially 1)")
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(np.clip(rho, 0, 1).mean())


def rsa_similarity(x: np.ndarray, y: np.ndarray, max_stimuli: int = 256, seed: int = 0) -> float:
    """Spearman correlation of the upper triangles of the two 1 - Pearson RDMs."""
    _check(x, y)
    idx = np.random.default_rng(seed).permutation(x.shape[0])[:max_stimuli]

    def rdm(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)[idx]
        z = z - z.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(norm > 0, norm, 1.0)
        return 1.0 - z @ z.T

    iu = np.triu_indices(len(idx), k=1)
    return spearman(rdm(x)[iu], rdm(y)[iu])


@torch.no_grad()
def representations(model: Any, model_id: str, layer: int | None = None, n: int = 32, seed: int = 7) -> dict[str, np.ndarray]:
    """``{name: [stimuli, d_model]}``: head and MLP outputs of ``layer`` (all layers when None), and
    the residual stream after each layer (``resid L{l}``), on the probe set."""
    from atlas.ids import component_id
    from atlas.schema import ComponentKind
    from ingest.toolbox.probes import probe_tokens

    cfg = model.cfg
    layers = range(cfg.n_layers) if layer is None else [layer]
    if layer is not None and not 0 <= layer < cfg.n_layers:
        raise ValidationError(f"layer {layer} is outside the model's 0..{cfg.n_layers - 1}")
    tokens = probe_tokens(model, n=n, seed=seed)
    _, cache = model.run_with_cache(tokens, names_filter=lambda h: h.endswith(("hook_z", "hook_mlp_out", "hook_resid_post")))
    out: dict[str, np.ndarray] = {}
    for l in layers:
        heads = head_outputs(model, l, cache[hook_name("z", l)])
        for h in range(cfg.n_heads):
            out[component_id(model_id, ComponentKind.HEAD, layer=l, head=h)] = heads[:, :, h].reshape(-1, cfg.d_model).double().cpu().numpy()
        if not cfg.attn_only:
            out[component_id(model_id, ComponentKind.MLP, layer=l)] = cache[hook_name("mlp_out", l)].reshape(-1, cfg.d_model).double().cpu().numpy()
    for l in range(cfg.n_layers):
        out[f"resid L{l}"] = cache[hook_name("resid_post", l)].reshape(-1, cfg.d_model).double().cpu().numpy()
    return out


def population_tables(reps: dict[str, np.ndarray], debiased: bool = False) -> dict[str, pd.DataFrame]:
    """Pairwise RSA, CKA and CCA: ``components`` (heads/MLPs among themselves) and ``layers`` (residual streams)."""
    tables = {}
    for name, keys in (("components", [k for k in reps if not k.startswith("resid ")]), ("layers", [k for k in reps if k.startswith("resid ")])):
        rows = []
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                rows.append({"a": a, "b": b, "cka": linear_cka(reps[a], reps[b], debiased=debiased),
                             "cca": cca_similarity(reps[a], reps[b]), "rsa": rsa_similarity(reps[a], reps[b])})
        tables[name] = pd.DataFrame(rows, columns=["a", "b", "cka", "cca", "rsa"])
    return tables
