"""Run the benchmarks: ``python -m bench [--smoke] [--only NAME ...] [--home DIR]``.

- ``attribution``: EAP and EAP-IG(k) wall time against the bare passes they need (a forward pass
  and a forward+backward to the activations, timed on the same model and batch): target <= 1.2x;
  on the GPT-2-small shape by prompts (``--sizes``, default 8/32/128/512; ``--repeats``, default 3),
  and neuron-level EAP against its contraction's matrix products (:mod:`bench.compute`).
- ``loading``: edges/s into the embedded database through the atlas (the server's bulk socket, and
  over Bolt), against ArcadeDB's own bulk path (``GraphBatch``, in-process) on the same edges with
  the run's properties and without any (the engine's ceiling); and edges/s deleting a run.
- ``paths``: top-10 strongest paths over a synthetic 1M-edge run (target < 1 s), and the same
  query through the database (fetch included).
- ``scale``: a GPT-2-small-shaped model at neuron granularity (~1.07M edges, 64 prompts) end to
  end: compute, write, paths, hierarchy, compare, export and cookbook queries, each stage's time
  and peak memory of the atlas process and the database server (:mod:`bench.scale`).
- ``startup``: a model-loading command's imports by package (``python -X importtime``), the embedded
  server's start, ``atlas runs`` with the server down and up, ``atlas db stop`` (:mod:`bench.startup`).
- ``demo``: ``atlas demo`` end to end in a fresh atlas home (target < 60 s).
- ``precision``: bfloat16 and float16 scores against float32 on every zoo model (EAP, EAP-IG(5),
  exact patching) and on a GPT-2-small-shaped model (EAP, EAP-IG(5)): Spearman and the largest
  difference relative to the largest float32 score, on the device given by ``--device`` (default auto).
- ``gpu``: EAP and EAP-IG(5) on a GPT-2-small-shaped model at 8/64/512 prompts as ratios to the bare
  passes on the GPU, peak GPU memory, and the same on the CPU beside it (:mod:`bench.gpu`; needs CUDA).
- ``peer``: the same EAP in auto-circuit, side by side on the same model and prompts (installed in
  its own virtualenv under ``.bench-venvs/`` on first use: torch 2.13.0 first, then auto-circuit and
  ``transformer_lens<3``, the line it was written for): speed ratio and rank agreement of the scores.
  ``--smoke`` runs it on a tiny model (the install, about a minute, included) and fails unless the
  two EAPs agree (Spearman >= 0.99).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.synthetic import synthetic_edges


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    sys.stdout.flush()


# -- attribution -------------------------------------------------------------------------------
def bare_passes(model: Any, task: Any, batch: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """The passes an attribution method is budgeted against: a forward, and a forward+backward of the
    metric to the activations (gradients from the embedding on; the weights frozen)."""
    import torch

    def forward() -> None:
        with torch.no_grad():
            model(batch.clean)

    def forward_backward() -> None:
        emb = model.embed(batch.clean).detach().requires_grad_(True)
        logits = model.run_with_hooks(batch.clean, fwd_hooks=[("hook_embed", lambda a, hook: emb)])
        task.metric(logits, batch).mean().backward()

    return forward, forward_backward


def bench_attribution(smoke: bool, sizes: tuple[int, ...] = (8, 32, 128, 512), repeats_by_size: int = 3) -> None:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from ingest.edges.methods import MethodConfig, compute_eap, compute_eap_ig
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model
    from ingest.model.tasks import InductionTask

    torch.set_num_threads(2)
    from ingest.model.tasks import get_task
    from ingest.model.zoo import ZOO

    models: list[tuple[str, Any, Any]] = []
    if smoke:
        cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, d_mlp=64, act_fn="gelu", normalization_type="LN")
        models.append(("tiny (2L x 4H, d32)", HookedTransformer(cfg), InductionTask(half=8)))
    else:
        home = Path(tempfile.mkdtemp())
        for name, entry in ZOO.items():  # each zoo model on its own task
            task = InductionTask(half=8) if entry.task == "induction" else get_task(entry.task)
            models.append((name, load_model(name, home).model, task))
        cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257, d_mlp=3072,
                                      act_fn="gelu_new", normalization_type="LN", seed=0)
        models.append(("GPT-2-small shape (random)", HookedTransformer(cfg), InductionTask(half=8)))
    repeats = 1 if smoke else 3
    k = 5
    rows = []
    for name, model, task in models:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        batch = task.make_batch(model, 8, 0)
        graph = build_graph(model, "bench")

        forward, forward_backward = bare_passes(model, task, batch)
        t_f = _time(forward, repeats)
        t_fb = _time(forward_backward, repeats)
        t_eap = _time(lambda: compute_eap(model, graph, task, batch), repeats)
        t_ig = _time(lambda: compute_eap_ig(model, graph, task, batch, MethodConfig(steps=k)), repeats)
        n_edges = sum(len(graph.visible(r)) for r in graph.receivers)
        rows.append({"model": name, "tokens": tuple(batch.clean.shape), "edges": n_edges, "forward s": t_f, "fwd+bwd s": t_fb,
                     "EAP s": t_eap, "EAP / (2f + fb)": t_eap / (2 * t_f + t_fb),
                     f"EAP-IG({k}) s": t_ig, f"EAP-IG / (2f + {k}fb)": t_ig / (2 * t_f + k * t_fb)})
    _table("attribution cost (8 prompts of each model's task; induction: 16 tokens; 2 threads; target ratio <= 1.2)", rows)
    from bench.compute import by_prompts, neuron_contraction

    _table(f"EAP and EAP-IG({k}) on the GPT-2-small shape by prompts (16 tokens; one call each, split into passes by the activation "
           f"budget; {1 if smoke else repeats_by_size} repetitions; target ratio <= 1.2 at every size)", by_prompts(smoke, sizes, repeats_by_size, k))
    _table("neuron-level EAP (104 neurons per MLP, 64 prompts x 16 tokens) against float32 matrix products of its edge contraction's "
           "shapes (target ratio <= 2)", neuron_contraction(smoke, repeats_by_size))


# -- loading -----------------------------------------------------------------------------------
def _native_rates(edges: pd.DataFrame, nodes: pd.DataFrame, workdir: Path) -> dict[str, float]:
    """ArcadeDB's own bulk path: GraphBatch in-process (no Bolt, no Cypher), same vertices and edges.

    Edges/s three ways: ``props`` through the package's public ``new_edges`` with the run's
    properties (building its per-edge dicts included); ``engine``: the same edges as JSON the engine
    parses itself (``EdgeBatcher.newEdgesJson``, the path ``new_edges`` ends in), built vectorised
    beforehand and left out of the time, so this is the engine alone: JSON parse, edge records, edge
    lists, flushes; ``bare``: edges with no property at all (the engine's ceiling, no edge records).
    """
    import arcadedb_embedded as adb
    import jpype

    rates: dict[str, float] = {}
    for how in ("props", "engine", "bare"):
        db = adb.create_database(str(workdir / f"native-{how}"))
        try:
            db.schema.create_vertex_type("Component")
            db.schema.create_edge_type("ATTRIBUTION")
            with db.graph_batch(batch_size=50_000) as gb:
                rids = gb.create_vertices("Component", [{"componentId": c} for c in nodes["componentId"]])
            rid = dict(zip(nodes["componentId"], (str(r) for r in rids)))
            src = [rid[c] for c in edges["componentId_pre"]]
            dst = [rid[c] for c in edges["componentId_post"]]
            if how == "engine":
                frame = pd.DataFrame({"_src": src, "_dst": dst, "runId": "native", "channel": edges["channel"].astype(str),
                                      "score": edges["score"].astype(float)})
                step = 200_000
                chunks = [frame.iloc[a:a + step].to_json(orient="records", double_precision=15) for a in range(0, len(frame), step)]
                batcher = jpype.JClass("com.arcadedb.python.EdgeBatcher")
            t0 = time.perf_counter()
            with db.graph_batch(batch_size=50_000) as gb:
                if how == "engine":
                    for chunk in chunks:
                        batcher.newEdgesJson(gb._java_graph_batch, "ATTRIBUTION", chunk)
                else:
                    props = ([{"runId": "native", "channel": c, "score": float(s)} for c, s in zip(edges["channel"], edges["score"])]
                             if how == "props" else None)
                    gb.new_edges(src, "ATTRIBUTION", dst, properties=props)
            rates[how] = len(edges) / (time.perf_counter() - t0)
            stored = next(iter(db.query("sql", "SELECT count(*) AS n FROM ATTRIBUTION"))).get("n")
            assert stored == len(edges), (how, stored, len(edges))
        finally:
            db.close()
    return rates


def bench_loading(smoke: bool, home: Path, repeats: int = 3) -> None:
    """Edges/s into the embedded store three ways, each ``repeats`` times on the same edges, beside
    ArcadeDB's own in-process batch API in this process: the atlas's default (the server's bulk
    socket, :mod:`atlas.bulk`), the atlas over Bolt (``ATLAS_BULK=0``), and deleting a run."""
    from atlas import connectome as cx
    from atlas.config import resolve_store_settings
    from atlas.records import ModelRecord, RunRecord
    from atlas.schema import RelType, RunStatus
    from atlas.store import Store

    sizes = [5_000] if smoke else [10_000, 100_000, 1_000_000]
    rows = []
    with Store.connect(resolve_store_settings(home=home)) as store:
        cx.ensure_schema(store)
        for n in sizes:
            edges, nodes = synthetic_edges(n, model=f"synthetic-{n}")
            model_id = f"synthetic-{n}"
            layers = int(nodes["layer"].max()) + 1
            cx.write_model(store, ModelRecord(model_id, model_id, "synthetic", layers, 0, 0, 0, None, 0, 0, "bench"))
            cx.write_components(store, nodes)
            rates: dict[str, list[float]] = {k: [] for k in ("bulk", "bolt", "delete", "props", "engine", "bare")}
            for rep in range(1 if smoke else repeats):
                for how in ("bulk", "bolt"):
                    run_id = f"bench-load-{n}-{how}"
                    cx.delete_run(store, run_id)
                    cx.begin_run(store, RunRecord(run_id=run_id, model_id=model_id))
                    previous = os.environ.get("ATLAS_BULK")
                    os.environ["ATLAS_BULK"] = "1" if how == "bulk" else "0"
                    try:
                        t0 = time.perf_counter()
                        cx.write_edges(store, edges, run_id)
                        rates[how].append(n / (time.perf_counter() - t0))
                    finally:
                        if previous is None:
                            del os.environ["ATLAS_BULK"]
                        else:
                            os.environ["ATLAS_BULK"] = previous
                    if rep == 0 and how == "bulk":
                        # the packed-column copy an ingest keeps beside the edges (not timed here)
                        assert cx.write_edge_columns(store, run_id, RelType.ATTRIBUTION, edges, nodes) > 0
                        cx.set_run_status(store, run_id, RunStatus.COMPLETE, n_edges=n)
                        stored = store.read("MATCH ()-[e:ATTRIBUTION {runId: $r}]->() RETURN count(e) AS n, sum(e.score) AS s", {"r": run_id})
                        assert int(stored["n"][0]) == n, stored
                    elif how == "bolt":
                        t0 = time.perf_counter()
                        cx.delete_run(store, run_id)
                        rates["delete"].append(n / (time.perf_counter() - t0))
                with tempfile.TemporaryDirectory() as tmp:
                    for key, value in _native_rates(edges, nodes, Path(tmp)).items():
                        rates[key].append(value)

            def spread(key: str) -> str:
                return f"{min(rates[key]):,.0f} / {statistics.median(rates[key]):,.0f} / {max(rates[key]):,.0f}"

            def ratio(key: str) -> str:
                r = [a / b for a, b in zip(rates[key], rates["engine"], strict=True)]
                return f"{min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f}"

            rows.append({"edges": n, "atlas, bulk socket (edges/s)": spread("bulk"), "atlas / engine": ratio("bulk"),
                         "atlas over Bolt (edges/s)": spread("bolt"), "Bolt / engine": ratio("bolt"),
                         "engine alone, in-process (edges/s)": spread("engine"), "GraphBatch with per-edge dicts (edges/s)": spread("props"),
                         "GraphBatch, no properties (edges/s)": spread("bare"), "atlas delete run (edges/s)": spread("delete")})
    _table(f"loading into the embedded store, min / median / max over {1 if smoke else repeats} repetitions "
           "(target: atlas >= 0.9x the engine alone on the same edges)", rows)


# -- paths -------------------------------------------------------------------------------------
def bench_paths(smoke: bool, home: Path) -> None:
    from atlas import connectome as cx
    from atlas.config import resolve_store_settings
    from atlas.store import Store
    from queries.paths import fetch_paths, top_paths_frame, write_path_cache

    n = 5_000 if smoke else 1_000_000
    edges, _ = synthetic_edges(n, model=f"synthetic-{n}")
    repeats = 1 if smoke else 3
    t_mem = _time(lambda: top_paths_frame(edges, k=10), repeats)
    t_split = _time(lambda: top_paths_frame(edges, k=10, split_channels=True), repeats)
    row: dict[str, Any] = {"edges": len(edges), "top-10 in memory s": t_mem, "top-10, channels split s": t_split,
                           "top-100 in memory s": _time(lambda: top_paths_frame(edges, k=100), repeats)}
    with Store.connect(resolve_store_settings(home=home)) as store:
        run_id = f"bench-load-{n}"
        if cx.fetch_run(store, run_id) is not None:
            cx.delete_path_caches(store, run_id)
            t0 = time.perf_counter()
            write_path_cache(store, run_id)
            first = fetch_paths(store, run_id, top=10)
            row["atlas paths, first call (fetch + search) s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = fetch_paths(store, run_id, top=10)
            row["atlas paths, later calls (kept on the run) s"] = time.perf_counter() - t0
            assert again["path"].tolist() == first["path"].tolist()
    _table("pathways (target: top-10 over 1M edges < 1 s)", [row])
    # side by side with the reference: Yen's k shortest simple paths (networkx) over the whole graph
    from queries.graph import edges_to_graph
    from queries.paths import top_paths

    small, _ = synthetic_edges(2_000 if smoke else 200_000, model="synthetic-reference")
    graph = edges_to_graph(small)
    t_dp = _time(lambda: top_paths_frame(small, k=10), repeats)
    t_yen = _time(lambda: top_paths(graph, k=10), 1)
    assert top_paths_frame(small, k=10)["path"].tolist() == top_paths(graph, k=10)["path"].tolist()
    _table("pathways: the atlas's k-best sweep vs Yen's algorithm (networkx), same answers", [
        {"edges": len(small), "atlas top-10 s": t_dp, "Yen's top-10 s (graph built beforehand)": t_yen, "atlas speed-up x": t_yen / t_dp}])


def bench_explorer(smoke: bool, home: Path, run: str | None = None) -> None:
    """The explorer's answers on a 1.1M-edge run, as a browser asks them (HTTP through the app, the
    store as its read-only user): the first overview (the run's edges read once), then each page's
    request again and again (target: < 300 ms after the first request)."""
    import statistics

    from starlette.testclient import TestClient

    from atlas.config import resolve_store_settings
    from atlas.store import Store
    from bench.synthetic import write_synthetic_run
    from explorer.api import Explorer
    from explorer.app import create_app

    n = 5_000 if smoke else 1_100_000
    settings = resolve_store_settings(home=home)
    if run is None:
        run_id = f"bench-explorer-{n}"
        with Store.connect(settings) as writer:
            edges, nodes = write_synthetic_run(writer, n, run_id, columns=True)  # as atlas ingest keeps a run
        layer = int(nodes["layer"].max()) // 2
    else:  # a run already in the home, e.g. the neuron-level GPT-2-shape run of --only scale
        from queries.fetch import fetch_edge_columns

        run_id = run
        with Store.connect(settings, read_only=True) as reader:
            edges = fetch_edge_columns(reader, run_id)
        from atlas.ids import parse_component_id

        layers = [parse_component_id(str(c)).layer for c in edges["componentId_post"].unique()]
        layer = max(v for v in layers if v is not None) // 2
    strongest = edges.loc[edges["score"].abs().idxmax(), "componentId_post"]
    with Store.connect(settings, read_only=True) as reader:
        client = TestClient(create_app(Explorer(reader), hosts=("testserver",)))

        def get(path: str, **params: Any) -> float:
            t0 = time.perf_counter()
            r = client.get(path, params=params)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0

        first = get("/api/overview", run=run_id)
        asks = {"run overview (flow, blocks, top-300 graph)": ("/api/overview", {"run": run_id}),
                "component page (the strongest edge's receiver)": ("/api/component", {"run": run_id, "id": strongest}),
                "top-10 paths, embedding to logits": ("/api/paths", {"run": run_id, "k": 10}),
                f"top-10 paths through layer {layer}": ("/api/paths", {"run": run_id, "k": 10, "through": f"layer={layer}"}),
                "search L1.*": ("/api/search", {"run": run_id, "q": "L1.*"}),
                "edge table, one layer's v channel": ("/api/edges", {"run": run_id, "layer": str(layer), "channel": "v"})}
        neurons = [str(c) for c in edges["componentId_pre"].unique() if ".N" in str(c)]
        if neurons:
            asks["component page (a neuron)"] = ("/api/component", {"run": run_id, "id": neurons[len(neurons) // 2]})
        rows = [{"request": "first overview (reads the run's edges)", "min ms": 1000 * first, "median ms": 1000 * first, "max ms": 1000 * first}]
        for name, (path, params) in asks.items():
            times = [get(path, **params) for _ in range(2 if smoke else 7)]
            rows.append({"request": name, "min ms": 1000 * min(times), "median ms": 1000 * statistics.median(times), "max ms": 1000 * max(times)})
    _table(f"the explorer on a {len(edges):,}-edge run (target: < 300 ms after the first request)", rows)


# -- peer: auto-circuit --------------------------------------------------------------------------
PEER_VENV = Path(__file__).resolve().parent.parent / ".bench-venvs" / "auto-circuit"


def _peer_python() -> Path:
    """The auto-circuit virtualenv's python, created on first use."""
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        print(f"installing auto-circuit into {PEER_VENV} (first use; a few minutes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        # auto-circuit 1.0.1 imports attr (undeclared) and transformer_lens.past_key_value_caching (gone in 3.x)
        # transformer_lens 2.x pins numpy < 2, which newer pyarrow / datasets refuse
        subprocess.run([*pip, "auto-circuit", "attrs", "transformer_lens>=2.16,<3", "pyarrow<20", "datasets<3"], check=True)
    return py


def peer_edge_key(src: str, dest: str) -> tuple[str, str, str]:
    """auto-circuit node names -> our (sender, receiver, channel) local ids.

    ``Resid Start`` is the embedding (plus positions), ``A{l}.{h}`` a head's output,
    ``A{l}.{h}.Q|K|V`` its input channels, ``MLP {l}`` an MLP, ``Resid End`` the logits.
    """
    def node(name: str) -> tuple[str, str]:
        if name == "Resid Start":
            return "EMBED", ""
        if name == "Resid End":
            return "LOGITS", "in"
        if name.startswith("MLP "):
            return f"L{int(name[4:])}.MLP", "in"
        if name.startswith("A"):
            parts = name[1:].split(".")
            channel = parts[2].lower() if len(parts) == 3 else ""
            return f"L{int(parts[0])}.H{int(parts[1])}", channel
        raise ValueError(f"unknown auto-circuit node {name!r}")

    (pre, _), (post, channel) = node(src), node(dest)
    return pre, post, channel


def bench_peer(smoke: bool) -> None:
    import json

    import torch
    from scipy.stats import spearmanr
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from ingest.edges.methods import compute_eap
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model
    from ingest.model.tasks import InductionTask, PromptBatch, get_task

    threads = 2
    torch.set_num_threads(threads)
    py = _peer_python()
    models: list[tuple[str, Any, dict[str, Any]]] = []
    if smoke:
        tiny = {"n_layers": 2, "d_model": 32, "n_ctx": 32, "d_head": 8, "n_heads": 4, "d_vocab": 50, "d_mlp": 64, "act_fn": "gelu",
                "normalization_type": "LN", "seed": 0}
        models.append(("tiny (2L x 4H, d32)", HookedTransformer(HookedTransformerConfig(**tiny)), tiny))
    else:
        zoo_config = Path(__file__).resolve().parent.parent / "ingest" / "model" / "zoo_weights" / "induction-2l" / "config.json"
        models.append(("induction-2l", load_model("induction-2l", Path(tempfile.mkdtemp())).model, json.loads(zoo_config.read_text())))
        gpt2 = {"n_layers": 12, "d_model": 768, "n_ctx": 1024, "d_head": 64, "n_heads": 12, "d_vocab": 50257, "d_mlp": 3072,
                "act_fn": "gelu_new", "normalization_type": "LN", "seed": 0}
        models.append(("GPT-2-small shape (random)", HookedTransformer(HookedTransformerConfig(**gpt2)), gpt2))
    task = get_task("induction", metric="target-logit")
    repeats = 1 if smoke else 3
    rows = []
    for name, model, config in models:
        model.eval()
        base = InductionTask(half=8).make_batch(model, 8, 0)
        mask = torch.zeros_like(base.mask)
        mask[:, -1] = True  # auto-circuit scores the last position ("last_seq")
        batch = PromptBatch(base.clean, base.corrupted, base.targets, mask)
        graph = build_graph(model, "bench")
        t_ours = _time(lambda: compute_eap(model, graph, task, batch), repeats)
        ours = compute_eap(model, graph, task, batch)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "config.json").write_text(json.dumps(config))
            torch.save(model.state_dict(), folder / "model.pt")
            torch.save({"clean": batch.clean, "corrupted": batch.corrupted, "answers": batch.targets[:, -1]}, folder / "prompts.pt")
            proc = subprocess.run([str(py), str(Path(__file__).resolve().parent / "peer_autocircuit.py"), str(folder), str(repeats), str(threads)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"auto-circuit failed: {proc.stderr[-1500:]}")
            peer = json.loads((folder / "peer.json").read_text())
        key = ours["componentId_pre"].str.rsplit("/", n=1).str[1] + "|" + ours["componentId_post"].str.rsplit("/", n=1).str[1] + "|" + ours["channel"]
        mine = dict(zip(key, ours["score"]))
        theirs = {"|".join(peer_edge_key(s, d)): -v for s, d, v in peer["edges"]}  # they minimise -metric
        shared = sorted(set(mine) & set(theirs))
        a = np.array([mine[k] for k in shared])
        b = np.array([theirs[k] for k in shared])
        rows.append({"model": name, "edges ours / theirs / shared": f"{len(mine)} / {len(theirs)} / {len(shared)}",
                     "atlas EAP s": t_ours, "auto-circuit EAP s": peer["seconds"], "auto-circuit / atlas": peer["seconds"] / t_ours,
                     "auto-circuit wrap s": peer["wrapSeconds"], "Spearman": float(spearmanr(a, b)[0]),
                     "max rel diff": float(np.abs(a - b).max() / np.abs(a).max())})
    _table("peer: auto-circuit EAP vs atlas EAP, same model and prompts (8 x 16 tokens, last-position target logit, 2 threads)", rows)
    if min(r["Spearman"] for r in rows) < 0.99:
        raise SystemExit("auto-circuit and atlas EAP disagree (Spearman < 0.99): see the table above")


# -- demo --------------------------------------------------------------------------------------
def bench_demo(smoke: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ATLAS_HOME": str(Path(tmp) / ".atlas")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "atlas_cli", "demo", "--quiet", "--prompts", "4" if smoke else "16"],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "atlas_cli", "db", "stop"], cwd=tmp, env=env, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: {proc.stderr[-500:]}")
    _table("atlas demo end to end, fresh atlas home (target < 60 s)", [{"wall s": wall}])


def bench_precision(smoke: bool, device: str | None) -> None:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from atlas.stats import spearman
    from ingest.edges.methods import MethodConfig, compute_eap, compute_eap_ig, compute_patching
    from ingest.model.device import place_model, resolve_device
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model
    from ingest.model.tasks import InductionTask, get_task
    from ingest.model.zoo import ZOO

    torch.set_num_threads(2)
    target = resolve_device(device)
    cases: list[tuple[str, Callable[[], Any], Any, bool]] = []
    if smoke:
        cfg = dict(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=50, d_mlp=64, act_fn="gelu", normalization_type="LN", seed=0)
        cases.append(("tiny (2L x 4H, d32)", lambda: HookedTransformer(HookedTransformerConfig(**cfg)), InductionTask(half=8), True))
    else:
        home = Path(tempfile.mkdtemp())
        for name, entry in ZOO.items():
            task = InductionTask(half=8) if entry.task == "induction" else get_task(entry.task)
            cases.append((name, lambda name=name: load_model(name, home, device="cpu").model, task, True))
        gpt2 = dict(n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_vocab=50257, d_mlp=3072, act_fn="gelu_new",
                    normalization_type="LN", seed=0)
        cases.append(("GPT-2-small shape (random)", lambda: HookedTransformer(HookedTransformerConfig(**gpt2)), InductionTask(half=8), False))
    methods: list[tuple[str, Any]] = [("EAP", compute_eap), ("EAP-IG(5)", lambda *a: compute_eap_ig(*a, MethodConfig(steps=5)))]
    rows = []
    key = ["componentId_pre", "componentId_post", "channel"]
    for name, build, task, with_patching in cases:
        scores: dict[tuple[str, str], pd.Series] = {}
        for dtype in ("float32", "bfloat16", "float16"):
            model = place_model(build(), target, dtype)
            batch = task.make_batch(model, 8, 0).to(target)
            graph = build_graph(model, "bench")
            for label, fn in methods + ([("patching", compute_patching)] if with_patching else []):
                scores[(dtype, label)] = fn(model, graph, task, batch).set_index(key)["score"]
            del model
        for label in [m for m, _ in methods] + (["patching"] if with_patching else []):
            ref = scores[("float32", label)]
            row: dict[str, Any] = {"model": name, "method": label, "edges": len(ref)}
            for dtype in ("bfloat16", "float16"):
                got = scores[(dtype, label)].loc[ref.index]
                row[f"{dtype} Spearman"] = spearman(ref, got)
                row[f"{dtype} max |diff| / max |score|"] = float((ref - got).abs().max() / ref.abs().max())
            rows.append(row)
    _table(f"precision: bfloat16 and float16 scores against float32 (8 prompts of each model's task; on {target})", rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite runs this)")
    p.add_argument("--only", action="append", choices=["attribution", "peer", "loading", "paths", "explorer", "scale", "demo", "precision", "startup", "gpu"])
    p.add_argument("--home", help="atlas home of the embedded database to load into (default: a fresh temporary one)")
    p.add_argument("--device", help="precision: where to compute (default: auto)")
    p.add_argument("--sizes", default="8,32,128,512", help="attribution: prompt counts of the by-prompts table (default 8,32,128,512)")
    p.add_argument("--repeats", type=int, default=3, help="attribution and loading: repetitions (default 3)")
    p.add_argument("--explorer-run", help="explorer: time this run of --home instead of a synthetic 1.1M-edge one")
    a = p.parse_args(argv)
    # gpu runs only when asked for (it needs CUDA); everything else by default
    only = set(a.only or ["attribution", "peer", "loading", "paths", "explorer", "scale", "demo", "precision", "startup"])
    tmp = None
    home = Path(a.home) if a.home else Path(tmp := tempfile.mkdtemp(prefix="atlas-bench-"))
    try:
        if "attribution" in only:
            bench_attribution(a.smoke, tuple(int(x) for x in a.sizes.split(",")), a.repeats)
        if "peer" in only:
            bench_peer(a.smoke)
        if "loading" in only:
            bench_loading(a.smoke, home, a.repeats)
        if "paths" in only:
            bench_paths(a.smoke, home)
        if "explorer" in only:
            bench_explorer(a.smoke, home, a.explorer_run)
        if "scale" in only:
            from bench.scale import bench_scale

            _table("a GPT-2-small-shaped connectome at neuron granularity, end to end (peak memory over each stage)",
                   bench_scale(a.smoke, home))
        if "demo" in only:
            bench_demo(a.smoke)
        if "precision" in only:
            bench_precision(a.smoke, a.device)
        if "startup" in only:
            from bench.startup import bench_startup

            _table("start-up, each in a fresh process (min / median / max; targets: a server start under 2 s, db stop only once exited)",
                   bench_startup(a.smoke, a.repeats))
        if "gpu" in only:
            from bench.gpu import bench_gpu

            bench_gpu(a.smoke)
    finally:
        if tmp is not None:
            import shutil

            from atlas.server import stop_server

            stop_server(home)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
