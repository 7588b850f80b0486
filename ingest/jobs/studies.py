"""Study jobs over the store: lesions, verification of fast runs, circuits, anatomy and probes.

Like ``ingest.jobs.run`` (whose run writer they share), these compute first and write after, and are
idempotent per run or per model: re-running changes no counts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import chosen_run_id, local_id
from atlas.records import CircuitRecord, DictionaryRecord, RunRecord
from atlas.schema import MAX_PROMPTS, Method, RelType
from atlas.stats import spearman
from atlas.store import Store
from ingest.jobs.run import ComputedRun, IngestConfig, check_existing, make_progress, write_run
from ingest.model.context import StudyContext, load_context, resolve_task

__all__ = ["LesionConfig", "LesionResult", "VerifyResult", "StudyContext", "run_lesion", "verify_run", "save_circuit", "run_anatomy", "run_probe", "run_population", "train_sae",
           "run_lens", "LensRun", "task_loss", "run_decode", "run_views", "run_gain", "run_noise", "run_encode"]

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass(frozen=True)
class LesionResult:
    """A lesion run: ``status`` is ``written`` or ``unchanged``; ``frame`` holds the effects
    (``componentId, kind, layer, effect`` for nodes; an edge frame with ``effect`` for edges),
    None when an unchanged run was not recomputed."""

    run_id: str
    status: str
    frame: pd.DataFrame | None


@dataclass(frozen=True)
class VerifyResult:
    """Exact patching of a fast run's top edges (also stored on the run as ``verify*`` figures)."""

    run_id: str
    top: int
    spearman: float
    explained: float
    faithfulness: float
    edges: pd.DataFrame

    def figures(self) -> dict[str, Any]:
        """The figures as JSON-ready camelCase values (NaN as None)."""
        raw = {"runId": self.run_id, "top": self.top, "spearman": self.spearman, "explained": self.explained,
               "faithfulness": self.faithfulness}
        return {k: None if isinstance(v, float) and v != v else v for k, v in raw.items()}


@dataclass(frozen=True)
class LesionConfig:
    """A lesion study: ``scope`` ``node`` (each component) or ``edge`` (path patching of each edge)."""

    model: str
    task: str = "induction"
    ablation: str = "zero"
    scope: str = "node"
    metric: str = "logit"
    n_prompts: int = 16
    n_reference: int = 32
    seed: int = 0
    model_id: str | None = None

    def validate(self) -> LesionConfig:
        from ingest.edges.interventions import ABLATIONS

        if self.ablation not in ABLATIONS:
            raise ValidationError(f"unknown ablation {self.ablation!r}: choose one of {list(ABLATIONS)}")
        if self.scope not in ("node", "edge"):
            raise ValidationError(f"scope must be node or edge, got {self.scope!r}")
        if not (1 <= self.n_prompts <= MAX_PROMPTS and 1 <= self.n_reference <= MAX_PROMPTS):
            raise ValidationError(f"--prompts and --reference must be between 1 and {MAX_PROMPTS:,}")
        return self

    def to_json(self) -> str:
        data = asdict(self)
        if self.model_id is None:  # ids of runs made before --model-id stay as they were
            data.pop("model_id")
        return json.dumps(data, sort_keys=True)

    def default_run_id(self, model_id: str) -> str:
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"{model_id}:{self.task}:lesion-{self.scope}-{self.ablation}:{digest}"


def run_lesion(store: Store, config: LesionConfig, home: Path, run_id: str | None = None, *, progress: bool = True, log: Log = _stderr) -> LesionResult:
    """Lesion every node (or edge) and write ``ABLATION`` edges; returns a :class:`LesionResult`.

    Node scope writes ``(component)-[:ABLATION {runId, effect, ablation, scope: "node"}]->(:Logit)``;
    edge scope writes one ``ABLATION`` per edge with its channel. Mean and resample statistics come
    from ``n_reference`` reference prompts (seed + 1), recorded on the run.
    """
    from ingest.edges.interface import sender_outputs
    from ingest.edges.interventions import ablated_outputs, compute_node_lesions
    from ingest.edges.methods import compute_patching

    config.validate()
    if run_id is not None:
        existing = check_existing(store, run_id, config.to_json())
        if existing is not None and existing.complete:
            return LesionResult(run_id, "unchanged", None)
    ctx = load_context(config.model, config.task, config.n_prompts, config.seed, home, metric=config.metric, model_id=config.model_id,
                       progress=make_progress(True))
    loaded, graph, task, batch = ctx.loaded, ctx.graph, ctx.task, ctx.batch
    reference = task.make_batch(loaded.model, config.n_reference, config.seed + 1).clean
    ablated = ablated_outputs(loaded.model, graph, batch, config.ablation, reference, seed=config.seed)
    if config.scope == "node":
        bar = make_progress(progress)(len(graph.senders), f"lesioning {loaded.model_id}")
        frame = compute_node_lesions(loaded.model, graph, task, batch, ablated, progress=bar.update)
        bar.close()
        logits = graph.receivers[-1].component_id
        edges = pd.DataFrame({"componentId_pre": frame["componentId"], "componentId_post": logits, "channel": "in", "score": frame["effect"]})
    else:
        n = sum(len(graph.visible(r)) for r in graph.receivers)
        bar = make_progress(progress)(n, f"path patching {loaded.model_id}")
        delta = ablated - sender_outputs(loaded.model, graph, batch.clean)
        edges = compute_patching(loaded.model, graph, task, batch, delta=delta, progress=bar.update)
        bar.close()
        frame = edges.rename(columns={"score": "effect"})
    run_id = chosen_run_id(run_id, config.default_run_id(loaded.model_id))
    existing = check_existing(store, run_id, config.to_json())
    if existing is not None and existing.complete:
        return LesionResult(run_id, "unchanged", frame)
    run = RunRecord(
        run_id=run_id, model_id=loaded.model_id, task=config.task, method="lesion", metric=config.metric,
        n_prompts=config.n_prompts, config_json=config.to_json(),
        details={"ablation": config.ablation, "scope": config.scope,
                 "referencePrompts": config.n_reference if config.ablation in ("mean", "resample") else None,
                 "referenceSeed": config.seed + 1 if config.ablation in ("mean", "resample") else None},
    )
    write_run(store, ComputedRun(loaded, graph.nodes_frame(), edges), run, rel_type=RelType.ABLATION,
              edge_props={"ablation": config.ablation, "scope": config.scope}, unfinished=existing is not None,
              progress=progress, log=log)
    return LesionResult(run_id, "written", frame)


def _run_context(store: Store, run_id: str, home: Path) -> tuple[RunRecord, StudyContext]:
    run = cx.require_run(store, run_id)
    if not run.complete:
        raise ValidationError(f"run {run_id!r} is not complete (status {run.status.value!r})")
    if run.method not in {m.value for m in Method}:
        raise ValidationError(f"run {run_id!r} is a {run.method} run; give an attribution run")
    from ingest.jobs.run import run_graph

    cfg = IngestConfig.from_json(run.config_json or "{}")
    ctx = load_context(cfg.model, cfg.task, cfg.n_prompts, cfg.seed, home, metric=cfg.metric, model_id=cfg.model_id, progress=make_progress(True),
                       dtype=cfg.dtype)  # the precision the run was computed in
    _check_run_model(store, run, ctx.loaded, cfg.model)
    if cfg.granularity != "head":  # the same neurons or features the run chose
        graph, _ = run_graph(cfg, ctx.loaded, ctx.task, ctx.batch)
        ctx = replace(ctx, graph=graph)
    return run, ctx


def _check_run_model(store: Store, run: RunRecord, loaded: Any, spec: str) -> None:
    """Refuse a reloaded model that is not the one ``run`` was made with (its weights changed)."""
    stored = cx.fetch_model(store, run.model_id)
    if loaded.model_id != run.model_id or (stored and stored.weights_hash and stored.weights_hash != loaded.weights_hash):
        raise ValidationError(f"the model of run {run.run_id!r} ({spec}) is not the one the run was made with any more: its weights changed")


def align_runs(store: Store, run_a: str, run_b: str, home: Path, *, threshold: float = 0.0, depth_weight: float = 0.0,
               n_null: int = 100, require_significant: bool = True, seed: int = 0, progress: bool = True) -> Any:
    """Functional alignment (:func:`ingest.toolbox.alignment.functional_alignment`) of the models of two
    attribution runs, on both runs' task prompts where both models accept them; returns the
    :class:`ingest.toolbox.alignment.Alignment` (not stored: :func:`atlas.connectome.write_alignment` keeps it).

    Raises:
        ValidationError: a run that is not an attribution run, or whose model file changed.
    """
    from ingest.model.loading import load_model
    from ingest.toolbox.alignment import functional_alignment, shared_stimuli

    loaded, prompts = [], []
    for run_id in (run_a, run_b):
        run = cx.require_run(store, run_id)
        try:
            cfg = IngestConfig.from_json(run.config_json or "{}")
        except (TypeError, KeyError, ValueError) as exc:
            raise ValidationError(f"run {run_id!r} is a {run.method} run: functional alignment needs attribution runs "
                                  "(or --align structure, which needs no model)") from exc
        model = load_model(cfg.model, home, make_progress(progress), model_id=cfg.model_id, dtype=cfg.dtype)
        _check_run_model(store, run, model, cfg.model)
        batch = load_context(cfg.model, cfg.task, cfg.n_prompts, cfg.seed, home, metric=cfg.metric, loaded=model, graph=False).batch
        loaded.append(model)
        prompts += [batch.clean, batch.corrupted]
    (a, b) = loaded
    tokens, what = shared_stimuli(a.model, b.model, prompts)
    bar = make_progress(progress)(n_null, "null models")
    try:
        out = functional_alignment(a.model, a.model_id, b.model, b.model_id, tokens, threshold=threshold, depth_weight=depth_weight,
                                   n_null=n_null, require_significant=require_significant, seed=seed, progress=bar.update)
    finally:
        bar.close()
    out.figures["stimuli"] = what
    return out


def _overlapping_parts(graph: Any) -> bool:
    """Neurons or features sit in the graph next to their whole MLP: two descriptions of the same
    computation, so "the circuit with every other edge ablated" has no single meaning there."""
    return bool(graph.neurons() or graph.features())


def _edge_indices(graph: Any, frame: pd.DataFrame) -> list[tuple[int, int]]:
    send = {s.component_id: s.index for s in graph.senders}
    recv = {(r.component_id, r.channel.value): r.index for r in graph.receivers}
    try:
        return [(send[a], recv[(b, c)]) for a, b, c in zip(frame["componentId_pre"], frame["componentId_post"], frame["channel"])]
    except KeyError as exc:
        raise ValidationError(f"edge {exc.args[0]} of the run is not in the model's graph") from exc


def _top_edges(store: Store, run_id: str, top: int | None, min_weight: float) -> pd.DataFrame:
    df = cx.fetch_edges(store, run_id, top=top, min_weight=min_weight)[["componentId_pre", "componentId_post", "channel", "score"]]
    if df.empty:
        raise ValidationError(f"run {run_id!r} has no edges with |score| >= {min_weight}")
    return df


def verify_run(store: Store, run_id: str, top: int, home: Path, *, progress: bool = True) -> VerifyResult:
    """Patch the top-``top`` edges of a fast run exactly; store them as ``ABLATION {ablation: "patch"}``.

    Returns (and stores on the run) the Spearman correlation of the fast scores with the exact effects
    on those edges, the sum of their exact effects as a share of the clean-corrupt gap, and the
    faithfulness of the top-K edges as a circuit (every other edge corrupted).
    """
    from ingest.edges.interventions import ablated_outputs, faithfulness
    from ingest.edges.methods import compute_patching

    if top < 2:
        raise ValidationError("--top must be at least 2 to correlate")
    run, ctx = _run_context(store, run_id, home)
    loaded, graph, task, batch = ctx.loaded, ctx.graph, ctx.task, ctx.batch
    fast = _top_edges(store, run_id, top, 0.0)
    idx = _edge_indices(graph, fast)
    bar = make_progress(progress)(len(idx), "patching top edges")
    exact = compute_patching(loaded.model, graph, task, batch, edges=idx, progress=bar.update)
    bar.close()
    key = ["componentId_pre", "componentId_post", "channel"]
    merged = fast.merge(exact.rename(columns={"score": "effect"}), on=key)
    if _overlapping_parts(graph):  # no circuit faithfulness (see _overlapping_parts); the gap from the runs themselves
        import torch

        with torch.no_grad():
            gap = float(task.metric(loaded.model(batch.corrupted), batch).mean() - task.metric(loaded.model(batch.clean), batch).mean())
        faith = {"faithfulness": float("nan")}
    else:
        ablated = ablated_outputs(loaded.model, graph, batch, "corrupt")
        faith = faithfulness(loaded.model, graph, task, batch, ablated, set(idx))
        gap = faith["metricEmpty"] - faith["metricFull"]
    rho = spearman(merged["score"], merged["effect"]) if len(merged) > 2 else float("nan")
    result = VerifyResult(
        run_id=run_id, top=len(merged), spearman=rho,
        explained=float(merged["effect"].sum() / gap) if abs(gap) > 1e-12 else float("nan"),
        faithfulness=float(faith["faithfulness"]), edges=merged,
    )
    cx.delete_run_edges(store, run_id, rel_type=RelType.ABLATION)
    cx.write_edges(store, exact, run_id, rel_type=RelType.ABLATION, props={"ablation": "patch", "scope": "edge"})
    cx.write_run_figures(store, run_id, {
        "verifyTopK": result.top, "verifySpearman": rho, "verifyExplained": result.explained,
        "verifyFaithfulness": result.faithfulness,
    })
    return result


def save_circuit(store: Store, run_id: str, home: Path, *, top: int | None = None, min_weight: float = 0.0,
                 ablation: str = "corrupt", n_reference: int = 32) -> CircuitRecord:
    """Keep the top-N (or ``|score| >= min_weight``) edges of a run, ablate the rest, save a ``:Circuit``.

    The circuit id records the selection and the ablation, since faithfulness depends on both.
    """
    from ingest.edges.interventions import ablated_outputs, faithfulness

    if top is None and min_weight <= 0:
        raise ValidationError("choose the circuit: --top N or --min-weight W")
    run, ctx = _run_context(store, run_id, home)
    loaded, graph, task, batch = ctx.loaded, ctx.graph, ctx.task, ctx.batch
    if _overlapping_parts(graph):
        raise ValidationError(f"run {run_id!r} holds neurons or features next to their MLPs; circuits need a head-level run")
    cfg = IngestConfig.from_json(run.config_json or "{}")
    edges = _top_edges(store, run_id, top, min_weight)
    keep = set(_edge_indices(graph, edges))
    reference = task.make_batch(loaded.model, n_reference, cfg.seed + 1).clean
    faith = faithfulness(loaded.model, graph, task, batch, ablated_outputs(loaded.model, graph, batch, ablation, reference), keep)
    selection = f"top{top}" if top is not None else f"w{min_weight:g}"
    circuit_id = f"{run_id}/{selection}-{ablation}"
    members: dict[str, str] = {}
    for a, b in zip(edges["componentId_pre"], edges["componentId_post"]):
        members.setdefault(a, "input" if local_id(a) == "EMBED" else "internal")
        members[b] = "output" if local_id(b) == "LOGITS" else members.get(b, "internal")
    circuit = CircuitRecord(
        circuit_id=circuit_id, run_id=run_id, kind="pruned", members=members,
        edge_keys=tuple(f"{a}|{b}|{c}" for a, b, c in zip(edges["componentId_pre"], edges["componentId_post"], edges["channel"])),
        details={"modelId": run.model_id, "ablation": ablation, "selection": selection, "nEdges": len(edges), "nNodes": len(members), **faith},
    )
    cx.write_circuit(store, circuit)
    return circuit


def run_anatomy(store: Store, model: str, home: Path, n_random: int = 200, model_id: str | None = None) -> pd.DataFrame:
    """Compute and (re)write the model's ``COMPOSITION`` edges; returns them."""
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model, model_record
    from ingest.toolbox.anatomy import compute_composition

    loaded = load_model(model, home, make_progress(True), model_id=model_id)
    frame = compute_composition(loaded.model, loaded.model_id, n_random)
    cx.ensure_schema(store)
    cx.write_model(store, model_record(loaded))
    cx.write_components(store, build_graph(loaded.model, loaded.model_id).nodes_frame())
    cx.delete_model_edges(store, loaded.model_id, RelType.COMPOSITION)
    cx.write_edges(store, frame.assign(kind=frame["channel"]), None, rel_type=RelType.COMPOSITION, props={"modelId": loaded.model_id})
    return frame


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`run_probe` measured: the component frame (stored), the per-prompt activations
    (with ``per_prompt``) and a line saying which stimuli were used and why."""

    frame: pd.DataFrame
    prompts: pd.DataFrame | None
    stimuli: str


def run_probe(store: Store, model: str, home: Path, n: int = 32, seed: int = 7, model_id: str | None = None,
              task: str | None = None, per_prompt: bool = False) -> ProbeResult:
    """Measure role scores and receptive fields and store them on the components.

    Stimuli: the generic probe, unless ``task`` is given or the model's context is too short for it
    (then its own task's prompts: the zoo model's task, else ``task`` must be given).

    Raises:
        ValidationError: a short-context model that is not a zoo model, without ``task``.
    """
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model, model_record
    from ingest.model.tasks import get_task
    from ingest.model.zoo import ZOO
    from ingest.toolbox.probes import MIN_PROBE_HALF, compute_neuron_stats, compute_probes, generic_probe_fits, probe_tokens, prompt_activations

    loaded = load_model(model, home, make_progress(True), model_id=model_id)
    fits = generic_probe_fits(loaded.model)
    tokens, probe = None, None
    if task is not None or not fits:
        if task is None and model.split("@", 1)[0] not in ZOO:
            raise ValidationError(f"the context of {loaded.model_id} ({loaded.model.cfg.n_ctx} tokens) is too short for the generic "
                                  f"probe (it needs {2 * MIN_PROBE_HALF}): give --task with prompts the model reads")
        name = resolve_task(task or "default", model)
        tokens = get_task(name).make_batch(loaded.model, n, seed).clean
        why = f"the context ({loaded.model.cfg.n_ctx} tokens) is too short for the generic probe" if not fits else "asked for"
        probe = f"task:{name} ({tokens.shape[0]} prompts of {tokens.shape[1]} tokens, seed={seed}; {why})"
    frame = compute_probes(loaded.model, loaded.model_id, n=n, seed=seed, tokens=tokens, probe=probe)
    neurons = compute_neuron_stats(loaded.model, loaded.model_id, n=n, seed=seed, tokens=tokens, probe=probe)
    cx.ensure_schema(store)
    cx.write_model(store, model_record(loaded))
    cx.write_components(store, build_graph(loaded.model, loaded.model_id).nodes_frame())
    cx.clear_probe_properties(store, loaded.model_id)  # a role undefined on these stimuli must not keep an old value
    cx.write_components(store, frame)
    if not neurons.empty:
        cx.write_components(store, neurons)
        mlp = {layer: f"{loaded.model_id}/L{layer}.MLP" for layer in neurons["layer"].unique()}
        cx.write_part_of(store, [(cid, mlp[layer]) for cid, layer in zip(neurons["componentId"], neurons["layer"])])
    stimuli = str(frame["probe"].iloc[0]) if len(frame) else ""
    prompts = prompt_activations(loaded.model, loaded.model_id, tokens if tokens is not None else probe_tokens(loaded.model, n, seed=seed)) \
        if per_prompt else None
    return ProbeResult(pd.concat([frame, neurons], ignore_index=True), prompts, stimuli)


@dataclass(frozen=True)
class LensRun:
    """``atlas lens``: the run it stored (``status`` written or unchanged) and the figures."""

    run_id: str
    status: str
    result: Any


def _store_on_components(store: Store, m: StudyContext, props: pd.DataFrame, clear: tuple[str, ...] = ()) -> pd.DataFrame:
    """Write the model, its components and ``props`` (``componentId`` + figure columns) onto them,
    first removing the properties ``clear`` (another measurement's figures must not linger); returns
    the node frame."""
    from ingest.model.loading import model_record

    nodes = m.graph.nodes_frame()
    cx.ensure_schema(store)
    cx.write_model(store, model_record(m.loaded))
    cx.write_components(store, nodes)
    if clear:
        cx.clear_component_properties(store, m.loaded.model_id, clear)
    cx.write_components(store, nodes.merge(props, on="componentId", how="inner"))
    return nodes


def _study_id(m: StudyContext, method: str, config: dict[str, Any]) -> tuple[str, str]:
    """(run id, configuration JSON) of a study's run: one id per configuration and weights."""
    text = json.dumps({**config, "weightsHash": m.loaded.weights_hash}, sort_keys=True)
    return f"{m.loaded.model_id}:{m.task_name}:{method}:{hashlib.sha256(text.encode()).hexdigest()[:8]}", text


def _study_run(store: Store, m: StudyContext, method: str, config: dict[str, Any], details: dict[str, Any]) -> tuple[str, str]:
    """The ``:Run`` of a study with no edges of its own (its figures are ``details``), written complete
    once per configuration; returns (run id, written or unchanged)."""
    from ingest.model.loading import model_record

    run_id, text = _study_id(m, method, config)
    existing = check_existing(store, run_id, text)
    if existing is not None and existing.complete:
        return run_id, "unchanged"
    run = RunRecord(run_id=run_id, model_id=m.loaded.model_id, task=m.task_name, method=method, n_prompts=config.get("nPrompts"),
                    config_json=text, details=details, n_edges=0)
    cx.write_run(store, run, model_record(m.loaded), m.graph.nodes_frame(), [], unfinished=existing is not None)
    return run_id, "written"


def run_lens(store: Store, model: str, home: Path, *, task: str | None = None, n_prompts: int = 64, seed: int = 0,
             model_id: str | None = None) -> LensRun:
    """Predictive coding (:mod:`ingest.toolbox.lens`) on a task's prompts: the per-layer figures go on a
    ``:Run`` (``method: "lens"``, ``lensLayersJson``), the per-component ones on the components
    (:data:`ingest.toolbox.lens.LENS_PROPERTIES`, replaced each time). Idempotent per configuration."""
    from ingest.toolbox.lens import LENS_PROPERTIES, compute_lens

    if not 2 <= n_prompts <= MAX_PROMPTS:
        raise ValidationError(f"--prompts must be between 2 and {MAX_PROMPTS:,} (the tuned lens is fitted on half), got {n_prompts:,}")
    m = load_context(model, task or "default", n_prompts, seed, home, model_id=model_id, progress=make_progress(True))
    result = compute_lens(m.loaded.model, m.graph, m.batch, seed=seed)
    _store_on_components(store, m, result.components.drop(columns=["kind", "layer"]).assign(lensTask=m.task_name), clear=LENS_PROPERTIES)
    run_id, status = _study_run(store, m, "lens", {"model": model, "task": m.task_name, "nPrompts": n_prompts, "seed": seed},
                                {"lensLayersJson": json.dumps(result.layers.to_dict("records")), "lensSummaryJson": json.dumps(result.summary)})
    return LensRun(run_id, status, result)


def run_decode(store: Store, model: str, home: Path, *, layer: int, variable: str, task: str | None = None, n_prompts: int = 32,
               seed: int = 0, decoder: str = "ridge", model_id: str | None = None) -> pd.DataFrame:
    """Cross-validated decoding of ``variable`` from a layer's components and streams
    (:func:`ingest.toolbox.decode.decode_layer`); each component's accuracy and null go on it as
    ``decode<Variable>``/``decode<Variable>Null`` (with ``decode<Variable>Task``)."""
    from ingest.toolbox.decode import decode_layer, property_name

    m = load_context(model, task or "default", n_prompts, seed, home, model_id=model_id, progress=make_progress(True))
    frame = decode_layer(m.loaded.model, m.graph, m.batch, layer, variable, seed=seed, decoder=decoder)
    key = property_name(variable)
    parts = frame.dropna(subset=["componentId"])
    _store_on_components(store, m, pd.DataFrame({"componentId": parts["componentId"], key: parts["accuracy"], f"{key}Null": parts["null"],
                                                 f"{key}Task": f"{m.task_name} ({decoder}, {n_prompts} prompts, seed {seed})"}))
    return frame.assign(task=m.task_name)


def run_views(store: Store, model: str, home: Path, *, layer: int, variable: str, method: str = "pca", task: str | None = None,
              n_prompts: int = 32, seed: int = 0, model_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """2-D views of a layer's population (:func:`ingest.toolbox.views.population_views`); each component keeps
    ``pcaTop2``, ``viewVariable``, ``viewSeparation`` and ``viewSeparationNull`` (the HTML export's
    tooltips show them)."""
    from ingest.toolbox.views import population_views

    m = load_context(model, task or "default", n_prompts, seed, home, model_id=model_id, progress=make_progress(True))
    points, summary = population_views(m.loaded.model, m.graph, m.batch, layer, variable, method=method, seed=seed)
    parts = summary.dropna(subset=["componentId"])
    _store_on_components(store, m, pd.DataFrame({"componentId": parts["componentId"], "pcaTop2": parts["pcaTop2"],
                                                 "viewVariable": f"{variable} ({method}, {m.task_name})", "viewSeparation": parts["separation"],
                                                 "viewSeparationNull": parts["separationNull"]}))
    return points, summary


def run_gain(store: Store, model: str, home: Path, *, layer: int, n_stimuli: int = 16, n_contexts: int = 16, context_length: int = 8,
             seed: int = 0, model_id: str | None = None) -> pd.DataFrame:
    """Gain control of a layer's heads and MLP (:func:`ingest.toolbox.gain.gain_study`), stored on them
    (:data:`ingest.toolbox.gain.GAIN_PROPERTIES`)."""
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model
    from ingest.toolbox.gain import GAIN_PROPERTIES, gain_study

    loaded = load_model(model, home, make_progress(True), model_id=model_id)
    graph = build_graph(loaded.model, loaded.model_id)
    frame = gain_study(loaded.model, graph, layer, n_stimuli=n_stimuli, n_contexts=n_contexts, context_length=context_length, seed=seed)
    _store_on_components(store, StudyContext(loaded, graph, None, None, "random contexts"), frame[["componentId", *GAIN_PROPERTIES]])
    return frame


def _noisy(model: str, home: Path, task: str | None, n_prompts: int, repeats: int, sigma: float, seed: int,
           model_id: str | None) -> tuple[StudyContext, list[str], Any]:
    from ingest.toolbox.coding import noisy_responses

    m = load_context(model, task or "default", n_prompts, seed, home, model_id=model_id, progress=make_progress(True))
    ids, responses = noisy_responses(m.loaded.model, m.graph, m.batch, repeats=repeats, sigma=sigma, seed=seed)
    return m, ids, responses


def run_noise(store: Store, model: str, home: Path, *, task: str | None = None, n_prompts: int = 32, repeats: int = 8, sigma: float = 0.05,
              seed: int = 0, model_id: str | None = None) -> pd.DataFrame:
    """Signal and noise correlations of every pair of heads and MLPs (:mod:`ingest.toolbox.coding`), written as
    ``NOISE_CORRELATED`` relationships of a ``:Run`` (``method: "noise"``; rerunning one configuration
    replaces its relationships, other configurations keep theirs). The run is written last."""
    from ingest.toolbox.coding import noise_correlations

    m, ids, responses = _noisy(model, home, task, n_prompts, repeats, sigma, seed, model_id)
    pairs = noise_correlations(ids, responses, seed=seed)
    config = {"model": model, "task": m.task_name, "nPrompts": n_prompts, "repeats": repeats, "sigma": sigma, "seed": seed}
    run_id, text = _study_id(m, "noise", config)
    check_existing(store, run_id, text)  # refuses an id taken by another configuration before anything is written
    _store_on_components(store, m, pd.DataFrame({"componentId": []}))
    cx.write_noise_correlations(store, pairs, run_id, sigma, f"task:{m.task_name} ({n_prompts} prompts x {repeats} repeats, seed {seed})")
    _study_run(store, m, "noise", config, {"repeats": repeats, "sigma": sigma})
    return pairs.assign(runId=run_id)


def run_encode(store: Store, model: str, home: Path, *, task: str | None = None, n_prompts: int = 48, repeats: int = 8, sigma: float = 0.05,
               seed: int = 0, model_id: str | None = None) -> pd.DataFrame:
    """Encoding models of every head and MLP's single-trial response with the noise ceiling
    (:mod:`ingest.toolbox.coding`), stored on the components (``encodeR2*``, ``noiseCeiling``)."""
    from ingest.toolbox.coding import encoding_models

    m, ids, responses = _noisy(model, home, task, n_prompts, repeats, sigma, seed, model_id)
    frame = encoding_models(ids, responses, m.batch)
    props = frame.rename(columns={c: "encode" + c[0].upper() + c[1:] for c in frame.columns if c.startswith("r2")})
    _store_on_components(store, m, props.assign(encodeTask=f"task:{m.task_name} ({n_prompts} prompts, sigma {sigma}, seed {seed})"))
    return frame


def task_loss(model: str, task: str, n_prompts: int, seed: int, home: Path) -> float:
    """Cross-entropy of the task's targets at its scored positions (mean over them): the behaviour a
    checkpoint has learned, for ``atlas development``."""
    import torch

    ctx = load_context(model, task, n_prompts, seed, home, graph=False)
    batch = ctx.batch
    with torch.no_grad():
        logp = torch.log_softmax(ctx.loaded.model(batch.clean).double(), dim=-1)
    picked = logp.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-picked[batch.mask].mean())


def run_population(store: Store | None, model: str, home: Path, layer: int | None = None, debiased: bool = False, model_id: str | None = None) -> dict[str, pd.DataFrame]:
    """RSA / CKA / CCA tables on the probe set; with a store, the component pairs are (re)written as
    ``(a)-[:SIMILAR_TO {cka, cca, rsa, probe}]->(b)``."""
    from ingest.model.graph import build_graph
    from ingest.model.loading import load_model, model_record
    from ingest.toolbox.population import population_tables, representations
    from ingest.toolbox.probes import PROBE_NAME

    loaded = load_model(model, home, make_progress(True), model_id=model_id)
    tables = population_tables(representations(loaded.model, loaded.model_id, layer), debiased=debiased)
    if store is not None and not tables["components"].empty:
        cx.ensure_schema(store)
        cx.write_model(store, model_record(loaded))
        cx.write_components(store, build_graph(loaded.model, loaded.model_id).nodes_frame())
        cx.write_similarity(store, tables["components"], PROBE_NAME)
    return tables


def train_sae(store: Store | None, model: str, hook: str, n_features: int, home: Path, *, transcoder: bool = False,
              out: Path | None = None, steps: int = 3000, l1: float = 0.1, n_prompts: int = 2048, task: str = "default",
              seed: int = 0, progress: bool = True, model_id: str | None = None) -> dict[str, Any]:
    """Train a sparse dictionary on ``model``'s own activations and save it (sae-lens format).

    Activations: every position of ``n_prompts`` clean and corrupted prompts of ``task`` (``default``:
    the zoo model's own task; other models use ``induction``). With ``store``, the dictionary and
    its quality are recorded as ``(:Dictionary)`` next to the model, and every feature as a
    ``:Feature`` node (``PART_OF`` its ``:Mlp`` for MLP dictionaries) with sparse-coding statistics on
    the training prompts (up to 512 of them). Returns the stats and the path.
    """
    from ingest.model.loading import load_model, model_record
    from ingest.model.sae import collect_activations, save_dictionary, site_hooks, train_dictionary
    from ingest.model.tasks import get_task

    loaded = load_model(model, home, make_progress(progress), model_id=model_id)
    hook_in, hook_out = site_hooks(loaded.model, hook, transcoder)
    from ingest.model.zoo import ZOO

    own_task = task == "default" and model.split("@", 1)[0] in ZOO
    task_name = resolve_task(task, model) if own_task or task != "default" else "induction"
    batch = get_task(task_name).make_batch(loaded.model, n_prompts, seed)
    import torch

    tokens = torch.cat([batch.clean, batch.corrupted])
    x_in, x_out = collect_activations(loaded.model, tokens, hook_in, hook_out)
    short = (hook_out or hook_in).removeprefix("blocks.").replace("hook_", "")
    dict_id = f"{loaded.model_id.replace('/', '-')}.{'tc' if transcoder else 'sae'}{n_features}.{short}"
    bar = make_progress(progress)(steps, f"training {'transcoder' if transcoder else 'SAE'} ({n_features} features)")
    try:
        d = train_dictionary(x_in, x_out, n_features, hook_name=hook_in, hook_name_out=hook_out, model_name=loaded.model_id,
                             dictionary_id=dict_id, steps=steps, l1=l1, seed=seed, progress=bar.update)
    finally:
        bar.close()
    d.stats.update({"task": task_name, "nPrompts": n_prompts})
    folder = out or home / "dictionaries" / dict_id
    save_dictionary(d, folder)
    if store is not None:
        cx.ensure_schema(store)
        cx.write_model(store, model_record(loaded))
        row = {**d.stats, "dictionaryId": dict_id, "modelId": loaded.model_id, "hookName": hook_in, "hookNameOut": hook_out,
               "transcoder": transcoder, "architecture": d.architecture, "path": str(folder.resolve())}
        cx.write_dictionaries(store, [DictionaryRecord.from_props(row)])
        _write_feature_nodes(store, loaded, d, tokens[:512])
    return {"dictionaryId": dict_id, "path": str(folder), **d.stats}


def _write_feature_nodes(store: Store, loaded: Any, d: Any, tokens: Any) -> None:
    """Every feature of ``d`` as a node with its sparse-coding statistics on ``tokens``."""
    from atlas.ids import component_id
    from atlas.schema import ComponentKind
    from ingest.model.sae import collect_activations, hook_layer, mlp_layer
    from ingest.toolbox.probes import sparse_coding_rows

    try:
        layer, part_of = mlp_layer(d), True
    except ValidationError:  # a dictionary on another site: nodes without a PART_OF
        site = hook_layer(d.hook_name)
        if site is None:
            return
        layer, part_of = site, False
    x_in, _ = collect_activations(loaded.model, tokens, d.hook_name)
    acts = d.encode(x_in).reshape(tokens.shape[0], tokens.shape[1], -1)
    units = [{"componentId": component_id(loaded.model_id, ComponentKind.FEATURE, layer=layer, feature=f, dictionary_id=d.dictionary_id),
              "kind": "feature", "modelId": loaded.model_id, "layer": layer, "head": None, "feature": f, "dictionaryId": d.dictionary_id}
             for f in range(d.d_sae)]
    probe = f"the dictionary's training prompts ({len(tokens)})"
    nodes = pd.DataFrame(sparse_coding_rows(loaded.model, tokens, acts, units, probe))
    from ingest.model.graph import build_graph

    cx.write_components(store, build_graph(loaded.model, loaded.model_id).nodes_frame())  # the MLPs they are PART_OF
    cx.write_components(store, nodes)
    if part_of:
        cx.write_part_of(store, [(cid, f"{loaded.model_id}/L{layer}.MLP") for cid in nodes["componentId"]])
