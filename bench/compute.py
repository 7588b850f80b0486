"""Attribution compute against what it must cost, measured side by side in one process.

- :func:`by_prompts`: EAP and EAP-IG(5) on the GPT-2-small shape at 8 / 32 / 128 / 512 prompts, each
  against the bare passes it is budgeted at (EAP: 2 forwards + 1 forward+backward; EAP-IG(k): 2
  forwards + k forward+backwards), timed on the same model and batch in the same repetition; the
  ratio's min / median / max over the repetitions, and the call's peak resident memory above the
  process's before it, beside the activation budget the call splits its batch by.
- :func:`neuron_contraction`: neuron-level EAP of the 1.1M-edge GPT-2-shape graph (104 neurons per
  MLP, 64 prompts x 16 tokens) against the arithmetic limit of its edge contraction: float32 matrix
  products of the same shapes (per receiver group, ``[visible senders, prompts x positions x d_model]``
  times its transpose-shaped gradients) on the same machine.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

GPT2_SHAPE: dict[str, Any] = dict(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257, d_mlp=3072,
                                  act_fn="gelu_new", normalization_type="LN", seed=0)
TINY_SHAPE: dict[str, Any] = dict(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, d_mlp=64, act_fn="gelu",
                                  normalization_type="LN", seed=0)


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _peak_above(fn: Callable[[], Any]) -> tuple[float, float]:
    """(seconds, peak resident MB of this process during ``fn`` above its resident MB before)."""
    from bench.scale import _reset_hwm, _status_mb

    pid = os.getpid()
    _reset_hwm(pid)
    before = _status_mb(pid, "VmRSS")
    seconds = _seconds(fn)
    return seconds, _status_mb(pid, "VmHWM") - before


def _spread(values: list[float]) -> str:
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def _model(shape: dict[str, Any]) -> Any:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**shape))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.set_num_threads(os.cpu_count() or 1)
    return model


def by_prompts(smoke: bool, sizes: tuple[int, ...] = (8, 32, 128, 512), repeats: int = 3, k: int = 5) -> list[dict[str, Any]]:
    """One row per size and method: seconds per prompt and the ratio to the bare passes, min / median /
    max over ``repeats`` repetitions (each timing the bare passes and the method on the same batch)."""
    from bench.__main__ import bare_passes
    from ingest.edges.methods import MethodConfig, compute_eap, compute_eap_ig
    from ingest.edges.shards import pass_bytes_per_prompt, prompt_chunk
    from ingest.model.device import activation_budget
    from ingest.model.graph import build_graph
    from ingest.model.tasks import InductionTask

    model = _model(TINY_SHAPE if smoke else GPT2_SHAPE)
    task = InductionTask(half=8)
    graph = build_graph(model, "bench")
    budget = activation_budget(next(iter(model.parameters())).device)
    rows = []
    for n in (4, 8) if smoke else sizes:
        batch = task.make_batch(model, n, 0)
        forward, forward_backward = bare_passes(model, task, batch)
        forward()
        chunk = prompt_chunk(model, graph, batch)
        seen: dict[str, dict[str, list[float]]] = {m: {"s": [], "ratio": [], "mb": []} for m in ("EAP", f"EAP-IG({k})")}
        for _ in range(1 if smoke else repeats):
            t_f, t_fb = _seconds(forward), _seconds(forward_backward)
            for method, run, bare in (("EAP", lambda: compute_eap(model, graph, task, batch), 2 * t_f + t_fb),
                                      (f"EAP-IG({k})", lambda: compute_eap_ig(model, graph, task, batch, MethodConfig(steps=k)),
                                       2 * t_f + k * t_fb)):
                seconds, mb = _peak_above(run)
                seen[method]["s"].append(seconds)
                seen[method]["ratio"].append(seconds / bare)
                seen[method]["mb"].append(mb)
        for method, got in seen.items():
            rows.append({"prompts": n, "method": method, "passes": -(-n // chunk),
                         "s per prompt (min/med/max)": _spread([s / n for s in got["s"]]),
                         "ratio to bare (min/med/max)": _spread(got["ratio"]),
                         "peak MB above before": max(got["mb"]),
                         "budget MB": budget / 1e6, "estimated MB per pass": chunk * pass_bytes_per_prompt(model, graph, batch) / 1e6})
    return rows


def contraction_seconds(model: Any, graph: Any, tokens: int) -> tuple[float, float]:
    """(seconds, TFLOP) of float32 matrix products shaped as the graph's dense edge contraction over
    ``tokens`` prompt positions: per receiver group ``[visible senders, tokens x d] @ [tokens x d, group]``."""
    import torch

    from ingest.edges.decoder import _receiver_groups

    d = int(model.cfg.d_model)
    groups = _receiver_groups(graph)
    gen = torch.Generator().manual_seed(0)
    senders = torch.randn(len(graph.senders), tokens * d, generator=gen)
    widest = max(len(g.receivers) for g in groups)
    grads = torch.randn(widest, tokens * d, generator=gen)
    flop = 0.0
    t0 = time.perf_counter()
    for group in groups:
        k = graph.n_visible(group.receivers[0].read_stage)
        r = len(group.receivers)
        torch.mm(senders[:k], grads[:r].T)
        flop += 2.0 * k * r * tokens * d
    return time.perf_counter() - t0, flop / 1e12


def neuron_contraction(smoke: bool, repeats: int = 3) -> list[dict[str, Any]]:
    """Neuron-level EAP (the scale bench's graph) and the GEMM limit of its contraction, ``repeats``
    times each, alternating."""
    import torch

    from ingest.edges.methods import compute_eap
    from ingest.model.graph import build_graph
    from ingest.model.tasks import InductionTask

    model = _model(TINY_SHAPE if smoke else GPT2_SHAPE)
    prompts, top = (8, 8) if smoke else (64, 104)
    task = InductionTask(half=8)
    batch = task.make_batch(model, prompts, 0)
    gen = torch.Generator().manual_seed(0)
    neurons = {layer: sorted(torch.randperm(int(model.cfg.d_mlp), generator=gen)[:top].tolist()) for layer in range(model.cfg.n_layers)}
    graph = build_graph(model, "bench", neurons)
    tokens = int(batch.clean.numel())
    ours, limit, edges, tflop = [], [], 0, 0.0
    for _ in range(1 if smoke else repeats):
        started = time.perf_counter()
        edges = len(compute_eap(model, graph, task, batch))
        ours.append(time.perf_counter() - started)
        seconds, tflop = contraction_seconds(model, graph, tokens)
        limit.append(seconds)
    return [{"graph": f"{len(graph.senders)} senders x {len(graph.receivers)} receivers", "edges": edges,
             "prompts x tokens": f"{prompts} x {batch.clean.shape[1]}", "contraction TFLOP": tflop,
             "EAP s (min/med/max)": _spread(ours), "GEMM limit s (min/med/max)": _spread(limit),
             "GFLOP/s of the GEMM": tflop * 1e3 / statistics.median(limit),
             "ratio (min/med/max)": _spread([a / b for a, b in zip(ours, limit, strict=True)])}]
