"""Device and precision: a run computes where it is told, in the precision it is told, and says so.

The device test runs the edge methods on PyTorch's ``meta`` device (shapes, no values): every tensor
an operation makes must be on it, and the only way back to the host is the scores' one copy per
pass. A tensor made on the CPU inside a method (a hard-coded ``"cpu"``, a ``torch.zeros`` with no
device) mixes devices and fails, or is caught by the recorder here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from atlas.errors import ValidationError
from atlas.stats import spearman
from ingest.edges.methods import MethodConfig, compute_eap, compute_eap_ig, compute_eap_ig_activations, compute_patching
from ingest.model.device import activation_budget, place_model, placement, resolve_device, resolve_dtype
from ingest.model.graph import build_graph
from ingest.model.tasks import InductionTask, logit_metric
from tests.conftest import make_tiny

KEY = ["componentId_pre", "componentId_post", "channel"]


class DeviceRecorder(TorchFunctionMode):
    """Records the device of every tensor an operation returns; a copy of a ``meta`` tensor to the
    host (the scores coming back) returns zeros of its shape and is counted, not recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, set[str]] = {}
        self.to_host = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        this = args[0] if args and isinstance(args[0], torch.Tensor) else None
        to_cpu = name == "cpu" or (name == "to" and any(str(a) == "cpu" for a in (*args[1:], *kwargs.values())))
        if this is not None and this.device.type == "meta" and to_cpu:
            self.to_host += 1
            return torch.zeros(this.shape, dtype=this.dtype)
        if name in ("numpy", "tolist", "item", "__float__", "__int__", "__bool__") and this is not None and this.device.type == "meta":
            raise AssertionError(f"{name}() on a device tensor: values leave the device outside the scores' copy")
        out = func(*args, **kwargs)
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.devices.setdefault(t.device.type, set()).add(name)
        return out


def _meta_run(fn: Any, config: MethodConfig = MethodConfig(steps=2)) -> tuple[Any, DeviceRecorder]:
    model = make_tiny(3)
    graph = build_graph(model, "tiny")
    batch = InductionTask().make_batch(model, 3, 0)
    place_model(model, torch.device("meta"))
    assert model.cfg.device == "meta" and next(model.parameters()).device.type == "meta"
    recorder = DeviceRecorder()
    with recorder:
        frame = fn(model, graph, InductionTask(), batch.to("meta"), config)
    return frame, recorder


@pytest.mark.parametrize("fn", [compute_eap, compute_eap_ig, compute_eap_ig_activations, compute_patching])
def test_every_tensor_of_a_run_lives_on_the_requested_device(fn: Any) -> None:
    frame, recorder = _meta_run(fn)
    assert set(recorder.devices) == {"meta"}, {k: sorted(v)[:8] for k, v in recorder.devices.items() if k != "meta"}
    assert 1 <= recorder.to_host <= 40  # the scores (and per chunk, the patched metrics) come back, nothing else
    assert len(frame) > 0 and (frame["score"] == 0).all()  # the host copies of meta scores are the recorder's zeros


def test_the_recorder_catches_a_tensor_made_on_the_host() -> None:
    """The device test's own oracle: a method that makes one tensor on the CPU is caught."""

    def leaky(model: Any, graph: Any, task: Any, batch: Any, config: MethodConfig) -> Any:
        torch.zeros(3)  # a tensor with no device: the CPU's
        return compute_eap(model, graph, task, batch, config)

    _, recorder = _meta_run(leaky)
    assert "cpu" in recorder.devices


def test_per_position_edges_stay_on_the_device_too() -> None:
    _, recorder = _meta_run(compute_eap, MethodConfig(per_position=True))
    assert set(recorder.devices) == {"meta"}


def test_bfloat16_scores_track_float32_and_metrics_accumulate_in_float32() -> None:
    model = make_tiny(5)
    graph = build_graph(model, "tiny")
    task = InductionTask()
    batch = task.make_batch(model, 8, 0)
    full = {name: fn(model, graph, task, batch, MethodConfig()).set_index(KEY)["score"]
            for name, fn in (("eap", compute_eap), ("eap-ig", compute_eap_ig), ("patching", compute_patching))}
    place_model(model, "cpu", "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.cfg.dtype == torch.bfloat16
    assert task.metric(model(batch.clean), batch).dtype == torch.float32
    assert logit_metric(model(batch.clean).float(), batch).dtype == torch.float32
    for name, fn in (("eap", compute_eap), ("eap-ig", compute_eap_ig), ("patching", compute_patching)):
        half = fn(model, graph, task, batch, MethodConfig()).set_index(KEY)["score"].loc[full[name].index]
        assert half.dtype == np.float64 and np.isfinite(half).all()
        assert spearman(full[name], half) > 0.98, name
        assert (full[name] - half).abs().max() < 0.1 * full[name].abs().max(), name


def test_a_bfloat16_model_keeps_its_identity(tmp_path: Path) -> None:
    from ingest.model.loading import load_model

    f32 = load_model("induction-2l", tmp_path, device="cpu")
    bf16 = load_model("induction-2l", tmp_path, device="cpu", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.weights_hash == f32.weights_hash and bf16.model_id == f32.model_id


def test_device_and_dtype_are_checked_in_one_line() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValidationError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValidationError, match="--device meta holds shapes and no values"):
        resolve_device("meta")  # a user's --device meta is one line, not a traceback at the end of the run
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(ValidationError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")
    with placement("cpu", "bfloat16"):
        assert resolve_dtype() == torch.bfloat16 and resolve_device() == torch.device("cpu")
    assert resolve_dtype() == torch.float32


def test_the_activation_budget_follows_the_memory_there_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.model.device as device

    monkeypatch.delenv(device.BUDGET_ENV, raising=False)
    monkeypatch.setattr(device, "_available_memory", lambda: 15 * 2**30)
    assert activation_budget("cpu") == 5 * 2**30  # a third: the pass's activations, gradients and backward buffers
    monkeypatch.setattr(device, "_available_memory", lambda: 60 * 2**30)
    assert activation_budget("cpu") == 20 * 2**30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU check runs where one is lent)")
def test_a_run_on_cuda_matches_the_cpu() -> None:
    model = make_tiny(7)
    graph = build_graph(model, "tiny")
    task = InductionTask()
    batch = task.make_batch(model, 4, 0)
    cpu = compute_eap_ig(model, graph, task, batch, MethodConfig()).set_index(KEY)["score"]
    place_model(model, "cuda")
    gpu = compute_eap_ig(model, graph, task, batch.to("cuda"), MethodConfig()).set_index(KEY)["score"].loc[cpu.index]
    assert (cpu - gpu).abs().max() < 1e-3 * cpu.abs().max()


def test_the_gpu_benchmark_runs_where_there_is_no_gpu_in_smoke_form() -> None:
    """``python -m bench --only gpu`` is prepared here and run where a GPU is lent: its code runs on the CPU."""
    from bench.gpu import bench_gpu

    rows = bench_gpu(smoke=True)
    assert [r["prompts"] for r in rows if r["device"] == "cpu"] == [2, 4]
    assert all(r["EAP / bare passes"] > 0 and r["EAP-IG(5) / bare passes"] > 0 for r in rows)
