"""Functional alignment: match two models' components by what they compute on shared stimuli.

1. Stimuli: token sequences both models accept (the compared runs' own task prompts where both
   vocabularies and contexts hold them, else repeated random tokens from the shared vocabulary);
   rows are (sequence, position), at most ``max_rows`` of them (seeded subsample).
2. Representation of a head or an MLP: what it writes into the residual stream there
   (``[rows, d_model]``); models of different widths compare fine, because:
3. Similarity: linear CKA (Kornblith et al. 2019) = cosine of the centred Gram matrices
   ``K = X X'``: invariant to rotations and isotropic scaling of either side. Optionally combined
   with relative depth: ``score = (1 - w) CKA + w (1 - |depth_a - depth_b|)``.
4. Assignment: within each kind (heads with heads, MLPs with MLPs), the Hungarian algorithm on
   ``-score`` gives candidate pairs (silent components, whose output is constant, take part in none);
   a candidate whose similarity is below ``threshold`` is dropped, and one the null does not reject
   (step 5) is not a match unless ``require_significant`` is off, so components may stay unmatched.
   The embedding and the logits are matched to each other by identity.
5. Null: the matched similarity is tested against ``n_null`` random re-initialisations of model
   B's architecture on the same stimuli. For each null model, component ``i`` of A gets its *best*
   score against that model's components of the same kind (the maximum the assignment could have
   picked), so ``p_i = (1 + #{null best >= observed}) / (1 + n_null)``; ``q`` is the
   Benjamini-Hochberg adjustment over the kept pairs; ``significant`` is ``q < alpha``.

Why not a stimulus-permutation null: two unrelated random models have CKA 0.1-0.3 between their
heads (both are functions of the same tokens and positions) while shuffling the stimuli gives
~0.008, so every pair would be "significant". Random models of B's architecture share exactly that
generic input dependence, so only what a component computes beyond it counts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from atlas.errors import ValidationError
from atlas.ids import component_id, local_id
from atlas.schema import ComponentKind
from ingest.model.hooks import hook_name
from ingest.model.outputs import head_outputs

__all__ = ["Alignment", "functional_alignment", "component_outputs", "shared_stimuli"]


@dataclass(frozen=True)
class Alignment:
    """Candidate pairs (``frame``: ``componentId_a, componentId_b, kind, similarity, score, p, null95,
    q, significant, matched, method``; only ``matched`` rows align), the components left unmatched
    on each side, and the figures of the procedure (stimuli, null size, threshold, ...)."""

    frame: pd.DataFrame
    unmatched_a: tuple[str, ...] = ()
    unmatched_b: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


def shared_stimuli(model_a: Any, model_b: Any, prompts: list[torch.Tensor], n_fallback: int = 32,
                   seed: int = 7) -> tuple[list[torch.Tensor], str]:
    """Token batches both models accept: the given prompt batches (kept where every token is in both
    vocabularies and the length fits both contexts), else repeated random tokens of the shared
    vocabulary. Returns (batches, what they are)."""
    vocab = min(int(model_a.cfg.d_vocab), int(model_b.cfg.d_vocab))
    ctx = min(int(model_a.cfg.n_ctx), int(model_b.cfg.n_ctx))
    usable = [p for p in prompts if p.numel() and p.shape[1] <= ctx and int(p.max()) < vocab and p.shape[1] >= 2]
    if usable:
        lengths = sorted({int(p.shape[1]) for p in usable})
        return (list(usable), f"the runs' task prompts ({sum(len(p) for p in usable)} sequences of "
                f"{' and '.join(map(str, lengths))} tokens)")
    half = max(1, min(16, ctx // 2))
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab, (n_fallback, half), generator=gen)
    return ([torch.cat([first, first], dim=1)],
            f"repeated random tokens of the shared vocabulary ({n_fallback} x {2 * half}; the task prompts do not fit both models)")


@torch.no_grad()
def component_outputs(model: Any, model_id: str, batches: list[torch.Tensor], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{component id: [rows, d_model]}``: each head's and MLP's write into the residual stream, one
    row per (sequence, position) of ``batches`` in order (``rows`` picks some of them)."""
    cfg = model.cfg
    names = {hook_name("z", l) for l in range(cfg.n_layers)} | ({hook_name("mlp_out", l) for l in range(cfg.n_layers)} if not cfg.attn_only else set())
    parts: dict[str, list[torch.Tensor]] = {}
    for tokens in batches:
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for l in range(cfg.n_layers):
            heads = head_outputs(model, l, cache[hook_name("z", l)])
            for h in range(cfg.n_heads):
                parts.setdefault(component_id(model_id, ComponentKind.HEAD, layer=l, head=h), []).append(heads[:, :, h].reshape(-1, cfg.d_model))
            if not cfg.attn_only:
                parts.setdefault(component_id(model_id, ComponentKind.MLP, layer=l), []).append(cache[hook_name("mlp_out", l)].reshape(-1, cfg.d_model))
    index = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
    return {cid: (torch.cat(xs) if index is None else torch.cat(xs)[index]).double().cpu().numpy() for cid, xs in parts.items()}


@dataclass(frozen=True)
class _Views:
    """Centred representations of one kind of components, ready for linear CKA: ``x`` ``[k, rows,
    d]`` and ``|x'x|_F`` per component (0 for a silent one, whose output is constant)."""

    x: np.ndarray
    norms: np.ndarray

    @property
    def silent(self) -> np.ndarray:
        return self.norms <= 0

    def cka(self, other: _Views) -> np.ndarray:
        """``[k, k_other]`` linear CKA (:func:`ingest.toolbox.population.linear_cka_matrix`); 0 next to a silent component."""
        from ingest.toolbox.population import linear_cka_matrix

        return linear_cka_matrix(self.x, self.norms, other.x, other.norms)


def _views(reps: dict[str, np.ndarray], keys: list[str]) -> _Views:
    x = np.stack([reps[k] - reps[k].mean(axis=0, keepdims=True) for k in keys])
    norms = np.linalg.norm(x.transpose(0, 2, 1) @ x, axis=(1, 2))
    scale = np.abs(x).reshape(len(keys), -1).max(axis=1) if x.size else np.zeros(len(keys))
    norms = np.where(scale > 1e-12, norms, 0.0)
    return _Views(x, norms)


def _depth(cid: str, n_layers: int) -> float:
    layer = int(local_id(cid).split(".")[0][1:])
    return (layer + 1) / (n_layers + 1)


def _kinds(keys: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in keys:
        out.setdefault("mlp" if local_id(k).endswith(".MLP") else "head", []).append(k)
    return out


def _score_matrix(va: _Views, vb: _Views, da: np.ndarray, db: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray]:
    """(CKA, combined score) between every A and B component of one kind."""
    cka = va.cka(vb)
    return cka, (1 - w) * cka + w * (1 - np.abs(da[:, None] - db[None, :]))


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    if p.size == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out


def functional_alignment(
    model_a: Any, id_a: str, model_b: Any, id_b: str, tokens: list[torch.Tensor], *, threshold: float = 0.0, depth_weight: float = 0.0,
    n_null: int = 100, alpha: float = 0.05, require_significant: bool = True, max_rows: int = 512, seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Alignment:
    """Align ``model_a``'s heads and MLPs to ``model_b``'s (see module docstring).

    Raises:
        ValidationError: bad settings, or stimuli too few to compare.
    """
    if not 0 <= threshold <= 1 or not 0 <= depth_weight <= 1:
        raise ValidationError(f"--threshold and --depth-weight must lie in [0, 1], got {threshold} and {depth_weight}")
    if n_null < 1:
        raise ValidationError(f"the null needs at least one random model, got {n_null}")
    n_rows = sum(int(t.shape[0] * t.shape[1]) for t in tokens)
    if n_rows < 8:
        raise ValidationError(f"{n_rows} stimulus rows are too few to compare representations")
    rows = np.sort(np.random.default_rng(seed).permutation(n_rows)[:max_rows])
    reps_a, reps_b = component_outputs(model_a, id_a, tokens, rows), component_outputs(model_b, id_b, tokens, rows)
    kinds_a, kinds_b = _kinds(list(reps_a)), _kinds(list(reps_b))
    la, lb = int(model_a.cfg.n_layers), int(model_b.cfg.n_layers)
    pairs: list[dict[str, Any]] = []
    plan: list[tuple[str, list[str], list[str], _Views, np.ndarray]] = []
    unmatched_a: list[str] = []
    unmatched_b: list[str] = []
    for kind in sorted(set(kinds_a) | set(kinds_b)):
        ka, kb = kinds_a.get(kind, []), kinds_b.get(kind, [])
        if not ka or not kb:
            unmatched_a += ka
            unmatched_b += kb
            continue
        va, vb = _views(reps_a, ka), _views(reps_b, kb)
        da = np.array([_depth(c, la) for c in ka])
        db = np.array([_depth(c, lb) for c in kb])
        cka, score = _score_matrix(va, vb, da, db, depth_weight)
        score[va.silent, :] = -1.0  # a silent component computes nothing: it matches nothing
        score[:, vb.silent] = -1.0
        ia, ib = linear_sum_assignment(-score)
        kept_a, kept_b = set(), set()
        for i, j in zip(ia, ib):
            if score[i, j] < 0 or cka[i, j] < threshold:
                continue
            kept_a.add(i)
            kept_b.add(j)
            pairs.append({"componentId_a": ka[i], "componentId_b": kb[j], "kind": kind, "similarity": float(cka[i, j]),
                          "score": float(score[i, j]), "_row": i, "_kind": kind})
        unmatched_a += [c for i, c in enumerate(ka) if i not in kept_a]
        unmatched_b += [c for j, c in enumerate(kb) if j not in kept_b]
        plan.append((kind, ka, kb, va, da))
    # the null: random models of B's architecture, each giving every A component its best score
    exceed = {(p["_kind"], p["_row"]): 0 for p in pairs}
    observed = {(p["_kind"], p["_row"]): p["score"] for p in pairs}
    null_best: dict[tuple[str, int], list[float]] = {k: [] for k in exceed}
    if pairs:
        for null in _random_like(model_b, n_null, seed=10_000 * (seed + 1)):
            reps_r = component_outputs(null, "null", tokens, rows)
            kinds_r = _kinds(list(reps_r))
            for kind, _ka, _kb, va, da in plan:
                kr = kinds_r.get(kind, [])
                if not kr:
                    continue
                dr = np.array([_depth(c, lb) for c in kr])
                _, score_r = _score_matrix(va, _views(reps_r, kr), da, dr, depth_weight)
                best = score_r.max(axis=1)
                for key in exceed:
                    if key[0] == kind:
                        exceed[key] += int(best[key[1]] >= observed[key])
                        null_best[key].append(float(best[key[1]]))
            if progress:
                progress(1)
    frame = pd.DataFrame(pairs, columns=["componentId_a", "componentId_b", "kind", "similarity", "score", "_row", "_kind"])
    keys = list(zip(frame["_kind"], frame["_row"]))
    frame["p"] = [(1 + exceed[k]) / (1 + n_null) for k in keys]
    frame["null95"] = [float(np.quantile(null_best[k], 0.95)) if null_best[k] else float("nan") for k in keys]
    frame["q"] = _bh(frame["p"].to_numpy(dtype=float))
    frame["significant"] = frame["q"] < alpha
    frame["matched"] = frame["significant"] if require_significant else True
    frame["method"] = "functional" if depth_weight == 0 else f"functional+depth({depth_weight:g})"
    # a candidate the null does not reject leaves both its components unmatched
    unmatched_a += frame.loc[~frame["matched"], "componentId_a"].tolist()
    unmatched_b += frame.loc[~frame["matched"], "componentId_b"].tolist()
    identity = [{"componentId_a": component_id(id_a, k), "componentId_b": component_id(id_b, k), "kind": k.value, "similarity": float("nan"),
                 "score": float("nan"), "p": float("nan"), "null95": float("nan"), "q": float("nan"), "significant": False, "matched": True,
                 "method": "identity"}
                for k in (ComponentKind.EMBED, ComponentKind.LOGITS)]
    frame = pd.concat([frame.drop(columns=["_row", "_kind"]), pd.DataFrame(identity)], ignore_index=True)
    figures = {"stimulusRows": int(len(rows)), "nNull": n_null, "threshold": threshold, "depthWeight": depth_weight, "alpha": alpha,
               "nCandidates": int(len(pairs)), "nSignificant": int(frame["significant"].sum()),
               "nMatched": int(frame["matched"].sum()) - 2, "requireSignificant": require_significant,
               "null": f"{n_null} random initialisations of {id_b}'s architecture (best score per component)"}
    return Alignment(frame, tuple(sorted(unmatched_a)), tuple(sorted(unmatched_b)), figures)


def _random_like(model: Any, n: int, seed: int) -> Iterator[Any]:
    """``n`` models of ``model``'s architecture with TransformerLens's initialisation under seeds
    ``seed, seed + 1, ...`` (one model, its weight matrices drawn again each time)."""
    from transformer_lens import HookedTransformer

    cfg = copy.deepcopy(model.cfg)
    cfg.seed = seed
    null = HookedTransformer(cfg)
    null.eval()
    for r in range(n):
        null.cfg.seed = seed + r
        null.init_weights()
        yield null
