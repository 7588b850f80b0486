"""What the atlas can load, named without loading anything: zoo models and tasks.

The CLI checks a ``--model`` and ``--task`` here before it starts the database or imports torch, so
a typo costs a line, not a server start. ``tests/unit/test_cli.py`` holds these names equal to the
registries they mirror (``ingest.model.zoo.ZOO`` and ``ingest.model.tasks.TASKS``).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from atlas.errors import ModelError, TaskError

__all__ = ["ZOO_NAMES", "TASK_NAMES", "check_model_spec", "check_task_name"]

ZOO_NAMES = ("induction-2l", "binding", "modadd-1l")
TASK_NAMES = ("modadd", "induction", "induction-query", "induction-mixed", "binding", "binding-reverse",
              "ioi", "greater-than", "docstring", "sva", "gender")


def check_model_spec(spec: str) -> None:
    """Refuse a model that cannot be one: a misspelt zoo name, a zoo checkpoint without a step, a
    model file that does not exist. Anything else may be a hub name, which only loading can tell."""
    name, at, step = spec.partition("@")
    if at:
        if name in ZOO_NAMES:
            if not step.isdigit():
                raise ModelError(f"checkpoint spec {spec!r}: expected NAME@STEP, e.g. {name}@300")
            return
        if Path(spec).expanduser().exists():
            return
        if not step.removeprefix("step").isdigit():
            raise ModelError(f"checkpoint spec {spec!r}: expected NAME@stepN (a hub model's training checkpoint, e.g. "
                             f"pythia-70m@step1000) or a zoo model's NAME@STEP ({', '.join(ZOO_NAMES)})")
        return
    if spec in ZOO_NAMES or Path(spec).expanduser().exists():
        return
    if spec.endswith((".pt", ".pth", ".bin", ".safetensors", ".json")):
        raise ModelError(f"model file {spec} does not exist")
    close = difflib.get_close_matches(spec, ZOO_NAMES, n=1, cutoff=0.75)
    if close and "/" not in spec:
        raise ModelError(f"unknown model {spec!r}: did you mean the zoo model {close[0]!r}? (zoo: {', '.join(ZOO_NAMES)})")


def check_task_name(task: str) -> None:
    """Refuse a task that is neither a known name, ``default``, nor an existing prompts file."""
    if task in TASK_NAMES or task == "default":
        return
    if task.endswith(".json"):
        if not Path(task).expanduser().is_file():
            raise TaskError(f"task file {task} does not exist")
        return
    close = difflib.get_close_matches(task, TASK_NAMES, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TaskError(f"unknown task {task!r}{hint}: choose one of {', '.join(TASK_NAMES)}, 'default', or a prompts .json file")
