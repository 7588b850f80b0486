"""Ingestion jobs: the one place where torch meets the store.

``run_ingest`` loads the model and task, computes the edge frame (pure, before any write), then
writes the model, its components, the ``:Run`` (status ``writing``) and the edges in batched
transactions, and marks the run ``complete`` last. Re-running a complete run id with the same
configuration changes nothing; a run id left unfinished (crash, Ctrl-C) has its partial edges
deleted and is written again; a run id reused with another configuration is refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from atlas import __version__
from atlas import connectome as cx
from atlas.errors import ValidationError
from atlas.ids import chosen_run_id, local_id
from atlas.records import DictionaryRecord, RunRecord
from atlas.schema import MAX_PROMPTS, MAX_STEPS, Granularity, Method, Metric, ModelFamily, RelType, choices
from atlas.store import Store
from ingest.model.hooks import hook_name

__all__ = ["IngestConfig", "IngestResult", "ComputedRun", "run_ingest", "compute_run", "make_progress"]


@dataclass(frozen=True)
class IngestConfig:
    """What an ingestion run computes; its JSON form is stored on the ``:Run`` as ``configJson``."""

    model: str
    task: str = "induction"
    method: str = Method.EAP_IG.value
    metric: str = "logit"
    n_prompts: int = 16
    steps: int = 5
    seed: int = 0
    granularity: str = "head"
    top_neurons: int = 8
    saes: tuple[str, ...] = ()
    top_features: int = 64
    model_id: str | None = None
    """The id to store the model under (default: the one :func:`ingest.model.loading.load_model` gives)."""
    per_prompt: bool = False
    """Keep each edge's score per prompt (``promptScores``) and the prompts on the run (``promptsJson``)."""
    per_position: bool = False
    """Also keep every edge resolved by position (``ATTRIBUTION_AT`` edges with ``srcPos``/``dstPos``)."""
    dtype: str = "float32"
    """The weights' precision (``float32``, ``bfloat16``, ``float16``): part of the run's identity, as
    its scores depend on it. Where it computes (``device``) is not: the run records it in ``details``."""

    def validate(self) -> IngestConfig:
        from ingest.edges.registry import method_spec

        spec = method_spec(self.method)
        if not 1 <= self.n_prompts <= MAX_PROMPTS:
            raise ValidationError(f"--prompts must be between 1 and {MAX_PROMPTS:,} (activations of every prompt are held in memory together), got {self.n_prompts:,}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValidationError(f"--steps must be between 1 and {MAX_STEPS:,} (each is a forward and a backward pass), got {self.steps:,}")
        if self.metric not in choices(Metric):
            raise ValidationError(f"unknown metric {self.metric!r}: choose one of {choices(Metric)}")
        if self.per_position and self.per_prompt:
            raise ValidationError("--per-position and --per-prompt together would keep edges x positions^2 x prompts: choose one")
        from ingest.model.device import resolve_dtype

        resolve_dtype(self.dtype)
        # cosine is an encoder's metric: whether the model is one is known once it loads (compute_run checks then)
        if self.granularity in choices(Granularity) and self.metric != Metric.COSINE.value:
            spec.check(metric=self.metric, granularity=self.granularity, family=ModelFamily.DECODER.value, per_position=self.per_position,
                       per_prompt=self.per_prompt)
        if self.granularity not in choices(Granularity):
            raise ValidationError(f"unknown granularity {self.granularity!r}: choose one of {choices(Granularity)}")
        if self.granularity == "neuron" and self.top_neurons < 1:
            raise ValidationError(f"--top-neurons must be at least 1, got {self.top_neurons}")
        if self.granularity == "feature":
            if not self.saes:
                raise ValidationError("--granularity feature needs --sae PATH (a sae-lens folder; 'atlas sae train' makes one)")
            if self.top_features < 1:
                raise ValidationError(f"--top-features must be at least 1, got {self.top_features}")
        elif self.saes:
            raise ValidationError("--sae needs --granularity feature")
        return self

    def to_json(self) -> str:
        data = asdict(self)
        if self.model_id is None:  # runs keep the ids they had before --model-id existed
            data.pop("model_id")
        if not self.per_prompt:  # ... and before --per-prompt existed
            data.pop("per_prompt")
        if not self.per_position:  # ... and --per-position
            data.pop("per_position")
        if self.dtype == "float32":  # ... and --dtype
            data.pop("dtype")
        if not _uses_steps(self.method):
            data.pop("steps")
        if self.granularity == "head":  # head-level runs keep the ids they had before neurons existed
            data.pop("granularity")
            data.pop("top_neurons")
        if self.granularity != "feature":  # ... and before features existed
            data.pop("saes")
            data.pop("top_features")
        else:  # a dictionary is known by its weights, not only by where it lies
            data["saes"] = [{"path": str(Path(p).resolve()), "sha256": _file_digest(Path(p) / "sae_weights.safetensors")} for p in self.saes]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IngestConfig:
        """The configuration of a stored run (``configJson``); its dictionaries must be unchanged on disk."""
        data = json.loads(text)
        saes = data.pop("saes", [])
        config = cls(**data, saes=tuple(d["path"] for d in saes))
        for d in saes:
            if _file_digest(Path(d["path"]) / "sae_weights.safetensors") != d["sha256"]:
                raise ValidationError(f"the dictionary at {d['path']} changed since the run was made")
        return config

    def default_run_id(self, model_id: str) -> str:
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"{model_id}:{self.task}:{self.method}:{digest}"


def _uses_steps(method: str) -> bool:
    from ingest.edges.registry import method_spec

    return method_spec(method).uses_steps


def canonical_model_spec(spec: str) -> str:
    """A model file or folder as its resolved absolute path; any other spec as given."""
    from ingest.model.catalog import ZOO_NAMES

    if spec.split("@", 1)[0] in ZOO_NAMES:  # a zoo name wins over a folder of that name, as in load_model
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ValidationError(f"cannot read dictionary weights {path}: {exc.strerror}") from exc


@dataclass
class IngestResult:
    """What a run did: ``status`` is ``written`` or ``unchanged``."""

    run_id: str
    status: str
    n_nodes: int
    n_edges: int
    seconds: dict[str, float] = field(default_factory=dict)


def make_progress(enabled: bool) -> Callable[[int, str], Any]:
    """A factory of tqdm bars on stderr (disabled bars when not ``enabled``)."""
    from tqdm.auto import tqdm

    def factory(total: int, desc: str) -> Any:
        # disable=None: bars only on a terminal, so logs and CI output stay readable
        return tqdm(total=total, desc=desc, file=sys.stderr, disable=None if enabled else True, leave=False, unit="step", mininterval=0.5)

    return factory


@dataclass(frozen=True)
class ComputedRun:
    """What :func:`compute_run` hands to :func:`write_run`: the model, its node and edge frames,
    and the sparse dictionaries a feature-level run used (with their quality on its prompts)."""

    loaded: Any
    nodes: pd.DataFrame
    edges: pd.DataFrame
    dictionaries: tuple[DictionaryRecord, ...] = ()
    prompts: tuple[dict[str, Any], ...] = ()
    """Per-prompt runs: each prompt's tokens, text and clean / corrupted metric, in the order of ``promptScores``."""
    positional: pd.DataFrame | None = None
    """Per-position runs: the edges resolved by position (``srcPos``, ``dstPos``); ``edges`` are their sums."""
    shard_plan: dict[str, Any] | None = None
    """How the compute was split over Ray tasks (:class:`ingest.edges.shards.ShardPlan`), when it was."""


def prompt_records(model: Any, task: Any, batch: Any) -> tuple[dict[str, Any], ...]:
    """Each prompt of ``batch`` as the run keeps it: tokens, text (the tokenizer's, else ids) and the
    metric on the clean and on the corrupted prompt."""
    import torch

    from ingest.toolbox.probes import prompt_text

    with torch.no_grad():
        clean = task.metric(model(batch.clean), batch).double().tolist()
        corrupted = task.metric(model(batch.corrupted), batch).double().tolist()

    return tuple({"index": i, "clean": batch.clean[i].tolist(), "corrupted": batch.corrupted[i].tolist(), "text": prompt_text(model, batch.clean[i]),
                  "metricClean": clean[i], "metricCorrupted": corrupted[i]} for i in range(len(clean)))


def run_graph(config: IngestConfig, loaded: Any, task: Any, batch: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The component graph a run's configuration asks for (its neurons or dictionary features chosen
    on its prompts, deterministically) and the rows of its dictionaries."""
    from ingest.model.graph import build_graph

    chosen, features = None, None
    dictionaries: list[dict[str, Any]] = []
    if config.granularity == "neuron":
        from ingest.edges.methods import select_neurons

        chosen, _ = select_neurons(loaded.model, task, batch, config.top_neurons)
    if config.granularity == "feature":
        from ingest.edges.methods import select_features
        from ingest.model.sae import load_for_model

        saes = load_for_model(loaded.model, loaded.model_id, config.saes)
        picked, _ = select_features(loaded.model, saes, task, batch, config.top_features)
        features = {layer: (saes[layer], picked[layer]) for layer in saes}
        paths = dict(zip(saes, config.saes))  # layer -> path, in the order given
        dictionaries = [{**sae.stats, "dictionaryId": sae.dictionary_id, "modelId": loaded.model_id, "layer": layer,
                         "hookName": sae.hook_name, "hookNameOut": sae.hook_name_out, "transcoder": sae.is_transcoder,
                         "architecture": sae.architecture, "path": str(Path(paths[layer]).resolve())}
                        for layer, sae in sorted(saes.items())]
    return build_graph(loaded.model, loaded.model_id, chosen, features), dictionaries


def compute_run(config: IngestConfig, home: Path, progress: Callable[[int, str], Any] | None = None,
                on_load: Callable[[Any], None] | None = None, *, shards: int = 1, ray_address: str | None = None,
                log: Callable[[str], None] | None = None, device: str | None = None) -> ComputedRun:
    """Load, build the task and compute the edges; no I/O to the store (``on_load(loaded)`` runs
    once the model is loaded, before any compute: a chance to refuse early).

    The model computes on ``device`` (default: the placement in force, ``auto``) in ``config.dtype``;
    the edges come back to the host.

    ``shards`` > 1 computes the edges as that many Ray tasks (local Ray, or the cluster at
    ``ray_address``), merged exactly (:mod:`ingest.edges.shards`); neuron and feature choices, unit
    statistics and prompt records are made once, on every prompt, as without shards."""
    from ingest.edges.methods import MethodConfig
    from ingest.edges.registry import method_spec
    from ingest.model.context import load_context, resolve_task
    from ingest.model.family import is_encoder
    from ingest.model.loading import load_model
    from ingest.model.tasks import get_task

    config.validate()  # an unknown method or a combination it does not offer is refused before the model loads
    spec = method_spec(config.method)
    if config.metric != Metric.COSINE.value:
        get_task(resolve_task(config.task, config.model), config.metric)  # an unknown task, too
    loaded = load_model(config.model, home, progress, model_id=config.model_id, allow_encoder=True, device=device, dtype=config.dtype)
    if is_encoder(loaded.model) or config.metric == Metric.COSINE.value:
        if shards > 1:
            raise ValidationError("--shards is for decoder runs; encoder runs (BERT-style) are computed in one process")
        return _compute_encoder_run(config, loaded, progress, on_load)
    if on_load is not None:
        on_load(loaded)
    ctx = load_context(config.model, config.task, config.n_prompts, config.seed, home, metric=config.metric, loaded=loaded, graph=False)
    task, batch = ctx.task, ctx.batch
    graph, dictionaries = run_graph(config, loaded, task, batch)
    n_edges = sum(len(graph.visible(r)) for r in graph.receivers)
    total = spec.passes(config.steps, n_edges)
    method_config = MethodConfig(steps=config.steps, per_prompt=config.per_prompt, per_position=config.per_position)
    shard_plan = None
    if shards > 1:
        from ingest.edges.shards import compute_sharded

        bar = progress(shards, f"{config.method} on {loaded.model_id}, {shards} shards on Ray") if progress else None
        try:
            edges, plan = compute_sharded(loaded.model, graph, task, batch, config.method, method_config, shards,
                                          address=ray_address, log=log, progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        shard_plan = plan.to_json()
    else:
        from ingest.edges.shards import compute_edges, prompt_chunk

        chunk = prompt_chunk(loaded.model, graph, batch)
        passes = -(-batch.n_prompts // chunk)
        bar = progress(total * passes, f"{config.method} on {loaded.model_id}" + (f", {passes} passes" if passes > 1 else "")) if progress else None
        try:
            edges, _ = compute_edges(loaded.model, graph, task, batch, config.method, method_config, chunk=chunk,
                                     progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        if passes > 1:
            shard_plan = {"shards": 1, "passes": passes, "promptsPerPass": chunk}
    positional = None
    if config.per_position:
        from ingest.edges.methods import aggregate_positions

        positional, edges = edges, aggregate_positions(edges)
    nodes = graph.nodes_frame()
    nodes, quality = _with_unit_stats(loaded, nodes, graph, batch)
    records = tuple(DictionaryRecord.from_props({**row, **quality.get(row["layer"], {})}) for row in dictionaries)
    roles = loaded.info.get("roles", {})
    if roles:
        local = nodes["componentId"].map(local_id)
        for key in ("prevTokenScore", "inductionScore"):
            nodes[key] = [roles.get(name, {}).get(key) for name in local]
    prompts = prompt_records(loaded.model, task, batch) if config.per_prompt else ()
    return ComputedRun(loaded, nodes, edges, records, prompts, positional, shard_plan)


def _compute_encoder_run(config: IngestConfig, loaded: Any, progress: Callable[[int, str], Any] | None,
                         on_load: Callable[[Any], None] | None) -> ComputedRun:
    """:func:`compute_run` for a BERT-style encoder: a similarity prompts file, the ``cosine`` metric,
    the methods the registry offers encoders, heads and MLPs."""
    from ingest.edges.methods import MethodConfig
    from ingest.edges.registry import method_spec
    from ingest.model.encoder import SimilarityTask, encoder_graph
    from ingest.model.family import is_encoder

    if not is_encoder(loaded.model):
        raise ValidationError(f"--metric cosine scores an encoder's sentence embedding; {loaded.model_id} is a decoder: choose "
                              "logit, logprob, prob, logit-diff, kl or l2")
    if config.metric != Metric.COSINE.value:
        raise ValidationError(f"{loaded.model_id} is an encoder (BERT-style): score it with --metric cosine on a prompts file "
                              '[{"clean": ..., "corrupted": ..., "target": SENTENCE}]')
    if not config.task.endswith(".json"):
        raise ValidationError(f"encoders take a prompts .json file as --task (clean, corrupted, target sentence), not {config.task!r}")
    if config.granularity != "head" or config.per_prompt or config.per_position:
        raise ValidationError("encoders are mapped at head granularity, without --per-prompt or --per-position")
    spec = method_spec(config.method)
    spec.check(metric=config.metric, family=ModelFamily.ENCODER.value)
    if not Path(config.task).exists():
        raise ValidationError(f"prompt file {config.task} does not exist")
    if on_load is not None:
        on_load(loaded)
    task = SimilarityTask(Path(config.task))
    batch = task.make_batch(loaded.model, config.n_prompts, config.seed).to(loaded.device)
    graph = encoder_graph(loaded.model, loaded.model_id)
    n_edges = sum(len(graph.visible(r)) for r in graph.receivers)
    bar = progress(spec.passes(config.steps, n_edges), f"{config.method} on {loaded.model_id}") if progress else None
    try:
        edges = spec.function()(loaded.model, graph, task, batch, MethodConfig(steps=config.steps), progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    return ComputedRun(loaded, graph.nodes_frame(), edges)


def _with_unit_stats(loaded: Any, nodes: pd.DataFrame, graph: Any, batch: Any) -> tuple[pd.DataFrame, dict[int, dict[str, Any]]]:
    """Sparse-coding statistics of every neuron and feature node, measured on the run's own prompts
    (clean and corrupted): activation frequency, mean and max activation, receptive field. Also
    returns, per dictionary layer, its reconstruction quality on those prompts."""
    import torch

    from ingest.model.sae import collect_activations, dictionary_quality
    from ingest.toolbox.probes import sparse_coding_rows

    tokens = torch.cat([batch.clean, batch.corrupted])
    probe = f"the run's prompts ({len(tokens)} = clean + corrupted)"
    extra: list[dict[str, Any]] = []
    quality: dict[int, dict[str, Any]] = {}
    posts: dict[str, Any] = {}
    if graph.neurons():  # every neuron layer's activations from one forward (one per layer took 60 s of a GPT-2-shape run)
        wanted = {hook_name("post", layer) for layer in graph.neurons()}
        with torch.no_grad():
            _, cache = loaded.model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
        posts = {name: cache[name] for name in wanted}
        del cache
    for kind, units_by_layer in (("neuron", graph.neurons()), ("feature", graph.features())):
        for layer, units in units_by_layer.items():
            if kind == "feature":
                sae = graph.saes[layer]
                x_in, x_out = collect_activations(loaded.model, tokens, hook_name("mlp_in", layer) if sae.is_transcoder else sae.hook_name,
                                                  hook_name("mlp_out", layer))
                acts = sae.encode(x_in).reshape(tokens.shape[0], tokens.shape[1], -1)
                # how well it reconstructs on these very prompts (a dictionary from elsewhere has no stats of ours)
                q = dictionary_quality(sae, x_in, x_out)
                quality[layer] = {"fvuOnRun": q["fvu"], "l0OnRun": q["l0"], "deadOnRun": q["dead"]}
            else:
                acts = posts[hook_name("post", layer)]
            rows = nodes[(nodes["kind"] == kind) & (nodes["layer"] == layer)].set_index(kind).loc[units].reset_index()
            extra += sparse_coding_rows(loaded.model, tokens, acts[:, :, units], rows.to_dict("records"), probe)
    if not extra:
        return nodes, quality
    rest = nodes[~nodes["kind"].isin(["neuron", "feature"])]
    return pd.concat([rest, pd.DataFrame(extra)], ignore_index=True), quality


def write_run(
    store: Store,
    computed: ComputedRun,
    run: RunRecord,
    *,
    rel_type: RelType,
    edge_props: dict[str, Any] | None = None,
    unfinished: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> None:
    """Write a computed run through the run life cycle (:func:`atlas.connectome.write_run`), with a
    progress bar over its edges."""
    from ingest.model.loading import model_record

    run = replace(run, created_at=datetime.now(UTC).isoformat(timespec="seconds"), atlas_version=__version__)
    batches = [cx.EdgeBatch(rel_type, computed.edges, edge_props or {})]
    if computed.positional is not None:  # nEdges counts the position-free edges, as for any run
        batches.append(cx.EdgeBatch(RelType.ATTRIBUTION_AT, computed.positional, edge_props or {}))
        run = replace(run, n_edges=len(computed.edges))
    bar = make_progress(progress)(sum(len(b.frame) for b in batches), "writing edges")
    try:
        cx.write_run(store, run, model_record(computed.loaded), computed.nodes, batches,
                     dictionaries=computed.dictionaries, unfinished=unfinished, progress=bar.update, log=log)
    finally:
        bar.close()


def _shards_by(method: str) -> str:
    from ingest.edges.registry import method_spec

    return method_spec(method).shards_by


def check_existing(store: Store, run_id: str, config_json: str) -> RunRecord | None:
    """The existing run of this id, refusing one with another configuration (RunConflict)."""
    return cx.fetch_run_for(store, run_id, config_json)


def run_ingest(
    store: Store,
    config: IngestConfig,
    home: Path,
    run_id: str | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    after_write: Callable[[str, pd.DataFrame], None] | None = None,
    shards: int = 1,
    ray_address: str | None = None,
    device: str | None = None,
) -> IngestResult:
    """Compute a run and write it into ``store`` (idempotent per run id; see module docstring).

    ``device`` is where it computes (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; default the
    placement in force): recorded on the run (``details.device``), not part of its identity.

    ``shards`` > 1 spreads the compute over Ray tasks (:mod:`ingest.edges.shards`); the result is the
    same run (its configuration, and so its id, do not depend on the split), and the shard plan is
    kept on the run (``shardPlan``).

    ``after_write(run_id, edges)`` runs once the run is complete, with its edges still in memory:
    where callers derive summaries kept on the run (``atlas ingest`` caches the default pathways).

    Raises:
        RunConflict: ``run_id`` exists with a different configuration.
        ModelError, TaskError, ValidationError, StoreError: bad input or an unreachable store.
    """
    config.validate()
    # 'default' and its name are one run; so are two spellings of one model file's path
    from ingest.model.context import resolve_task

    config = replace(config, task=resolve_task(config.task, config.model), model=canonical_model_spec(config.model))
    t0 = time.perf_counter()
    bars = make_progress(progress)
    if run_id is not None:
        existing = check_existing(store, run_id, config.to_json())
        if existing is not None and existing.complete:
            return IngestResult(run_id, "unchanged", 0, existing.n_edges or 0)
    if shards < 1:
        raise ValidationError(f"--shards must be at least 1, got {shards}")
    if shards > 1 and _shards_by(config.method) == "prompts":
        from ingest.edges.shards import plan_ranges

        plan_ranges(config.n_prompts, shards, "prompts")  # refuse a bad split before loading anything
    computed = compute_run(config, home, bars, on_load=lambda loaded: cx.check_model_weights(store, loaded.model_id, loaded.weights_hash),
                           shards=shards, ray_address=ray_address, log=log, device=device)
    t1 = time.perf_counter()
    run_id = chosen_run_id(run_id, config.default_run_id(computed.loaded.model_id))
    existing = check_existing(store, run_id, config.to_json())
    if existing is not None and existing.complete:
        return IngestResult(run_id, "unchanged", 0, existing.n_edges or 0)
    details: dict[str, Any] = {"steps": config.steps if _uses_steps(config.method) else None, "device": str(computed.loaded.device),
                               "dtype": config.dtype}
    if len(computed.edges) and bool((computed.edges["score"] == 0).all()):
        # written, but never silently: the metric did not move at all between clean and corrupted
        details["allZero"] = True
        log(f"warning: every edge of run {run_id} is exactly zero: the metric {config.metric!r} does not change between the "
            "clean and corrupted prompts (e.g. 'logit' on a model with a single output logit, whose target minus mean is "
            "always 0); choose another metric or task. The run is written and marked allZero.")
    if computed.shard_plan is not None:
        details["shardPlan"] = json.dumps(computed.shard_plan)
    if config.per_prompt:
        details.update({"perPrompt": True, "promptsJson": json.dumps(list(computed.prompts))})
    if computed.positional is not None:
        details.update({"perPosition": True, "positionalEdges": len(computed.positional),
                        "nPositions": int(computed.positional["dstPos"].max()) + 1 if len(computed.positional) else 0})
    if config.granularity == "neuron":
        details.update({"granularity": "neuron", "topNeurons": config.top_neurons,
                        "neuronSelection": "top-K per MLP by |sum (post_corr - post_clean) * dm/dpost| (EAP node attribution)"})
    if config.granularity == "feature":
        details.update({"granularity": "feature", "topFeatures": config.top_features,
                        "dictionaries": [d.dictionary_id for d in computed.dictionaries],
                        "featureSelection": "features active on the prompts, top-K per dictionary by "
                                            "|sum (f_corr - f_clean) W_dec . dm/d(mlp_out)| (EAP node attribution); "
                                            "the error node holds the rest"})
    run = RunRecord(run_id=run_id, model_id=computed.loaded.model_id, task=config.task, method=config.method, metric=config.metric,
                    n_prompts=config.n_prompts, config_json=config.to_json(), details=details)
    write_run(store, computed, run, rel_type=RelType.ATTRIBUTION, unfinished=existing is not None, progress=progress, log=log)
    t2 = time.perf_counter()
    seconds = {"compute": t1 - t0, "write": t2 - t1}
    if after_write is not None:
        after_write(run_id, computed.edges)
        seconds["summaries"] = time.perf_counter() - t2
    return IngestResult(run_id, "written", len(computed.nodes), len(computed.edges), seconds)
