"""The model interface the edge methods are written against, and the one edge table they return.

An edge ``u -> v`` is ``u``'s effect on the task metric through ``v``'s input. What differs between
model families is *how* a sender's output reaches a receiver's input:

- pre-LN decoders (:mod:`ingest.edges.decoder`): every input is a sum of earlier outputs read through
  the receiver's own norm, so ``v``'s input moves by ``u``'s output change itself;
- post-LN encoders (:mod:`ingest.edges.encoder`): the stream is renormalised after each sublayer,
  so ``u``'s change reaches ``v`` through the *wire* (the adds and norms between them).

A :class:`ModelInterface` supplies, for one family: the senders' outputs, the input changes a patched
run applies and the patched runs themselves (``patched_metrics``), and the attribution scores of the
gradient methods. Exact patching and EAP are written once, in :mod:`ingest.edges.methods`, over it:
the tiling by memory budget, the model's state (eval mode, frozen weights, both restored) and the
edge table are the same for every family. :func:`interface_for` is the one place that decides which
family a model belongs to.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ModelError, ValidationError
from atlas.frames import validate_edges
from atlas.schema import ModelFamily
from ingest.model.graph import ModelGraph
from ingest.model.tasks import PromptBatch

__all__ = ["ModelInterface", "GradientScores", "Progress", "interface_for", "sender_outputs", "analysis_mode",
           "restores_model", "edge_frame", "copy_elements"]

Progress = Callable[[int], None]


GradientScores = tuple[np.ndarray, np.ndarray, np.ndarray | None]
"""``(score [sender, receiver], scored mask, per-prompt scores [sender, prompt, receiver] or None)``."""


class ModelInterface(ABC):
    """What the edge methods need from one model family (see the module docstring)."""

    family: ModelFamily

    @abstractmethod
    def sender_outputs(self, model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
        """Every sender's output ``[batch, pos, sender, d_model]``, in sender-index order (no grad)."""

    @abstractmethod
    def prepare_patching(self, model: Any, graph: ModelGraph, batch: PromptBatch, delta: torch.Tensor) -> Any:
        """What :meth:`patched_metrics` needs to move a receiver's input by a sender's change
        ``delta`` (``[batch, pos, sender, d_model]``, replacement minus clean output)."""

    @abstractmethod
    def patched_metrics(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, prepared: Any,
                        part: list[tuple[int, int] | None]) -> np.ndarray:
        """The metric per copy and prompt (``[len(part), batch]``) of one forward over ``len(part)``
        copies of the batch, each with edge ``(sender, receiver)`` patched (``None``: left clean)."""

    @abstractmethod
    def gradient_scores(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, alphas: list[float],
                        progress: Progress | None, interpolate: str, per_prompt: bool) -> GradientScores:
        """Attribution scores ``delta_u . mean_alpha grad_v`` of every edge (EAP: ``alphas = [1]``;
        EAP-IG: the integration points, over ``inputs`` or ``activations``)."""

    def positional_frame(self, model: Any, graph: ModelGraph, task: Any, batch: PromptBatch, alphas: list[float],
                         progress: Progress | None, interpolate: str) -> pd.DataFrame:
        """The edges resolved by position pair (``srcPos``, ``dstPos``); a family that has none says so."""
        raise ValidationError(f"per-position edges are offered for decoders, not for {self.family.value}s")


def copy_elements(model: Any, graph: ModelGraph, batch: PromptBatch) -> int:
    """Floats one patched copy of the prompts allocates for its input changes (a head layer's
    ``[batch, pos, head, d_model]``): what the patching budget is divided by."""
    b, p = batch.clean.shape
    return b * p * max(graph.n_heads, 1) * model.cfg.d_model


def interface_for(model: Any) -> ModelInterface:
    """The interface of ``model``'s family: the one place that tells an encoder from a decoder."""
    from ingest.model.family import is_encoder

    if is_encoder(model):
        from ingest.edges.encoder import EncoderInterface

        return EncoderInterface()
    from ingest.edges.decoder import DecoderInterface

    return DecoderInterface()


def sender_outputs(model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
    """Every sender's output ``[batch, pos, sender, d_model]`` for ``model``'s family (no grad)."""
    return interface_for(model).sender_outputs(model, graph, tokens)


@contextlib.contextmanager
def analysis_mode(model: Any) -> Iterator[None]:
    """Put ``model`` in eval mode with frozen weights for a measurement, and give it back as it came:
    its train flag and every parameter's ``requires_grad`` are restored on exit (even on error).

    A grouped-query attention model is measured in TransformerLens's ungrouped view (each query
    head computes its own copy of its group's key and value: the same numbers), so a head's k and v
    inputs can be moved one head at a time: the edge ``u -> L.Hh [k]`` is ``u``'s effect through the
    key head ``h`` reads, the group's other heads reading the clean key."""
    was_training = bool(model.training)
    grads = [(p, p.requires_grad) for p in model.parameters()]
    grouped = getattr(model.cfg, "n_key_value_heads", None) not in (None, model.cfg.n_heads)
    was_ungrouped = bool(getattr(model.cfg, "ungroup_grouped_query_attention", False))
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    if grouped:
        model.cfg.ungroup_grouped_query_attention = True
    try:
        yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was_training)
        if grouped:
            model.cfg.ungroup_grouped_query_attention = was_ungrouped


def restores_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn(model, ...)`` inside :func:`analysis_mode` of its first argument."""

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        with analysis_mode(model):
            return fn(model, *args, **kwargs)

    return wrapper


def edge_frame(graph: ModelGraph, score: np.ndarray, scored: np.ndarray, per_prompt: np.ndarray | None = None) -> pd.DataFrame:
    """Turn a ``[n_senders, n_receivers]`` score matrix into an edge frame of the ``scored`` entries.

    "Not an edge" is the mask's business, never a value's: a scored edge whose score is NaN or
    infinite stops the run (a model with NaN/Inf weights or activations) instead of vanishing.

    Raises:
        ModelError: some scored edge is not finite.
    """
    bad = scored & ~np.isfinite(score)
    if per_prompt is not None:
        bad |= scored & ~np.isfinite(per_prompt).all(axis=1)
    if bad.any():
        s, r = np.argwhere(bad)[0]
        raise ModelError(
            f"{int(bad.sum())} of {int(scored.sum())} edge scores are not finite (NaN or Inf), e.g. "
            f"{graph.senders[s].component_id} -> {graph.receivers[r].component_id} [{graph.receivers[r].channel.value}]: "
            "the model's weights or activations hold NaN/Inf on these prompts; nothing was written"
        )
    src, dst = np.nonzero(scored)
    frame = pd.DataFrame(
        {
            "componentId_pre": np.array([x.component_id for x in graph.senders], dtype=object)[src],
            "componentId_post": np.array([x.component_id for x in graph.receivers], dtype=object)[dst],
            "channel": np.array([x.channel.value for x in graph.receivers], dtype=object)[dst],
            "score": score[src, dst].astype(float),
        }
    )
    if per_prompt is not None:  # [sender, prompt, receiver]
        frame["promptScores"] = [per_prompt[i, :, j].astype(float).tolist() for i, j in zip(src, dst)]
    return validate_edges(frame)


