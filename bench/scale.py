"""A GPT-2-small-shaped connectome at neuron granularity, end to end: compute, write, then the
queries a person asks of it, each stage's wall time and peak memory (the atlas process and the
database server) side by side.

The model has GPT-2 small's shape (12 layers x 12 heads, d_model 768, d_mlp 3072, vocabulary
50,257) with random weights (no checkpoint can be downloaded here); ``--top-neurons 104`` keeps 104
neurons per MLP, which gives 1,107,019 edges. Peak memory is each process's high-water mark over
the stage (``VmHWM``, reset before the stage through ``/proc/PID/clear_refs``), next to the atlas
process's resident memory when the stage began (Python keeps what it freed, so peaks only grow).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

GPT2_SHAPE = {"n_layers": 12, "d_model": 768, "n_ctx": 1024, "d_head": 64, "n_heads": 12, "d_vocab": 50257, "d_mlp": 3072,
              "act_fn": "gelu_new", "normalization_type": "LN", "seed": 0}
TINY_SHAPE = {"n_layers": 2, "d_model": 64, "n_ctx": 64, "d_head": 16, "n_heads": 4, "d_vocab": 100, "d_mlp": 256,
              "act_fn": "gelu", "normalization_type": "LN", "seed": 0}


def _status_mb(pid: int, key: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmHWM`` peak, ``VmRSS`` now) in MB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm(pid: int) -> None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


@contextlib.contextmanager
def stage(rows: list[dict[str, Any]], name: str, server_pid: int, **extra: Any) -> Iterator[dict[str, Any]]:
    """Time a stage and record both processes' peak resident memory over it."""
    for pid in (os.getpid(), server_pid):
        _reset_hwm(pid)
    row: dict[str, Any] = {"stage": name, **extra, "atlas MB before": _status_mb(os.getpid(), "VmRSS")}
    t0 = time.perf_counter()
    yield row
    row["wall s"] = time.perf_counter() - t0
    row["atlas peak MB"] = _status_mb(os.getpid(), "VmHWM")
    row["server peak MB"] = _status_mb(server_pid, "VmHWM")
    rows.append(row)


def _disk_bytes(home: Path) -> int:
    """Bytes of the embedded database's files (its WAL included)."""
    return sum(p.stat().st_size for p in (home / "arcadedb" / "databases").rglob("*") if p.is_file())


def save_model(shape: dict[str, Any], folder: Path) -> Path:
    """A model folder ``load_model`` reads (config.json + model.pt) with random weights of ``shape``."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(shape))
    torch.save(HookedTransformer(HookedTransformerConfig(**shape)).state_dict(), folder / "model.pt")
    return folder


def _quiet(fn: Callable[[], Any]) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fn()
    if code not in (0, None):
        raise SystemExit(f"command failed with {code}: {out.getvalue()[-500:]}")
    return out.getvalue()


def bench_scale(smoke: bool, home: Path) -> list[dict[str, Any]]:
    import torch

    from atlas import connectome as cx
    from atlas.config import resolve_store_settings
    from atlas.server import ensure_server
    from atlas.store import Store
    from atlas_cli import main
    from ingest.jobs.run import IngestConfig, run_ingest

    torch.set_num_threads(os.cpu_count() or 1)
    shape, top_neurons, prompts = (TINY_SHAPE, 8, 8) if smoke else (GPT2_SHAPE, 104, 64)
    work = Path(tempfile.mkdtemp(prefix="atlas-scale-"))
    model_dir = save_model(shape, work / ("gpt2-shape" if not smoke else "tiny-shape"))
    server = ensure_server(home, quiet=True)
    rows: list[dict[str, Any]] = []
    config = IngestConfig(model=str(model_dir), method="eap", n_prompts=prompts, granularity="neuron", top_neurons=top_neurons)
    h = ["--home", str(home)]
    with Store.connect(resolve_store_settings(home=home), quiet=True) as store:
        before = _disk_bytes(home)
        with stage(rows, "ingest: compute (EAP, neurons) + write + column copy", server.pid) as row:
            result = run_ingest(store, config, home, run_id="scale-a", progress=False)
            row.update({"edges": result.n_edges, "compute s": result.seconds["compute"], "write s": result.seconds["write"],
                        "write edges/s": result.n_edges / result.seconds["write"],
                        "result": f"{(_disk_bytes(home) - before) / result.n_edges:.0f} bytes on disk per edge"})
        run = "scale-a"
        with stage(rows, "ingest again, same run id (idempotent: unchanged)", server.pid) as row:
            again = run_ingest(store, config, home, run_id=run, progress=False)
            row["result"] = again.status
        with stage(rows, "ingest, 2 shards on a local Ray (other seed, for compare)", server.pid) as row:
            other = run_ingest(store, replace(config, seed=1), home, run_id="scale-b", progress=False, shards=2)
            row.update({"edges": other.n_edges, "compute s": other.seconds["compute"], "write s": other.seconds["write"]})
        with stage(rows, "atlas paths, first call (no cache: columns fetched + search)", server.pid):
            cx.delete_path_caches(store, run)
            _quiet(lambda: main(["paths", "--run", run, "--paths", "10", "--json", *h]))
        with stage(rows, "atlas paths, later call (kept on the run)", server.pid):
            _quiet(lambda: main(["paths", "--run", run, "--paths", "10", "--json", *h]))
        middle = f"L{shape['n_layers'] // 2}.MLP"
        with stage(rows, f"atlas paths --through {middle} (criteria: never cached)", server.pid):
            _quiet(lambda: main(["paths", "--run", run, "--paths", "5", "--through", middle, "--json", *h]))
        with stage(rows, "atlas paths --paths 100 (more than is kept: never cached)", server.pid):
            _quiet(lambda: main(["paths", "--run", run, "--paths", "100", "--json", *h]))
        # what a person at a shell waits for: a new process, so the interpreter and the imports
        # count; pandas and the neo4j driver (which imports pandas itself) alone, side by side
        imports = _wall([sys.executable, "-c", "import pandas, neo4j"])
        with stage(rows, f"atlas paths --through {middle}, a fresh process", server.pid) as row:
            row["result"] = f"of it importing pandas + neo4j: {imports:.2f} s"
            _wall([sys.executable, "-m", "atlas_cli", "paths", "--run", run, "--paths", "5", "--through", middle, "--json", *h])
        weight = float(cx.fetch_edge_columns(store, run)["score"].abs().quantile(0.99))
        with stage(rows, "atlas hierarchy --min-weight (top 1% of |score|)", server.pid):
            _quiet(lambda: main(["hierarchy", "--run", run, "--min-weight", f"{weight:.6g}", "--no-store", "--json", *h]))
        with stage(rows, "atlas compare (two 1M-edge runs)", server.pid):
            _quiet(lambda: main(["compare", run, "scale-b", "--align", "names", "--json", *h]))
        for name, command in (("hierarchy", ["hierarchy", "--run", run, "--min-weight", f"{weight:.6g}", "--no-store", "--json"]),
                              ("compare", ["compare", run, "scale-b", "--align", "names", "--json"])):
            with stage(rows, f"atlas {name}, a fresh process", server.pid) as row:
                row["result"] = f"of it importing pandas + neo4j: {imports:.2f} s"
                _wall([sys.executable, "-m", "atlas_cli", *command, *h])
        with stage(rows, "atlas motifs --min-weight (top 1%) --random 10", server.pid):
            _quiet(lambda: main(["motifs", "--run", run, "--min-weight", f"{weight:.6g}", "--random", "10", "--json", *h]))
        with stage(rows, "atlas binding (every edge)", server.pid):
            _quiet(lambda: main(["binding", "--run", run, "--json", *h]))
        with stage(rows, "atlas export --top 400 --html --png", server.pid):
            _quiet(lambda: main(["export", "--run", run, "--top", "400", "--html", str(work / "top.html"), "--png", str(work / "top.png"), *h]))
        from bench.browser import chromium, probe_page

        if chromium() is not None:
            from atlas.ids import local_id
            from queries.export import select_graph

            drawn = [local_id(n) for n in select_graph(store, run, top=400).nodes]
            wanted = next((n for n in drawn if f"L{shape['n_layers'] // 2}.N" in n), next((n for n in drawn if ".N" in n), drawn[0]))
            with stage(rows, f"the exported page in headless Chromium (search: {wanted})", server.pid) as row:
                seen = probe_page(work / "top.html", work, search=wanted)
                row["result"] = (f"{seen['n']} nodes, {len(seen['outside'])} outside the view, {seen['labelled']} labels, "
                                f"{len(seen['errors'])} script errors, search found {len(seen['found'])}")
        model_id = result_model(store, run)
        strong = float(cx.fetch_edge_columns(store, run)["score"].abs().quantile(0.999))
        for title, cypher, params in readme_cookbook():
            # the cookbook's examples name the demo runs and model: point them at this run (and at its
            # 99.9th percentile |score| where a query takes a threshold)
            params = {k: (v.replace("demo-induction-2l", run).replace("demo-eap", "scale-b").replace("induction-2l", model_id)
                          if isinstance(v, str) else v) for k, v in params.items()}
            if "min" in params:
                params["min"] = strong
            with stage(rows, f"cookbook {title[:60]}", server.pid) as row:
                row["result"] = f"{len(store.read(cypher, params))} rows"
    return rows


def _wall(command: list[str]) -> float:
    """Seconds a command takes, run to completion (its output dropped); a failure raises."""
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def readme_cookbook() -> list[tuple[str, str, dict[str, Any]]]:
    """The docs' Cypher cookbook (queries/cookbook.md, the docs' cookbook page): (title, statement, example parameters)."""
    from queries.cookbook import cookbook

    return cookbook()


def result_model(store: Any, run_id: str) -> str:
    from atlas import connectome as cx

    return cx.require_run(store, run_id).model_id
