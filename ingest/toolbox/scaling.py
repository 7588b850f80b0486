"""Scaling: one zoo recipe trained at several sizes and seeds, each member measured the same way.

The family is ``induction-2l``'s recipe (two attention-only layers, the previous-token head L0.H0
hand-set, the rest learned on repeated random segments) with ``n_heads`` per layer as the size; the
seed sets both the initialisation and the data order. Members are trained deterministically and
kept under ``ATLAS_HOME/scaling/induction-hH-sS`` (``config.json`` + ``model.pt``: any command loads
them as model folders). Each member is measured on the ``induction`` task: its EAP-IG edges, zero-
ablation lesions of every head, head role scores, and its final training loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from atlas.errors import ValidationError

__all__ = ["Member", "member_folder", "train_member", "measure_member"]


@dataclass(frozen=True)
class Member:
    """One trained family member and what was measured on it."""

    size: int
    seed: int
    folder: Path
    model_id: str
    edges: pd.DataFrame
    lesions: pd.DataFrame
    roles: dict[str, dict[str, float]]
    final_loss: float


def member_folder(home: Path, size: int, seed: int, steps: int) -> Path:
    return home / "scaling" / f"induction-h{size}-s{seed}-{steps}steps"


def train_member(home: Path, size: int, seed: int, steps: int) -> Path:
    """Train (once; a saved member is reused) the ``size``-head, ``seed`` member of the family."""
    from ingest.model.zoo import _induction_config, _train_induction

    if not 1 <= size <= 64:
        raise ValidationError(f"family sizes are heads per layer, 1..64; got {size}")
    folder = member_folder(home, size, seed, steps)
    if (folder / "model.pt").exists() and (folder / "config.json").exists():
        return folder
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    config = {**_induction_config(), "n_heads": size, "seed": seed}
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = HookedTransformer(HookedTransformerConfig(**config))
        figures = _train_induction(model, steps, seed=seed)  # the zoo recipe itself, at this width and seed
    finally:
        torch.use_deterministic_algorithms(was)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "training.json").write_text(json.dumps({"size": size, "seed": seed, "steps": steps, **figures}))
    return folder


def measure_member(home: Path, size: int, seed: int, steps: int, n_prompts: int = 16) -> Member:
    """EAP-IG edges, zero-ablation head lesions and role scores of a trained member on ``induction``."""
    from ingest.edges.interventions import ablated_outputs, compute_node_lesions
    from ingest.edges.methods import MethodConfig, compute_eap_ig
    from ingest.model.context import load_context
    from ingest.model.zoo import head_role_scores

    folder = train_member(home, size, seed, steps)
    ctx = load_context(str(folder), "induction", n_prompts, 0, home)
    loaded, task, batch, graph = ctx.loaded, ctx.task, ctx.batch, ctx.graph
    model: Any = loaded.model
    edges = compute_eap_ig(model, graph, task, batch, MethodConfig(steps=5))
    lesions = compute_node_lesions(model, graph, task, batch, ablated_outputs(model, graph, batch, "zero"))
    roles = head_role_scores(model)
    loss = json.loads((folder / "training.json").read_text())["finalLoss"]
    return Member(size, seed, folder, loaded.model_id, edges, lesions, roles, float(loss))
