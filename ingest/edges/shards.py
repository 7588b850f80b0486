"""Sharded edge computation on Ray: one run's compute spread over processes or machines.

How a method shards is its registry entry's ``shards_by`` (:mod:`ingest.edges.registry`). A method
that shards by prompts scores edges as means over its prompts, so prompts split into contiguous shards merge exactly:
an edge's score is the size-weighted mean of its shard means (``sum n_i s_i / N``), per-prompt
scores are the shards' lists end to end, per-position edges merge alike by position pair. Exact
patching costs one forward per edge, so it shards by edges instead: each shard patches its share
of the edges over every prompt, and the parts are put back in the graph's order.

Each shard is a Ray task (local Ray by default, any cluster given its address) that gets the model,
graph, task and its prompts through Ray's object store, so workers need the atlas installed but no
copy of the model. Ray retries a task whose worker dies (``max_retries``). Nothing is written by a
shard: the driver merges and writes once, through the usual run life cycle, so a driver killed
mid-compute leaves no run (or an unfinished one) and the rerun completes it.

``ATLAS_FAULT_KILL_SHARD=PATH`` is a fault-injection switch for tests: the first shard to start
creates ``PATH`` and kills its own worker process, once, so Ray's retry can be seen to work.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atlas.errors import AtlasError, ValidationError

__all__ = ["ShardPlan", "plan_ranges", "merge_prompt_shards", "order_like_graph", "compute_sharded", "compute_edges",
           "prompt_chunk", "pass_bytes_per_prompt"]

FAULT_ENV = "ATLAS_FAULT_KILL_SHARD"
MAX_RETRIES = 3
_ACTIVATION_COPIES = 4  # clean and corrupted outputs, their difference, and the stack being built


def pass_bytes_per_prompt(model: Any, graph: Any, batch: Any) -> int:
    """Bytes one prompt adds to a gradient pass: the senders' outputs (clean, corrupted, their
    difference and the stack being built), the receivers' gradients (the running sum and the
    current step's, in float32 at least), and what the forward keeps for the backward (per layer:
    the residual stream's intermediates, the MLP's hidden layer, the attention pattern, and a margin
    of 6 x heads x d_model per position for q/k/v and their gradients). A GPT-2-shape prompt of 16
    tokens: 102 MB estimated at head granularity, 57-75 MB measured above the process's memory."""
    cfg = model.cfg
    first = next(iter(model.parameters()))
    element = first.element_size()
    pos = batch.clean.shape[1]
    d, heads = int(cfg.d_model), int(cfg.n_heads)
    d_mlp = int(cfg.d_mlp or 0)
    senders = pos * max(1, len(graph.senders)) * d * element * _ACTIVATION_COPIES
    # head and neuron gradients are summed factored (d_head or 1 value per receiver), spread over
    # d_model one group at a time; the other receivers' gradients are summed whole
    kinds = [getattr(r.kind, "value", r.kind) for r in graph.receivers]
    factored = sum(k in ("head", "neuron") for k in kinds)
    widest = max([3 * heads, *(len(ns) for ns in graph.neurons().values())]) if hasattr(graph, "neurons") else 3 * heads
    receivers = pos * d * max(element, 4) * (2 * (len(kinds) - factored) + widest) + pos * factored * max(element, 4) * 2 * int(cfg.d_head or 1)
    per_layer = pos * element * (20 * d + 4 * d_mlp + 6 * heads * d + 3 * heads * pos)
    return int(senders + receivers + int(cfg.n_layers) * per_layer)


def prompt_chunk(model: Any, graph: Any, batch: Any, budget: int | None = None) -> int:
    """How many prompts one pass may take so that its activations, gradients and backward buffers
    (:func:`pass_bytes_per_prompt`) stay within ``budget`` bytes (default: the device's
    :func:`ingest.model.device.activation_budget`); at least one."""
    from ingest.model.device import activation_budget

    first = next(iter(model.parameters()))
    return max(1, min(batch.n_prompts, (budget or activation_budget(first.device)) // pass_bytes_per_prompt(model, graph, batch)))


def compute_edges(model: Any, graph: Any, task: Any, batch: Any, method: str, config: Any, *,
                  progress: Callable[[int], None] | None = None, edges: list[tuple[int, int]] | None = None,
                  chunk: int | None = None) -> tuple[pd.DataFrame, int]:
    """The method's edge frame, in passes of at most ``chunk`` prompts (default: as many as the
    activation budget allows) merged exactly as prompt shards are; returns (frame, passes). A run
    of many prompts on a wide graph is then bounded in memory by the budget, not by its prompts."""
    from ingest.edges.methods import compute_patching
    from ingest.edges.registry import get_method

    def run(part: Any) -> pd.DataFrame:
        if edges is not None:
            return compute_patching(model, graph, task, part, config, progress=progress, edges=edges)
        return get_method(method)(model, graph, task, part, config, progress=progress)

    chunk = chunk or prompt_chunk(model, graph, batch)
    if chunk >= batch.n_prompts:
        return run(batch), 1
    ranges = plan_ranges(batch.n_prompts, -(-batch.n_prompts // chunk), "prompts")
    frames = [run(batch.select(a, b)) for a, b in ranges]
    return merge_prompt_shards(frames, [b - a for a, b in ranges]), len(ranges)


@dataclass(frozen=True)
class ShardPlan:
    """How a run's compute was split: recorded on the run (``shardPlan``)."""

    n_shards: int
    by: str
    """``prompts`` (gradient methods) or ``edges`` (exact patching)."""
    sizes: tuple[int, ...]
    ray: str
    """``local`` or the cluster address given."""
    seconds: tuple[float, ...] = ()
    """Wall time of each shard's task, in shard order (measured in the worker)."""

    def to_json(self) -> dict[str, Any]:
        return {"shards": self.n_shards, "by": self.by, "sizes": list(self.sizes), "ray": self.ray,
                "seconds": [round(s, 3) for s in self.seconds]}


def plan_ranges(n_items: int, shards: int, what: str) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` ranges over ``n_items``, sizes differing by at most one.

    Raises:
        ValidationError: fewer items than shards, or fewer than one shard.
    """
    if shards < 1:
        raise ValidationError(f"--shards must be at least 1, got {shards}")
    if shards > n_items:
        raise ValidationError(f"--shards {shards} is more than the run's {n_items} {what}: give at most {n_items}")
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n_items), shards)])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("componentId_pre", "componentId_post", "channel", "srcPos", "dstPos") if c in frame.columns]


def merge_prompt_shards(frames: Sequence[pd.DataFrame], sizes: Sequence[int]) -> pd.DataFrame:
    """The run's edge frame from its prompt shards' frames: ``score`` the size-weighted mean
    (``sum n_i s_i / N``), ``promptScores`` the shards' lists end to end, rows in the first shard's
    order (an edge a shard does not list scored 0 there)."""
    if len(frames) != len(sizes) or not frames:
        raise ValueError("one frame per shard size")
    total = float(sum(sizes))
    keys = _keys(frames[0])
    parts = []
    for frame, n in zip(frames, sizes):
        part = frame[keys].copy()
        part["score"] = frame["score"].to_numpy(dtype=float) * n
        parts.append(part)
    both = pd.concat(parts, ignore_index=True)
    grouped = both.groupby(keys, sort=False, dropna=False)
    out = grouped["score"].sum().div(total).reset_index()
    if "promptScores" in frames[0].columns:
        lookups = [dict(zip(f[keys].itertuples(index=False, name=None), f["promptScores"])) for f in frames]
        out["promptScores"] = [[v for d, n in zip(lookups, sizes) for v in d.get(key, [0.0] * n)]
                               for key in out[keys].itertuples(index=False, name=None)]
    return out


def order_like_graph(frame: pd.DataFrame, graph: Any) -> pd.DataFrame:
    """An edge frame in the order one unsharded pass gives: by sender, then receiver index."""
    sender = {s.component_id: s.index for s in graph.senders}
    receiver = {(r.component_id, r.channel.value): r.index for r in graph.receivers}
    order = np.lexsort((np.array([receiver[(b, c)] for b, c in zip(frame["componentId_post"], frame["channel"])]),
                        frame["componentId_pre"].map(sender).to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _shard_task(model: Any, graph: Any, task: Any, batch: Any, method: str, config: Any, edges: list[tuple[int, int]] | None,
                fault_marker: str | None) -> tuple[pd.DataFrame, float]:
    """One shard, in a Ray worker: the method on this shard's prompts (or edges)."""
    if fault_marker:
        try:
            fd = os.open(fault_marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os._exit(1)  # the worker dies mid-task, as a lost machine would: Ray retries the task
    t0 = time.perf_counter()
    frame, _ = compute_edges(model, graph, task, batch, method, config, edges=edges)
    return frame, time.perf_counter() - t0


def _check_reachable(address: str) -> None:
    """Refuse an address nothing answers at, in one line and seconds (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValidationError(f"--ray takes HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ValidationError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from exc


def _init_ray(address: str | None) -> tuple[Any, bool]:
    try:
        import ray
    except ImportError as exc:
        raise ValidationError("--shards needs Ray: pip install 'connectome-atlas[ray]' (or ray>=2.9)") from exc
    if address:
        _check_reachable(address)
    if ray.is_initialized():  # a Ray this process already joined is used as it is
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ValidationError(f"cannot start or reach {where}: {' '.join(str(exc).split())[:200]}") from exc
    return ray, True


def compute_sharded(model: Any, graph: Any, task: Any, batch: Any, method: str, config: Any, shards: int, *,
                    address: str | None = None, log: Callable[[str], None] | None = None,
                    progress: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, ShardPlan]:
    """The method's edge frame computed in ``shards`` Ray tasks and merged exactly (see module).

    Exact patching shards its edges, the gradient methods their prompts. ``progress(1)`` per shard done.
    """
    from ingest.edges.methods import all_edges
    from ingest.edges.registry import method_spec

    by_edges = method_spec(method).shards_by == "edges"
    items = all_edges(graph) if by_edges else None
    ranges = plan_ranges(len(items) if items is not None else batch.n_prompts, shards, "edges" if by_edges else "prompts")
    ray, started = _init_ray(address)
    try:
        device = next(iter(model.parameters())).device
        remote = ray.remote(_shard_task).options(max_retries=MAX_RETRIES, retry_exceptions=False, num_cpus=1,
                                                 num_gpus=1 if device.type == "cuda" else 0)
        model_ref, graph_ref, task_ref = ray.put(model), ray.put(graph), ray.put(task)
        fault = os.environ.get(FAULT_ENV) or None
        pending = {}
        for i, (a, b) in enumerate(ranges):
            part_batch = batch if by_edges else batch.select(a, b)
            part_edges = items[a:b] if items is not None else None
            pending[remote.remote(model_ref, graph_ref, task_ref, part_batch, method, config, part_edges, fault)] = i
        results: dict[int, tuple[pd.DataFrame, float]] = {}
        refs = list(pending)
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            i = pending[done[0]]
            try:
                results[i] = ray.get(done[0])
            except Exception as exc:  # a shard failed for good (after Ray's retries): one line, nothing written
                cause = getattr(exc, "cause", None) or exc
                if isinstance(cause, AtlasError):  # the user's mistake, found in a shard: its own one line
                    raise cause from None
                raise ValidationError(f"shard {i + 1} of {len(ranges)} failed: {' '.join(str(cause).split())[:300]}") from exc
            if log is not None:
                log(f"shard {len(results)} of {len(ranges)} done ({ranges[i][1] - ranges[i][0]} {'edges' if by_edges else 'prompts'}, "
                    f"{results[i][1]:.1f} s)")
            if progress is not None:
                progress(1)
    finally:
        if started:
            ray.shutdown()
    frames = [results[i][0] for i in range(len(ranges))]
    sizes = tuple(b - a for a, b in ranges)
    if by_edges:
        edges = order_like_graph(pd.concat(frames, ignore_index=True), graph)
    else:
        edges = merge_prompt_shards(frames, sizes)
    plan = ShardPlan(len(ranges), "edges" if by_edges else "prompts", sizes, address or "local",
                     tuple(results[i][1] for i in range(len(ranges))))
    return edges, plan
