"""The GPU benchmark: ``python -m bench --only gpu`` on a machine with CUDA.

EAP and EAP-IG(5) on a GPT-2-small-shaped model (random weights, 16-token induction prompts) at 8, 64
and 512 prompts, each as a ratio to the bare passes it needs (2 forwards + 1 or 5 forward/backwards,
timed on the same GPU and batch), with the peak GPU memory of each; the same on the CPU beside it at
the sizes the CPU finishes in minutes. Prompts are split into passes by the device's activation
budget, as ``atlas ingest`` splits them. ``--smoke`` runs the same code on a tiny model on whatever
device there is (the test suite runs it on the CPU, so the script cannot rot).

No package registry is needed on the GPU machine: ``bench/gpu-deps.sh`` (run where there is one)
puts the atlas's dependencies, less torch, into ``.bench-deps/`` for ``PYTHONPATH``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["bench_gpu"]


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_gpu(smoke: bool) -> list[dict[str, Any]]:
    """Rows of the GPU table (also printed)."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from bench.__main__ import _table, bare_passes
    from ingest.edges.methods import MethodConfig
    from ingest.edges.shards import compute_edges, prompt_chunk
    from ingest.model.device import place_model
    from ingest.model.graph import build_graph
    from ingest.model.tasks import InductionTask

    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        raise SystemExit("bench --only gpu needs a CUDA device (use --smoke to run it on the CPU)")
    if smoke:
        cfg = dict(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, d_mlp=64, act_fn="gelu", normalization_type="LN", seed=0)
        sizes = {"cuda": [2, 4], "cpu": [2, 4]}
    else:
        cfg = dict(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257, d_mlp=3072, act_fn="gelu_new",
                   normalization_type="LN", seed=0)
        sizes = {"cuda": [8, 64, 512], "cpu": [8, 64]}
    task = InductionTask(half=8)
    rows = []
    for device in (["cuda"] if cuda else []) + ["cpu"]:
        model = place_model(HookedTransformer(HookedTransformerConfig(**cfg)), device)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        graph = build_graph(model, "bench")

        def sync(device: str = device) -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        for n in sizes[device]:
            batch = task.make_batch(model, n, 0).to(model.cfg.device)
            chunk = prompt_chunk(model, graph, batch)

            forward, forward_backward = bare_passes(model, task, batch)

            row: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "prompts": n,
                                   "passes": -(-n // chunk)}
            t_f = _median_time(forward, 1 if smoke else 3, sync)
            t_fb = _median_time(forward_backward, 1 if smoke else 3, sync)
            for label, method, passes in (("EAP", "eap", 1), ("EAP-IG(5)", "eap-ig", 5)):
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds = _median_time(lambda method=method: compute_edges(model, graph, task, batch, method, MethodConfig(steps=5), chunk=chunk),
                                       1, sync)
                row[f"{label} s"] = seconds
                row[f"{label} / bare passes"] = seconds / (2 * t_f + passes * t_fb)
                if device == "cuda":
                    row[f"{label} peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
            rows.append(row)
        if device == "cuda":
            torch.cuda.empty_cache()
    _table("GPU: EAP and EAP-IG(5) against the bare passes, GPT-2-small shape (16-token prompts)" + (" [smoke]" if smoke else ""), rows)
    return rows
