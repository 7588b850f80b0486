"""Commands that run a model and write what they measure: ``ingest``, ``evaluate``, ``sae``,
``population``, ``lesion``, ``verify``, ``circuit``, ``anatomy``, ``probe``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from atlas.errors import ValidationError
from atlas.schema import MAX_PROMPTS, MAX_STEPS, Ablation, Granularity, Metric, choices
from atlas_cli.common import (
    command,
    count,
    device_options,
    fmt,
    jsonable,
    method_option,
    open_store,
    print_frame,
    print_json,
    require_run,
    run_id_text,
    settings,
)


def precheck(args: argparse.Namespace) -> None:
    """Check the model and task names before the database starts or torch is imported."""
    from ingest.model.catalog import check_model_spec, check_task_name

    if getattr(args, "model", None):
        check_model_spec(args.model)
    if getattr(args, "task", None):
        check_task_name(args.task)


def metric_for(args: argparse.Namespace) -> str:
    """``--metric``, or the task's paper's metric (the standard tasks), or ``logit``."""
    if args.metric is not None:
        return str(args.metric)
    from ingest.model.tasks import preferred_metric

    return preferred_metric(args.task or "")


def prompt_count(args: argparse.Namespace) -> int:
    """``--prompts``, or every prompt of a prompts file (``--task FILE.json``), or 16."""
    if args.prompts is not None:
        return int(args.prompts)
    from ingest.model.tasks import default_prompt_count

    return default_prompt_count(args.task or "")


def cmd_ingest(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.run import IngestConfig, run_ingest

    config = IngestConfig(model=args.model, task=args.task, method=args.method, metric=metric_for(args), n_prompts=prompt_count(args),
                          steps=args.steps, seed=args.seed, granularity=args.granularity, top_neurons=args.top_neurons,
                          saes=tuple(args.sae or ()), top_features=args.top_features, model_id=args.model_id,
                          per_prompt=args.per_prompt, per_position=args.per_position, dtype=args.dtype or "float32")
    config.validate()
    conf = settings(args)

    def cache_paths(run_id: str, edges: Any) -> None:  # the first 'atlas paths' is then served from the run, cold
        from atlas.errors import NoPath
        from queries.paths import write_path_cache

        try:
            write_path_cache(store, run_id, edges=edges)
        except NoPath:  # no path from the embedding to the logits (e.g. every edge zero): nothing to keep
            pass

    if args.ray and args.shards < 2:
        raise ValidationError("--ray runs shards on a cluster: give --shards N (N >= 2) with it")
    with open_store(conf) as store:
        result = run_ingest(store, config, conf.home, run_id=args.run_id, progress=not args.quiet, after_write=cache_paths,
                            shards=args.shards, ray_address=args.ray, device=args.device)
    if args.json:
        print_json({"runId": result.run_id, "status": result.status, "nNodes": result.n_nodes, "nEdges": result.n_edges, "seconds": result.seconds})
    elif result.status == "unchanged":
        print(f"run {result.run_id} is already complete ({result.n_edges} edges); nothing changed")
    else:
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        print(f"run {result.run_id}: {result.n_nodes} components, {result.n_edges} edges written ({secs})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.evaluate import evaluate_model, load_truth_spec
    from ingest.model.tasks import preferred_metric

    truth = load_truth_spec(args.truth) if args.truth else None  # a bad truth is refused before the database starts
    task = args.task or (truth.task if truth is not None else None)
    metric = args.metric or preferred_metric(task or "")
    conf = settings(args)
    with open_store(conf) as store:
        out = evaluate_model(store, args.model, args.method, conf.home, n_prompts=prompt_count(args), steps=args.steps,
                             progress=not args.quiet, task=task, truth_file=args.truth, metric=metric, ablation=args.ablation)
    if args.json:
        print_json(out)
        return 0
    print(f"{out['model']} / {out['method']} on {out['task']} (run {out['runId']}):")
    what = f"{out['nComponents']} scored components" if out.get("level") == "components" else f"{out['nEdges']} scored edges"
    print(f"  ROC AUC vs ground truth ({out['truth']}) {out['auc']:.3f} ({out['nTruth']} true of {what})")
    if out.get("citation"):
        print(f"  truth: {out['citation']}")
    print(f"  Spearman vs exact patching {out['spearman']:.3f}")
    if out["structuralExcluded"]:
        print(f"  excluded (structural, no token corruption moves them): {', '.join(out['structuralExcluded'])}")
    import pandas as pd

    print_frame(pd.DataFrame(out["truthRanks"]), "table")
    return 0


def cmd_sae(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import train_sae

    conf = settings(args)
    kwargs = {"transcoder": args.transcoder, "out": Path(args.out) if args.out else None, "steps": args.steps, "l1": args.l1,
              "n_prompts": args.prompts, "task": args.task, "progress": not args.quiet, "model_id": args.model_id}
    if args.no_store:
        out = train_sae(None, args.model, args.hook, args.features, conf.home, **kwargs)
    else:
        with open_store(conf) as store:
            out = train_sae(store, args.model, args.hook, args.features, conf.home, **kwargs)
    if args.json:
        print_json(out)
        return 0
    print(f"{out['dictionaryId']} -> {out['path']}")
    print(f"  held-out FVU {out['fvu']:.4f}, mean L0 {out['l0']:.1f} of {out['dSae']}, dead features {out['dead']} "
          f"({out['nTrain']} training / {out['nEval']} held-out activations, {out['steps']} steps, l1 {out['l1']})")
    if args.transcoder or args.hook.endswith("hook_mlp_out"):  # what feature-level ingestion accepts
        print(f"  use it: atlas ingest --model {args.model} --task default --granularity feature --sae {out['path']}")
    return 0


def cmd_population(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_population

    conf = settings(args)
    if args.store:
        with open_store(conf) as store:
            tables = run_population(store, args.model, conf.home, args.layer, args.debiased, model_id=args.model_id)
    else:
        tables = run_population(None, args.model, conf.home, args.layer, args.debiased, model_id=args.model_id)
    if args.json:
        print_json({k: v.to_dict("records") for k, v in tables.items()})
        return 0
    where = f"layer {args.layer}" if args.layer is not None else "all layers"
    print(f"components of {where} (linear CKA{' debiased' if args.debiased else ''}, SVCCA, RSA on the probe set):")
    print_frame(tables["components"], "table")
    print("\nresidual stream between layers:")
    print_frame(tables["layers"], "table")
    return 0


def cmd_lesion(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import LesionConfig, run_lesion

    config = LesionConfig(model=args.model, task=args.task, ablation=args.ablation, scope="edge" if args.edges else "node", metric=metric_for(args),
                          n_prompts=prompt_count(args), n_reference=args.reference, seed=args.seed, model_id=args.model_id).validate()
    conf = settings(args)
    with open_store(conf) as store:
        out = run_lesion(store, config, conf.home, run_id=args.run_id, progress=not args.quiet)
    frame = out.frame.sort_values("effect") if out.frame is not None else None
    if args.json:
        rows = [] if frame is None else [{k: jsonable(v) for k, v in r.items()} for r in frame.head(args.show).to_dict("records")]
        print_json({"runId": out.run_id, "status": out.status, "effects": rows})
        return 0
    if out.status == "unchanged" or frame is None:
        print(f"run {out.run_id} is already complete; nothing changed")
        return 0
    print(f"run {out.run_id}: {args.ablation} {'edge' if args.edges else 'node'} lesions (effect = change in the metric; most harmful first)")
    print_frame(frame.head(args.show), fmt(args))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ingest.jobs.studies import verify_run

    conf = settings(args)
    with open_store(conf) as store:
        require_run(store, args.run)
        out = verify_run(store, args.run, args.top, conf.home, progress=not args.quiet)
    if args.json:
        print_json(out.figures())
        return 0
    print(f"run {args.run}: top {out.top} edges patched exactly")
    print(f"  Spearman(fast score, exact effect) = {out.spearman:.3f}")
    print(f"  sum of exact edge effects / clean-corrupt gap = {out.explained:.3f}")
    if math.isnan(out.faithfulness):
        print("  faithfulness: not defined here (neurons or features sit next to their MLP: use a head-level run)")
    else:
        print(f"  faithfulness of the top-{out.top} circuit (other edges corrupted) = {out.faithfulness:.3f}")
    print_frame(out.edges, "table")
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    from ingest.jobs.studies import save_circuit

    conf = settings(args)
    with open_store(conf) as store:
        require_run(store, args.run)
        circuit = save_circuit(store, args.run, conf.home, top=args.top, min_weight=args.min_weight, ablation=args.ablation)
    out = {k: v for k, v in circuit.to_props().items() if k != "edgeKeys"}
    if args.json:
        print_json({**out, "members": dict(circuit.members)})
        return 0
    print(f"circuit {out['circuitId']}: {out['nEdges']} edges, {out['nNodes']} components, {args.ablation} ablation")
    print(f"  faithfulness {out['faithfulness']:.3f} (metric: circuit {out['metricCircuit']:.4g}, full {out['metricFull']:.4g}, all ablated {out['metricEmpty']:.4g})")
    return 0


def cmd_anatomy(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_anatomy

    conf = settings(args)
    with open_store(conf) as store:
        frame = run_anatomy(store, args.model, conf.home, model_id=args.model_id)
    strongest = frame.sort_values("zScore", ascending=False).head(args.show)
    if fmt(args) != "json" and frame.empty:
        print("no COMPOSITION edges: composition links heads of different layers, and this model has one")
    elif fmt(args) != "json":
        silent = frame[frame["silent"]]
        note = f"; {silent['componentId_pre'].nunique()} writer heads are silent (zero weights, score 0)" if len(silent) else ""
        print(f"{len(frame)} COMPOSITION edges written; strongest by z-score (random baseline {frame['baseline'].iloc[0]:.3f}){note}:")
    print_frame(strongest, fmt(args))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_probe

    conf = settings(args)
    with open_store(conf) as store:
        result = run_probe(store, args.model, conf.home, model_id=args.model_id, task=args.task, per_prompt=args.per_prompt)
    frame = result.frame
    cols = [c for c in ("componentId", "prevTokenScore", "duplicateTokenScore", "inductionScore", "topTokens")
            + (("topPrompts",) if fmt(args) == "json" else ()) if c in frame.columns]
    if args.per_prompt and result.prompts is not None:  # which prompts drive which component
        if fmt(args) == "json":
            print_json({"stimuli": result.stimuli, "components": frame[cols].to_dict("records"),
                              "prompts": result.prompts.to_dict("records")})
            return 0
        print(f"stimuli: {result.stimuli}")
        print_frame(result.prompts.sort_values(["componentId", "maxAct"], ascending=[True, False]), fmt(args))
        return 0
    if fmt(args) != "json":
        print(f"{len(frame)} components probed on {result.stimuli}; properties stored on the components:")
    print_frame(frame[cols], fmt(args))
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_lens

    conf = settings(args)
    with open_store(conf) as store:
        out = run_lens(store, args.model, conf.home, task=args.task, n_prompts=args.prompts, seed=args.seed, model_id=args.model_id)
    result = out.result
    written = None
    if args.png:
        from queries.export import lens_png

        written = str(lens_png(result.layers, Path(args.png), f"predictive coding: {out.run_id}"))
    cols = ["componentId", "lensDla", "lensAgainstStream", "lensAgainstNull", "lensAgainstZ", "lensErrorCorrecting"]
    if args.json:
        print_json({"runId": out.run_id, "status": out.status, "summary": result.summary, "layers": result.layers.to_dict("records"),
                          "components": result.components[cols].to_dict("records"), "png": written})
        return 0
    sm = result.summary
    print(f"run {out.run_id} ({out.status}): {sm['nPrompts']} prompts, {sm['nPositions']} scored positions; tuned lens evaluated on "
          f"{sm['heldOutPrompts']} held-out prompts; chance agreement {sm['agreeChance']:.3f}")
    print_frame(result.layers, "table")
    print(f"\nfirst reading point whose logit lens agrees with the final prediction on half the positions: {sm['firstAgreeingLayer']}")
    print("direct contributions (toward the final prediction; against the stream's own prediction vs random tokens):")
    print_frame(result.components[cols].sort_values("lensDla", key=lambda v: -v.abs()), "table")
    if written:
        print(f"wrote {written}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_decode

    conf = settings(args)
    with open_store(conf) as store:
        frame = run_decode(store, args.model, conf.home, layer=args.layer, variable=args.variable, task=args.task, n_prompts=args.prompts,
                           seed=args.seed, decoder=args.decoder, model_id=args.model_id)
    if args.json:
        print_json(frame.to_dict("records"))
        return 0
    first = frame.iloc[0]
    print(f"decoding {args.variable} at layer {args.layer} ({first['decoder']}, 5-fold cross-validation grouped by prompt, {first['n']} "
          f"samples, task {first['task']}); chance: majority {first['majority']:.3f}, shuffled labels in 'null'")
    print_frame(frame[["source", "accuracy", "null"]], "table")
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_views

    conf = settings(args)
    with open_store(conf) as store:
        points, summary = run_views(store, args.model, conf.home, layer=args.layer, variable=args.color, method=args.method, task=args.task,
                                    n_prompts=args.prompts, seed=args.seed, model_id=args.model_id)
    written = None
    if args.png:
        from queries.export import views_png

        written = str(views_png(points, summary, Path(args.png), f"{args.model} layer {args.layer}: {args.method} coloured by {args.color}"))
    if args.json:
        print_json({"summary": summary.to_dict("records"), "png": written})
        return 0
    print(f"{args.method} views of layer {args.layer} coloured by {args.color} ({int(summary['n'].iloc[0])} points); separation = "
          "leave-one-out 1-NN accuracy in 2-D, null = the same with permuted labels")
    print_frame(summary[["source", "pcaTop2", "separation", "separationNull"]], "table")
    if written:
        print(f"wrote {written}")
    return 0


def cmd_gain(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_gain

    conf = settings(args)
    with open_store(conf) as store:
        frame = run_gain(store, args.model, conf.home, layer=args.layer, n_stimuli=args.stimuli, n_contexts=args.contexts,
                         context_length=args.context_length, seed=args.seed, model_id=args.model_id)
    if args.json:
        print_json(frame.to_dict("records"))
        return 0
    print(f"gain control at layer {args.layer}: {args.stimuli} stimuli x {args.contexts} contexts of {args.context_length} tokens; "
          "gainIndex 1 = context scales the response, -1 = it shifts it; stored on the components")
    print_frame(frame, "table")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_noise

    conf = settings(args)
    with open_store(conf) as store:
        pairs = run_noise(store, args.model, conf.home, task=args.task, n_prompts=args.prompts, repeats=args.repeats, sigma=args.sigma,
                          seed=args.seed, model_id=args.model_id)
    if args.json:
        print_json(pairs.to_dict("records"))
        return 0
    print(f"{len(pairs)} component pairs, {args.prompts} prompts x {args.repeats} noisy repeats (sigma {args.sigma}); strongest noise "
          "correlations (z against repeats permuted within each stimulus); stored as NOISE_CORRELATED:")
    print_frame(pairs.reindex(pairs["z"].abs().sort_values(ascending=False).index).head(15), "table")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    precheck(args)
    from ingest.jobs.studies import run_encode

    conf = settings(args)
    with open_store(conf) as store:
        frame = run_encode(store, args.model, conf.home, task=args.task, n_prompts=args.prompts, repeats=args.repeats, sigma=args.sigma,
                           seed=args.seed, model_id=args.model_id)
    if args.json:
        print_json(frame.to_dict("records"))
        return 0
    print(f"held-out R2 of ridge encoding models (5 folds grouped by prompt) of each component's single-trial response, next to "
          f"its noise ceiling (sigma {args.sigma}, {args.repeats} repeats); stored on the components:")
    print_frame(frame, "table")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from ingest.toolbox.scaling import measure_member
    from queries.scaling import member_statistics, trends

    conf = settings(args)
    try:
        sizes = sorted({int(v) for v in args.sizes.split(",")})
        seeds = sorted({int(v) for v in args.seeds.split(",")})
    except ValueError:
        raise ValidationError("--sizes and --seeds are comma-separated integers") from None
    if len(sizes) < 3 or len(seeds) < 2:
        raise ValidationError("scaling needs at least three sizes and two seeds (trends are judged across seeds)")
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    with tqdm(total=len(sizes) * len(seeds), desc="training and measuring the family", disable=None if not args.quiet else True) as bar:
        for seed in seeds:
            for size in sizes:
                m = measure_member(conf.home, size, seed, args.steps, n_prompts=args.prompts)
                rows.append({**member_statistics(size, seed, m.edges, m.lesions, m.roles, m.final_loss), "modelId": m.model_id})
                bar.update(1)
    table = pd.DataFrame(rows)
    verdicts = trends(table)
    written = None
    if args.png:
        from queries.export import scaling_png

        written = str(scaling_png(table, verdicts, Path(args.png), f"induction recipe: {args.steps} steps, sizes = heads per layer"))
    if args.json:
        print_json({"members": table.to_dict("records"), "trends": verdicts.to_dict("records"), "png": written})
        return 0
    print(f"the induction recipe at {len(sizes)} sizes (heads per layer) x {len(seeds)} seeds, {args.steps} steps each "
          f"(kept under {conf.home / 'scaling'}):")
    print_frame(table, "table")
    print("\ntrends with size (Spearman per seed; robust = same sign and |rho| >= 0.5 in every seed):")
    print_frame(verdicts, "table")
    if written:
        print(f"wrote {written}")
    return 0


def model_id_option(s: argparse.ArgumentParser) -> None:
    """``--model-id`` (the id to store a model under instead of the one it would get) and
    ``--offline`` (hub names from the local Hugging Face cache only)."""
    s.add_argument("--model-id", help="store the model under this id (default: a zoo or hub model's name; a model file's name "
                                      "plus the first 8 hex digits of its weights' hash)")
    offline_option(s)


def offline_option(s: argparse.ArgumentParser) -> None:
    """``--offline``: TransformerLens names from the local Hugging Face cache only."""
    s.add_argument("--offline", action="store_true",
                   help="load TransformerLens names (pythia-70m, gpt2, ...) from the local Hugging Face cache only, never "
                        "the network (as HF_HUB_OFFLINE=1); without it they download through that cache")


def _ingest_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas ingest``."""
    s = command(sub, "ingest", common, "compute a run's edges and write them into the database")
    s.add_argument("--model", required=True, help="zoo name, model directory/.pt file, Hugging Face save_pretrained folder, or TransformerLens name (pythia-70m)")
    model_id_option(s)
    s.add_argument("--task", default="induction", help="task name, or a prompts .json file")
    method_option(s)
    s.add_argument("--metric", choices=choices(Metric),
                   help="default: the task's paper's (ioi, docstring, sva, gender: logit-diff; greater-than: prob-diff), else logit. "
                        "logit: target logit minus mean logit (linear, does not saturate); logprob: log p(target); prob: "
                        "p(target); target-logit: the raw target logit (as auto-circuit scores); logit-diff: target minus the "
                        "prompt's 'incorrect' token (prompts files, the standard tasks); prob-diff: p(good tokens) - p(bad tokens) "
                        "(greater-than); kl: minus KL(clean || patched) of the next-token distribution; l2: minus "
                        "the squared change of the target logit from its clean value (regression readouts); cosine: encoders, the sentence "
                        "embedding's cosine similarity to the prompt's target sentence")
    s.add_argument("--run-id", type=run_id_text, help="run id (default: derived from the configuration, so re-running is idempotent)")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS, "activations of every prompt are held in memory together"),
                   help="number of prompts (default: all of a prompts file's, else 16); of a file, the first K")
    s.add_argument("--steps", type=count(1, MAX_STEPS, "each step is a forward and a backward pass"), default=5, help="EAP-IG integration steps")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0, help="seed of the task's prompts")
    s.add_argument("--granularity", default="head", choices=choices(Granularity),
                   help="neuron: also the top-K neurons of each MLP as nodes, with edges into and out of them")
    s.add_argument("--top-neurons", type=count(1, 1_000_000), default=8, help="K neurons per MLP (by EAP node attribution) for --granularity neuron")
    s.add_argument("--sae", action="append", metavar="PATH",
                   help="a sparse dictionary on an MLP (sae-lens folder: an SAE on blocks.L.hook_mlp_out or a transcoder) "
                        "for --granularity feature; repeat for several layers")
    s.add_argument("--top-features", type=count(1, 10_000_000), default=64,
                   help="at most K active features per dictionary (by EAP node attribution); the error node holds the rest")
    s.add_argument("--per-prompt", action="store_true",
                   help="also keep every edge's score per prompt and the prompts on the run ('atlas prompts' reads them)")
    s.add_argument("--per-position", action="store_true",
                   help="also keep every edge resolved by position, u@i -> v@j (ATTRIBUTION_AT edges with srcPos/dstPos; gradient "
                        "methods): 'atlas paths --positions' searches them; the run's edges are their sums")
    s.add_argument("--shards", type=count(1, 100_000), default=1,
                   help="compute the edges as N Ray tasks (prompts split for the gradient methods, edges for patching), merged "
                        "exactly and written once; needs the 'ray' extra")
    s.add_argument("--ray", metavar="ADDRESS", help="Ray cluster to run the shards on (default: a local Ray started for the run)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    device_options(s)
    s.set_defaults(func=cmd_ingest)


def _evaluate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas evaluate``."""
    s = command(sub, "evaluate", common, "score a method against a known circuit (a zoo model's, or --truth)")
    s.add_argument("--model", required=True, help="a zoo model, or any model with --truth")
    offline_option(s)
    method_option(s, "the method the model is ingested with and scored")
    s.add_argument("--task", help="zoo: the model's evaluation task (default) or a control task, e.g. binding-reverse; with --truth: "
                                  "the task the listed circuit performs")
    s.add_argument("--ablation", choices=choices(Ablation),
                   help="score by lesions instead of --method, as ACDC does: path patching of every edge (or every component, "
                        "for a component truth) with this replacement (zero, mean, resample over reference prompts, or corrupt)")
    s.add_argument("--truth", metavar="FILE|NAME",
                   help='a shipped published circuit (ioi-gpt2-small, greater-than-gpt2-small), or a file: ground-truth edges '
                        '[{"source": "L0.H0", "target": "L1.H1", "channel": "k"}, ...] or components ["L9.H6", "L8.MLP", ...] in local ids '
                        '(components are scored by |sum of their outgoing edge scores| against exact node patching)')
    s.add_argument("--metric", choices=choices(Metric), help="default: the task's paper's metric, else logit (see 'atlas ingest --help')")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS), help="number of prompts (default: all of a prompts file's, else 16)")
    s.add_argument("--steps", type=count(1, MAX_STEPS), default=5, help="EAP-IG integration steps")
    s.add_argument("--json", action="store_true", help="print an object with auc, spearman, truthRanks, ...")
    s.add_argument("--quiet", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_evaluate)


def _sae_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas sae``."""
    s = command(sub, "sae", common, "sparse dictionaries: train an SAE or transcoder on the model's own activations")
    s.add_argument("action", choices=["train"], help="train a dictionary on the model's activations")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--hook", required=True, help="hook to reconstruct, e.g. blocks.0.hook_mlp_out (a transcoder: the MLP's output hook)")
    s.add_argument("--features", type=count(1, 1 << 24), required=True, help="dictionary size")
    s.add_argument("--transcoder", action="store_true", help="read the MLP's input, predict its output")
    s.add_argument("--steps", type=count(1, 10_000_000), default=3000, help="training steps")
    s.add_argument("--l1", type=float, default=0.1, help="sparsity penalty (decoder-norm-weighted L1, on unit-scaled activations)")
    s.add_argument("--prompts", type=count(1, 1_000_000), default=2048, help="prompts of the task whose activations it learns from")
    s.add_argument("--task", default="default", help="task of those prompts (default: the zoo model's own; else induction)")
    s.add_argument("--out", help="folder to save into (default: ATLAS_HOME/dictionaries/ID)")
    s.add_argument("--no-store", action="store_true", help="do not record the dictionary in the database")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_sae)


def _population_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas population``."""
    s = command(sub, "population", common, "population coding: RSA, CKA and CCA between components and layers")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--layer", type=count(0, 10_000), help="components of this layer only (default: all)")
    s.add_argument("--debiased", action="store_true", help="debiased HSIC form of CKA (use when features >> stimuli)")
    s.add_argument("--store", action="store_true", help="store component pairs as SIMILAR_TO edges")
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_population)


def _lesion_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas lesion``."""
    s = command(sub, "lesion", common, "lesion every node (or edge) and measure the effect")
    s.add_argument("--model", required=True, help="zoo name, model file or folder, or TransformerLens name")
    model_id_option(s)
    s.add_argument("--task", default="induction", help="task name, or a prompts .json file")
    s.add_argument("--ablation", default="zero", choices=choices(Ablation), help="what replaces a lesioned output: zero, its mean or a resampled output over reference prompts, or its output on the corrupted prompt")
    s.add_argument("--edges", action="store_true", help="lesion every edge (path patching) instead of every node")
    s.add_argument("--metric", choices=choices(Metric), help="default: the task's paper's metric, else logit (see 'atlas ingest --help')")
    s.add_argument("--run-id", type=run_id_text, help="run id (default: derived from the configuration)")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS), help="number of prompts (default: all of a prompts file's, else 16)")
    s.add_argument("--reference", type=count(1, MAX_PROMPTS), default=32, help="reference prompts for mean/resample statistics")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    s.add_argument("--show", type=count(1, 1_000_000), default=10, help="rows to print")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_lesion)


def _verify_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas verify``."""
    s = command(sub, "verify", common, "patch a fast run's top edges exactly and report agreement")
    s.add_argument("--run", required=True, help="an eap / eap-ig run")
    s.add_argument("--top", type=count(2, 100_000, "each edge is patched exactly"), default=20)
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    device_options(s, dtype=False)
    s.set_defaults(func=cmd_verify)


def _circuit_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas circuit``."""
    s = command(sub, "circuit", common, "keep a run's strongest edges, ablate the rest, save the circuit")
    s.add_argument("--run", required=True)
    s.add_argument("--top", type=count(1, 10_000_000), help="keep the N strongest edges by |score|")
    s.add_argument("--min-weight", type=float, default=0.0, help="keep edges with |score| >= W")
    s.add_argument("--ablation", default="corrupt", choices=choices(Ablation), help="what replaces the outputs of the edges left out")
    s.add_argument("--json", action="store_true")
    device_options(s, dtype=False)
    s.set_defaults(func=cmd_circuit)


def _anatomy_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas anatomy``."""
    s = command(sub, "anatomy", common, "weight-based Q/K/V composition between heads (task-free)")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--show", type=count(1, 1_000_000), default=10)
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_anatomy)


def _lens_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas lens``."""
    s = command(sub, "lens", common, "predictive coding: logit and tuned lens per layer, error-correcting components")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--task", help="the prompts (default: a zoo model's own task)")
    s.add_argument("--prompts", type=count(2, MAX_PROMPTS, "activations of every prompt are held in memory together"), default=64,
                   help="prompts (half fit the tuned lens, half evaluate it)")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    s.add_argument("--png", metavar="PATH", help="also draw KL and agreement per layer")
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_lens)


def _decode_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas decode``."""
    s = command(sub, "decode", common, "population decoding: which components carry a task variable")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--layer", type=count(0, 10_000), required=True, help="the layer whose components are measured")
    s.add_argument("--variable", required=True, choices=["token", "prev-token", "position", "answer"],
                   help="token (current), prev-token (t-1), position, answer (the task's target at its scored positions)")
    s.add_argument("--task", help="the prompts (default: a zoo model's own task)")
    s.add_argument("--prompts", type=count(5, MAX_PROMPTS, "activations of every prompt are held in memory together"), default=32,
                   help="prompts (5-fold cross-validation grouped by prompt)")
    s.add_argument("--decoder", default="ridge", choices=["ridge", "logistic"], help="ridge: closed form, fast; logistic: reads more, ~40x slower")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_decode)


def _views_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas views``."""
    s = command(sub, "views", common, "2-D views (PCA, or UMAP when installed) of a layer's population responses")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--layer", type=count(0, 10_000), required=True, help="the layer whose components are measured")
    s.add_argument("--color", required=True, choices=["token", "prev-token", "position", "answer"], help="the variable that colours the points")
    s.add_argument("--method", default="pca", choices=["pca", "umap"], help="umap needs umap-learn installed")
    s.add_argument("--task", help="the prompts (default: a zoo model's own task)")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS, "activations of every prompt are held in memory together"), default=32)
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    s.add_argument("--png", metavar="PATH", help="draw one scatter per component and stream")
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_views)


def _gain_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas gain``."""
    s = command(sub, "gain", common, "gain control: does context scale or shift each component's response?")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--layer", type=count(0, 10_000), required=True, help="the layer whose components are measured")
    s.add_argument("--stimuli", type=count(2, 4096), default=16, help="stimulus tokens (each placed last after every context)")
    s.add_argument("--contexts", type=count(2, 4096), default=16, help="random context prefixes")
    s.add_argument("--context-length", type=count(1, 100_000), default=8, help="tokens in each context prefix")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_gain)


def _noise_encode_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas noise`` and ``atlas encode`` (one set of options)."""
    for name, func, helptext, default_prompts in (
            ("noise", cmd_noise, "noise correlations: components' shared trial-to-trial variability under input noise", 32),
            ("encode", cmd_encode, "encoding models: task variables -> each component's response, with the noise ceiling", 48)):
        s = command(sub, name, common, helptext)
        s.add_argument("--model", required=True)
        model_id_option(s)
        s.add_argument("--task", help="the stimuli (default: a zoo model's own task)")
        s.add_argument("--prompts", type=count(5, MAX_PROMPTS, "activations of every prompt are held in memory together"), default=default_prompts)
        s.add_argument("--repeats", type=count(2, 1000), default=8, help="noisy presentations of each stimulus")
        s.add_argument("--sigma", type=float, default=0.05, help="embedding noise, relative to each embedding's norm")
        s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
        s.add_argument("--json", action="store_true")
        device_options(s)
        s.set_defaults(func=func)


def _scaling_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas scaling``."""
    s = command(sub, "scaling", common, "scaling: one recipe trained at several sizes and seeds, connectome statistics "
                       "against size")
    s.add_argument("--task", default="induction", choices=["induction"], help="the recipe and task (the induction family)")
    s.add_argument("--sizes", default="2,4,8", help="heads per layer, comma-separated (at least three)")
    s.add_argument("--seeds", default="0,1", help="seeds, comma-separated (at least two)")
    s.add_argument("--steps", type=count(1, 1_000_000), default=600, help="training steps of every member")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS), default=16)
    s.add_argument("--png", metavar="PATH", help="draw every statistic against size, one line per seed")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_scaling)


def _probe_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas probe``."""
    s = command(sub, "probe", common, "role scores and receptive fields of every head and MLP")
    s.add_argument("--model", required=True)
    model_id_option(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("--task", help="probe on this task's prompts (default: the generic probe; a zoo model whose context is too "
                                  "short for it uses its own task)")
    s.add_argument("--per-prompt", action="store_true", help="print every component's activation on every prompt")
    device_options(s)
    s.set_defaults(func=cmd_probe)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the ``atlas`` parser (one function per command)."""
    for add in (_ingest_parser, _evaluate_parser, _sae_parser, _population_parser, _lesion_parser, _verify_parser, _circuit_parser, _anatomy_parser, _lens_parser, _decode_parser, _views_parser, _gain_parser, _noise_encode_parser, _scaling_parser, _probe_parser):
        add(sub, common)
