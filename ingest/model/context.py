"""The one way a job or study gets what it measures on: the loaded model, its component graph, the
task and its prompts, checked against the model (vocabulary, context, output tokens)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import ValidationError

__all__ = ["StudyContext", "load_context", "resolve_task", "check_batch_fits"]


@dataclass(frozen=True)
class StudyContext:
    """What a study measures on: the loaded model, its component graph, the task and its prompts."""

    loaded: Any
    graph: Any
    task: Any
    batch: Any
    task_name: str = ""


def resolve_task(task: str, model: str) -> str:
    """``default`` means the zoo model's own task (``NAME@STEP`` checkpoints included)."""
    if task != "default":
        return task
    from ingest.model.zoo import ZOO

    name = model.split("@", 1)[0]
    if name not in ZOO:
        raise ValidationError(f"--task default needs a zoo model ({', '.join(sorted(ZOO))}); {model!r} has no task of its own")
    return ZOO[name].task


def check_batch_fits(loaded: Any, batch: Any) -> None:
    """Refuse prompts the model cannot read or targets it cannot predict, in one line."""
    cfg = loaded.model.cfg
    if int(batch.clean.max()) >= cfg.d_vocab or int(batch.corrupted.max()) >= cfg.d_vocab:
        raise ValidationError(f"the task's prompts hold token {max(int(batch.clean.max()), int(batch.corrupted.max()))}, but "
                              f"{loaded.model_id} reads {cfg.d_vocab} tokens (0..{cfg.d_vocab - 1})")
    if batch.clean.shape[1] > cfg.n_ctx:
        raise ValidationError(f"the task's prompts are {batch.clean.shape[1]} tokens long, but {loaded.model_id}'s context holds {cfg.n_ctx}")
    scored = batch.targets[batch.mask]
    if scored.numel() and int(scored.max()) >= cfg.d_vocab_out:
        raise ValidationError(f"the task's targets reach token {int(scored.max())}, but {loaded.model_id} predicts "
                              f"{cfg.d_vocab_out} output tokens (0..{cfg.d_vocab_out - 1}): give a task whose targets it can predict")


def load_context(model: str, task: str, n_prompts: int, seed: int, home: Path, *, metric: str = "logit", model_id: str | None = None,
                 progress: Callable[[int, str], Any] | None = None, graph: bool = True, loaded: Any = None,
                 device: str | None = None, dtype: str | None = None) -> StudyContext:
    """Load ``model`` (or take ``loaded``), build ``task`` (``default``: a zoo model's own) with ``metric``
    and ``n_prompts`` prompts drawn with ``seed`` onto the model's device (``device``/``dtype``: see
    :func:`ingest.model.loading.load_model`), attach what the metric needs from the clean model, check
    the prompts fit the model, and build the head-level component graph (unless ``graph=False``).

    Raises:
        ModelError, TaskError, ValidationError: an unknown model or task, prompts the model cannot read.
    """
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model
    from ingest.model.tasks import get_task, prepare_batch

    task_name = resolve_task(task, model)
    task_obj = get_task(task_name, metric)
    if loaded is None:
        loaded = load_model(model, home, progress, model_id=model_id, device=device, dtype=dtype)
    batch = task_obj.make_batch(loaded.model, n_prompts, seed)
    check_batch_fits(loaded, batch)  # on the host: the values are checked before they move
    batch = prepare_batch(loaded.model, batch.to(loaded.device), metric)
    return StudyContext(loaded, build_graph(loaded.model, loaded.model_id) if graph else None, task_obj, batch, task_name)
