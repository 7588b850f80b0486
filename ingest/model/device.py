"""Where a run computes and in what precision: the device and dtype rules, in one place.

- ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``,
  resolved once per run and passed down; the model, its hooks, the task's prompts, dictionaries and
  every intermediate live there, and scores come back to the CPU once per pass.
- ``dtype``: the weights' precision, ``float32`` (default), ``bfloat16`` or ``float16``. Metrics and
  the attribution contractions (sender change x receiver gradient) are accumulated in float32
  whatever the weights are.
- The activation budget (how many prompts one pass may take) defaults from the device's free memory
  (CUDA) or the machine's available memory, not a constant; ``ATLAS_ACTIVATION_BUDGET`` overrides it.

A command sets the defaults for everything it loads with :func:`placement` (the CLI's ``--device`` and
``--dtype``); the Python API takes ``device=``/``dtype=`` where a model is loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

import torch

from atlas.errors import ValidationError

__all__ = ["DTYPES", "DEVICES", "resolve_device", "resolve_dtype", "placement", "default_device", "default_dtype", "place_model",
           "activation_budget", "BUDGET_ENV", "accumulate"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
BUDGET_ENV = "ATLAS_ACTIVATION_BUDGET"

_device: contextvars.ContextVar[str] = contextvars.ContextVar("atlas_device", default="auto")
_dtype: contextvars.ContextVar[str] = contextvars.ContextVar("atlas_dtype", default="float32")


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The device ``spec`` names (default: the :func:`placement` in force, ``auto`` unless set). A
    ``torch.device`` is taken as it is (the tests place models on ``meta``, which no command offers).

    Raises:
        ValidationError: an unknown device, or one this machine does not have.
    """
    if isinstance(spec, torch.device):
        return spec
    text = (spec or _device.get()).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValidationError(f"unknown device {text!r}: choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValidationError(f"--device {text}: no CUDA device is available here (torch {torch.__version__}); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValidationError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValidationError("--device mps: Apple's Metal backend is not available here; use cpu or auto")
    elif device.type == "meta":
        raise ValidationError("--device meta holds shapes and no values, so there would be no scores: choose auto, cpu, cuda, cuda:N or mps")
    elif device.type != "cpu":
        raise ValidationError(f"unknown device {text!r}: choose auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | torch.dtype | None = None) -> torch.dtype:
    """The weights' dtype ``name`` names (default: the :func:`placement` in force, ``float32``).

    Raises:
        ValidationError: a dtype the atlas does not compute in.
    """
    if isinstance(name, torch.dtype):
        return name
    text = (name or _dtype.get()).strip().lower().removeprefix("torch.")
    if text not in DTYPES:
        raise ValidationError(f"unknown dtype {text!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[text]


def default_device() -> str:
    """The device spec in force (``auto`` unless a :func:`placement` says otherwise)."""
    return _device.get()


def default_dtype() -> str:
    """The dtype name in force (``float32`` unless a :func:`placement` says otherwise)."""
    return _dtype.get()


@contextlib.contextmanager
def placement(device: str | None = None, dtype: str | None = None) -> Iterator[None]:
    """Within the block, models load onto ``device`` in ``dtype`` unless a call names its own (both
    checked here, so a bad flag fails before anything loads)."""
    tokens = []
    if device is not None:
        resolve_device(device)
        tokens.append((_device, _device.set(device)))
    if dtype is not None:
        resolve_dtype(dtype)
        tokens.append((_dtype, _dtype.set(dtype)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def place_model(model: Any, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Any:
    """``model`` (a TransformerLens model) moved to ``device`` and cast to ``dtype`` (its config
    updated, as TransformerLens's own ``to`` does); returns it."""
    from transformer_lens.utilities.devices import move_to_and_update_config

    target = resolve_device(device)
    precision = resolve_dtype(dtype)
    current = next(iter(model.parameters()))
    if current.device != target:  # the device as a string keeps its index (cuda:1) in the config, which TransformerLens moves inputs to
        move_to_and_update_config(model, str(target), print_details=False)
    if current.dtype != precision:
        move_to_and_update_config(model, precision, print_details=False)
    return model


def activation_budget(device: str | torch.device | None = None) -> int:
    """Bytes one pass of a gradient method may hold in activations, gradients and the backward's
    buffers (:func:`ingest.edges.shards.pass_bytes_per_prompt` per prompt): ``$ATLAS_ACTIVATION_BUDGET``
    (``512m``, ``8g`` or bytes), else half of the CUDA device's free memory, else a third of the
    memory this machine has available (the rest is for the model, the process and everything else).

    Raises:
        ValidationError: the variable is not a size.
    """
    raw = os.environ.get(BUDGET_ENV, "").strip().lower()
    if raw:
        scale = {"k": 2**10, "m": 2**20, "g": 2**30}.get(raw[-1], 1)
        digits = raw[:-1] if raw[-1] in "kmg" else raw
        if not digits.isdigit() or int(digits) < 1:
            raise ValidationError(f"{BUDGET_ENV} must be a size such as 512m or 8g, got {raw!r}")
        return int(digits) * scale
    target = resolve_device(device)
    if target.type == "cuda":
        free, _ = torch.cuda.mem_get_info(target)
        return max(2**26, free // 2)
    return max(2**26, _available_memory() // 3)


def _available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; the physical total elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def accumulate(t: torch.Tensor) -> torch.Tensor:
    """``t`` in the precision sums are accumulated in: half precision widened to float32, float32 and
    float64 kept as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
