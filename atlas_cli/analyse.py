"""Commands that read stored connectomes: ``paths``, ``hierarchy``, ``binding``, ``motifs``,
``compare``, ``export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atlas.errors import ValidationError
from atlas.schema import MAX_PROMPTS
from atlas_cli.common import (
    command,
    connect,
    count,
    device_options,
    fmt,
    jsonable,
    method_option,
    print_frame,
    print_json,
    require_run,
    settings,
    table_output,
    unit_interval,
)


def cmd_paths(args: argparse.Namespace) -> int:
    from queries.criteria import ComponentCriteria
    from queries.paths import (
        fetch_all_paths,
        fetch_paths,
        fetch_shortest_paths,
        is_default_question,
        write_path_cache,
    )

    with connect(args) as store:
        if args.mode == "strongest":
            question = {
                "sources": ComponentCriteria.parse(args.source) if args.source else None,
                "targets": ComponentCriteria.parse(args.target) if args.target else None,
                "top": args.paths, "min_weight": args.min_weight,
                "through": [ComponentCriteria.parse(t) for t in args.through], "max_length": args.max_length,
            }
            run = require_run(store, args.run)
            if is_default_question(**question) and not args.positions:  # answered once per run, then kept on it
                write_path_cache(store, args.run, split_channels=args.split_channels, k=max(args.paths, 10))
            df = fetch_paths(store, args.run, **question, split_channels=args.split_channels, positions=args.positions)
            cols = ["rank", "strength", "length", "path", "channels"]
            if fmt(args) == "table" and (args.positions or run.details.get("perPosition")):
                print("nodes are components at token positions (L1.H0:7 = L1.H0's output at position 7)" if args.positions
                      else "positions aggregated: each edge is the sum over its position pairs (--positions resolves them)")
        else:
            if args.positions:
                raise ValidationError("--positions works with --mode strongest (shortest/all run in Cypher over the aggregated edges)")
            if not args.source or not args.target:
                raise ValidationError(f"--mode {args.mode} needs --source and --target component ids")
            require_run(store, args.run)
            if args.mode == "shortest":
                df = fetch_shortest_paths(store, args.run, args.source, args.target, min_weight=args.min_weight)
            else:
                df = fetch_all_paths(store, args.run, args.source, args.target, max_length=args.max_length or 3, min_weight=args.min_weight)
            cols = [c for c in ("length", "strength", "path", "channels", "scores") if c in df.columns]
    print_frame(df if fmt(args) != "table" else df[cols], fmt(args))
    return 0


def cmd_hierarchy(args: argparse.Namespace) -> int:
    from queries.hierarchy import fetch_hierarchy, write_hierarchy

    with connect(args) as store:
        run = require_run(store, args.run)
        result = fetch_hierarchy(store, args.run, args.min_weight)
        if not args.no_store:
            write_hierarchy(store, args.run, result, args.min_weight)
    if args.json:
        print_json({"summary": result.summary, "positions": "aggregated" if run.details.get("perPosition") else None,
                          "levels": result.levels.to_dict("records"),
                          "skips": result.edges[result.edges["skip"] > 0].to_dict("records")})
        return 0
    aggregated = "positions aggregated, " if run.details.get("perPosition") else ""
    print(f"levels of run {args.run} ({aggregated}edges with |score| >= {args.min_weight}):")
    print_frame(result.levels, "table")
    sm = result.summary
    print(f"\nstrictness {sm['strictness']:.3f} (share of edges skipping a level {sm['skipShare']:.3f}; skips by length {sm['skipHistogram']})")
    print(f"depth {sm['depth']}, Spearman(level, layer) {sm['levelLayerSpearman']:.3f}, {sm['nModules']} modules (modularity {sm['modularity']:.3f}), flow hierarchy {sm['flowHierarchy']:.3f}")
    skips = result.edges[result.edges["skip"] > 0]
    if len(skips):
        print("\nskip connections (strongest first):")
        print_frame(skips.sort_values("weight", ascending=False).head(10), "table")
    return 0


def cmd_binding(args: argparse.Namespace) -> int:
    from queries.binding import fetch_binding, write_binding_circuit

    with connect(args) as store:
        require_run(store, args.run)
        if args.null:
            require_run(store, args.null)
        df = fetch_binding(store, args.run, args.min_share, args.channels, args.null)
        saved = [write_binding_circuit(store, args.run, row) for row in df.head(args.save).to_dict("records")] if args.save else []
    print_frame(df.head(args.show), fmt(args))
    for cid in saved:
        print(f"saved circuit {cid}", file=sys.stderr)
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from queries.export import prompts_png
    from queries.prompts import fetch_prompt_view

    with connect(args) as store:
        require_run(store, args.run)
        view = fetch_prompt_view(store, args.run, args.component, args.circuit, args.collapse, args.carried)
    frame = view.prompts
    if args.png:
        what = f"{view.figures.get('component', '')} {view.figures.get('circuit', '')}".strip()
        print(f"wrote {prompts_png(frame, Path(args.png), f'run {args.run}, per prompt' + (f': {what}' if what else ''))}", file=sys.stderr)
    if fmt(args) == "json":
        print_json({**view.figures, "prompts": frame.to_dict("records")})
        return 0
    fig = view.figures
    print(f"run {args.run}: {fig['nPrompts']} prompts ({fig['method']}, metric {fig['metric']})")
    if "component" in fig:
        print(f"  {fig['component']}: mean contribution {fig['meanContribution']:.4g}; collapsed (share < {fig['collapse']}) on "
              f"{fig['nCollapsed']} prompts")
    if "circuit" in fig:
        print(f"  circuit {fig['circuit']}: faithfulness {fig['faithfulness']:.3f} overall; carries (>= {fig['carried']}) "
              f"{fig['nCarried']} of {fig['nPrompts']} prompts")
    print_frame(frame, fmt(args))
    return 0


def cmd_motifs(args: argparse.Namespace) -> int:
    from queries.motifs import fetch_motifs, null_note

    with connect(args) as store:
        require_run(store, args.run)
        df = fetch_motifs(store, args.run, args.min_weight, args.random, args.seed, progress=True)
    note = null_note(df)
    if note and fmt(args) == "table":
        print(note)
    print_frame(df, fmt(args))
    return 0


ALIGN_WORDS = {"same model": "identity (one model)", "names": "names (checkpoints of one training run: the same component)",
               "structure": "structure (relative depth and probed roles; a guess that matches everything)",
               "functional": "function (CKA of their outputs on shared stimuli)"}


def _is_model_spec(item: str) -> bool:
    """A zoo model or its checkpoint ``NAME@STEP``, or a hub model's checkpoint ``NAME@stepN``."""
    from ingest.model.catalog import ZOO_NAMES

    name, at, step = item.partition("@")
    if name in ZOO_NAMES:
        return not at or step.isdigit()
    return bool(at) and step.startswith("step") and step[4:].isdigit()


def _spec_step(item: str) -> int | None:
    """The training step a checkpoint spec names (``NAME@300``, ``NAME@step1000``), None for a final model."""
    tail = item.partition("@")[2].removeprefix("step")
    return int(tail) if tail.isdigit() else None


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValidationError(f"--steps must be comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in steps) or steps != sorted(set(steps)):
        raise ValidationError(f"--steps must be distinct non-negative steps in training order, got {text!r}")
    return steps


def _hub_checkpoints(name: str, steps_text: str | None, flag: str) -> tuple[list[str], list[int]]:
    """A hub model's training checkpoints at ``--steps`` (its revisions, e.g. Pythia's ``stepN`` branches)."""
    if "@" in name:
        raise ValidationError(f"{flag} takes a model name without a step, got {name!r}: the steps go in --steps")
    if not steps_text:
        raise ValidationError(f"{name} is not a zoo model: name its hub checkpoints with --steps (e.g. --steps 0,1000,8000,143000 for Pythia)")
    steps = _parse_steps(steps_text)
    if len(steps) < 2:
        raise ValidationError("--steps needs at least two checkpoints")
    return [f"{name}@step{s}" for s in steps], steps


def cmd_compare(args: argparse.Namespace) -> int:
    items = list(args.items)
    if args.checkpoints or (items and all(_is_model_spec(i) for i in items) and any("@" in i for i in items)):
        return _timeline(args, items)
    if len(items) != 2:
        raise ValidationError("give two runs to compare, checkpoints (NAME@STEP ... NAME) or --checkpoints NAME for a timeline")
    args.run_a, args.run_b = items
    return _compare_pair(args)


def cmd_development(args: argparse.Namespace) -> int:
    """Critical periods over a training run's checkpoints (see :mod:`queries.development`)."""
    from atlas.connectome import write_run_figures
    from atlas.ids import local_id
    from ingest.jobs.run import IngestConfig, run_ingest
    from ingest.jobs.studies import task_loss
    from queries.development import analyse_development
    from queries.fetch import fetch_edge_columns

    conf = settings(args)
    items = list(args.models)
    if len(items) == 1:
        from ingest.model.catalog import ZOO_NAMES
        from ingest.model.zoo import checkpoint_steps

        name = items[0]
        if name in ZOO_NAMES:
            if args.steps:
                raise ValidationError(f"--steps is for hub models and checkpoint files: every saved checkpoint of zoo model {name} is used")
            steps = [s for s in checkpoint_steps(name, conf.home) if s > 0]
            if len(steps) < 2:
                raise ValidationError(f"development of {name} needs at least two saved checkpoints after initialisation in {conf.home}: "
                                      f"make them with 'atlas zoo train {name} --checkpoint-every N'")
            items, steps = [f"{name}@0", *(f"{name}@{s}" for s in steps)], [0, *steps]
        elif Path(name).expanduser().exists():
            raise ValidationError("give at least three checkpoint files in training order, or a zoo or hub model (with --steps)")
        else:
            items, steps = _hub_checkpoints(name, args.steps, "--model")
            if len(items) < 3:
                raise ValidationError("development needs at least three checkpoints: the first (ideally step 0) is the null")
    else:
        if args.task == "default" and any("@" not in m for m in items):
            raise ValidationError("checkpoint files need --task (the prompts every checkpoint is measured on)")
        if args.steps:
            steps = _parse_steps(args.steps)
            if len(steps) != len(items):
                raise ValidationError(f"--steps gives {len(steps)} steps for {len(items)} checkpoints")
        elif all(_spec_step(m) is not None for m in items):
            steps = [int(_spec_step(m) or 0) for m in items]
            if steps != sorted(set(steps)):
                raise ValidationError("give the checkpoints in training order, each step once")
        else:
            steps = list(range(len(items)))
    with connect(args) as store:
        runs = [run_ingest(store, IngestConfig(model=m, task=args.task, method=args.method, n_prompts=args.prompts, dtype=args.dtype or "float32"), conf.home,
                           progress=not args.quiet, log=lambda msg: None).run_id for m in items]
        frames = []
        for run_id in runs:
            edges = fetch_edge_columns(store, run_id)
            frames.append(edges.assign(componentId_pre=edges["componentId_pre"].map(local_id),
                                       componentId_post=edges["componentId_post"].map(local_id)))
        losses = [task_loss(m, args.task, args.prompts, 0, conf.home) for m in items]
        dev = analyse_development(steps, frames, losses, top=args.top)
        write_run_figures(store, runs[-1], {"developmentJson": json.dumps({"summary": dev.summary, "edges": dev.edges.to_dict("records"),
                                                                           "checkpoints": dev.checkpoints.to_dict("records"), "runs": runs},
                                                                          default=jsonable)})
    checkpoints = dev.checkpoints.assign(model=items, runId=runs)
    written = None
    if args.png:
        from queries.export import development_png

        written = str(development_png(dev.trajectories, dev.checkpoints, dev.summary, Path(args.png), f"critical periods: {items[-1]}"))
    if args.json:
        print_json({"summary": dev.summary, "checkpoints": checkpoints.to_dict("records"), "edges": dev.edges.to_dict("records"),
                          "png": written})
        return 0
    sm = dev.summary
    print(f"{len(items)} checkpoints of {items[-1]}; the final circuit's top {sm['top']} edges against the null "
          f"(|score| > {sm['nullThreshold']:.3g}, the {sm['nullQuantile']:.0%} quantile at initialisation):")
    print_frame(checkpoints, "table")
    print()
    print_frame(dev.edges, "table")
    jump = sm["jumpBetween"]
    print(f"\nloss change point between steps {jump[0]} and {jump[1]} (change {sm['lossChange']:+.3f}); the circuit's edges jump at median "
          f"step {sm['circuitJump']:g}: the circuit {dict(coincides='coincides with').get(sm['verdict'], sm['verdict'])} the behavioural jump (they cross the initialisation's null at "
          f"median step {sm['circuitFormation']})")
    if written:
        print(f"wrote {written}")
    return 0


def _timeline(args: argparse.Namespace, items: list[str]) -> int:
    """Ingest every checkpoint of one training run (idempotent) and compare each with the last."""
    from ingest.jobs.run import IngestConfig, run_ingest
    from queries.compare import compare_runs, same_training_run
    from queries.export import timeline_png

    conf = settings(args)
    if args.checkpoints:
        if items:
            raise ValidationError("--checkpoints NAME takes no runs or models next to it")
        from ingest.model.catalog import ZOO_NAMES
        from ingest.model.zoo import checkpoint_steps

        if args.checkpoints in ZOO_NAMES:
            if args.steps:
                raise ValidationError(f"--steps is for hub models: every saved checkpoint of zoo model {args.checkpoints} is used")
            steps = checkpoint_steps(args.checkpoints, conf.home)
            if not steps:
                raise ValidationError(f"no saved checkpoints of {args.checkpoints} in {conf.home}: make them with "
                                      f"'atlas zoo train {args.checkpoints} --checkpoint-every N'")
            items = [f"{args.checkpoints}@0", *(f"{args.checkpoints}@{s}" for s in steps if s > 0), args.checkpoints]
        else:
            items, _ = _hub_checkpoints(args.checkpoints, args.steps, "--checkpoints")
    elif args.steps:
        raise ValidationError("--steps goes with --checkpoints NAME (a hub model's checkpoints)")
    if len(items) < 2:
        raise ValidationError("a timeline needs at least two checkpoints")
    rows = []
    with connect(args) as store:
        runs = [run_ingest(store, IngestConfig(model=m, task=args.task, method=args.method, n_prompts=args.prompts, dtype=args.dtype or "float32"), conf.home,
                           progress=not args.quiet, log=lambda msg: None).run_id for m in items]
        final = require_run(store, runs[-1])
        for spec, run_id in zip(items, runs):
            run = require_run(store, run_id)
            if not same_training_run(run.model_id, final.model_id):
                raise ValidationError(f"{spec} is not a checkpoint of {items[-1]}'s training run: a timeline follows one model")
            fig = compare_runs(store, run_id, runs[-1], top=args.top, changes=1).figures
            step = _spec_step(spec)
            rows.append({"model": spec, "step": step, "runId": run_id, "weightedJaccard": fig["weightedJaccard"], "spearman": fig["spearman"],
                         "gained": len(fig["gained"]), "lost": len(fig["lost"])})
    import pandas as pd

    frame = pd.DataFrame(rows).astype({"step": "Int64"})
    if args.png:
        print(f"wrote {timeline_png(frame, Path(args.png), f'{items[-1]}: similarity of each checkpoint to the last (top {args.top})')}",
              file=sys.stderr)
    if args.json:
        print_json(rows)
        return 0
    print(f"{len(items)} checkpoints of {items[-1]} ({args.method} on task {args.task}), each compared with {items[-1]} "
          f"(weighted Jaccard of the top {args.top} edges; Spearman of all shared edges):")
    print_frame(frame, "table")
    return 0


def _compare_pair(args: argparse.Namespace) -> int:
    from atlas.ids import local_id
    from queries.compare import compare_runs, same_training_run, write_alignment
    from queries.export import comparison_marks, select_graph, to_html_side_by_side, to_png_side_by_side

    alignment_figures: dict[str, Any] = {}
    with connect(args) as store:
        align, frame = args.align, None
        if align in ("auto", "functional"):
            ra, rb = require_run(store, args.run_a), require_run(store, args.run_b)
            if align == "functional" or not (ra.model_id == rb.model_id or same_training_run(ra.model_id, rb.model_id)):
                from ingest.jobs.studies import align_runs

                aligned = align_runs(store, args.run_a, args.run_b, settings(args).home, threshold=args.threshold,
                                     depth_weight=args.depth_weight, n_null=args.null_models, require_significant=not args.keep_insignificant,
                                     progress=not args.quiet)
                frame, alignment_figures = aligned.frame, {**aligned.figures, "unmatchedA": list(aligned.unmatched_a),
                                                           "unmatchedB": list(aligned.unmatched_b)}
        out = compare_runs(store, args.run_a, args.run_b, top=args.top, alignment=frame, align="auto" if align == "functional" else align,
                           changes=max(args.top, 10))  # the changes shown: --top in JSON, 10 in the table
        write_alignment(store, out)
        if args.png or args.html:
            ga, gb = select_graph(store, args.run_a, top=args.top), select_graph(store, args.run_b, top=args.top)
    fig = out.figures
    if args.png or args.html:
        rename = None if out.alignment is None else {x: local_id(y) for x, y in zip(out.alignment["componentId_a"], out.alignment["componentId_b"])}
        marks = comparison_marks(ga, gb, fig, rename)
    if args.png:
        print(f"wrote {to_png_side_by_side(ga, gb, Path(args.png), (args.run_a, args.run_b), marks)}", file=sys.stderr)
    if args.html:
        print(f"wrote {to_html_side_by_side(ga, gb, Path(args.html), (args.run_a, args.run_b), marks)}", file=sys.stderr)
    matches = [] if frame is None else frame.to_dict("records")  # every candidate, with its p-value and whether it matched
    if args.json:
        print_json({**fig, "alignmentFigures": alignment_figures, "matches": matches,
                          "changes": out.changes.head(args.top).to_dict("records")})
        return 0
    print(f"{args.run_a} ({fig['modelA']}) vs {args.run_b} ({fig['modelB']}); components aligned by {ALIGN_WORDS.get(fig['alignment'], fig['alignment'])}")
    if alignment_figures:
        a = alignment_figures
        rule = "significant" if a["requireSignificant"] else f"CKA >= {a['threshold']}"
        print(f"  {a['nMatched']} components matched ({rule}; {a['nCandidates']} candidates, {a['nSignificant']} significant at BH q < "
              f"{a['alpha']} against {a['null']}); unmatched: {len(a['unmatchedA'])} of {fig['modelA']}, {len(a['unmatchedB'])} of "
              f"{fig['modelB']}; stimuli: {a['stimuli']}")
        shown = frame[frame["method"] != "identity"] if frame is not None else None
        if shown is not None and len(shown):
            print_frame(shown[["componentId_a", "componentId_b", "similarity", "null95", "p", "q", "matched"]], "table")
    if fig["nUnalignedA"] or fig["nUnalignedB"]:
        print(f"  left out: {fig['nUnalignedA']} edges of {args.run_a} and {fig['nUnalignedB']} of {args.run_b} touch an unmatched component")
    print(f"  shared edges {fig['nShared']} of {fig['nEdgesA']} / {fig['nEdgesB']}; Spearman of shared scores {fig['spearman']:.3f}")
    print(f"  weighted Jaccard of the top {fig['top']} edges {fig['weightedJaccard']:.3f}; gained {len(fig['gained'])}, lost {len(fig['lost'])}")
    print("\nlargest changes:")
    print_frame(out.changes.head(10), "table")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from queries.export import figure_title, select_graph, to_gexf, to_graphml, to_html, to_json, to_png

    if args.csv_path:
        print("atlas: 'export --csv FOLDER' is deprecated; use --csv-dir FOLDER", file=sys.stderr)
    csv_dir = args.csv_dir or args.csv_path
    targets = {"html": args.html, "graphml": args.graphml, "gexf": args.gexf, "node-link": args.node_link, "png": args.png}
    chosen = {k: v for k, v in targets.items() if v}
    overviews = {k: v for k, v in (("flow", args.flow), ("heatmap", args.heatmap)) if v}
    if not chosen and not csv_dir and not overviews:
        raise ValidationError("say what to write: --html, --graphml, --gexf, --node-link, --png, --flow, --heatmap PATH or --csv-dir FOLDER")
    filtered = args.top is not None or args.min_weight or args.circuit or args.paths is not None
    if csv_dir and filtered:
        raise ValidationError("--csv-dir writes the whole run (a lossless copy for 'atlas import' or neo4j-admin); "
                              "--top/--min-weight/--circuit/--paths select for the pictures and graph files only")
    written: list[dict[str, Any]] = []
    with connect(args) as store:
        run = require_run(store, args.run)
        per_position = bool(run.details.get("perPosition"))
        named = f"{run.model_id}: {run.method} on {run.task} [run {run.run_id}]"  # titles a person can read
        if csv_dir:
            from queries.transfer import export_run_csv

            paths = export_run_csv(store, args.run, Path(csv_dir))
            written.append({"format": "csv", "path": str(paths[0].parent), "files": [p.name for p in paths]})
        graph = select_graph(store, args.run, top=args.top, min_weight=args.min_weight, circuit=args.circuit, paths=args.paths) if chosen else None
        if overviews:  # whole-run summaries, readable at any size: every edge counts
            from queries.export import flow_matrix, flow_png, heatmap_png
            from queries.fetch import fetch_edge_columns

            edges = fetch_edge_columns(store, args.run, min_weight=args.min_weight)
            if edges.empty:
                raise ValidationError(f"run {args.run} has no edges with |score| >= {args.min_weight} to summarise")
            if "flow" in overviews:
                Path(overviews["flow"]).parent.mkdir(parents=True, exist_ok=True)
                written.append({"format": "flow", "path": str(flow_png(flow_matrix(edges), Path(overviews["flow"]), f"flow between layer x kind groups, {named}")),
                                "edges": int(len(edges))})
            if "heatmap" in overviews:
                Path(overviews["heatmap"]).parent.mkdir(parents=True, exist_ok=True)
                written.append({"format": "heatmap", "path": str(heatmap_png(edges, Path(overviews["heatmap"]), f"adjacency of the strongest components, {named}",
                                                                            max_nodes=args.heatmap_nodes)), "edges": int(len(edges))})
    writers = {"html": lambda p: to_html(graph, p, title=figure_title(graph)), "graphml": lambda p: to_graphml(graph, p),
               "gexf": lambda p: to_gexf(graph, p), "node-link": lambda p: to_json(graph, p), "png": lambda p: to_png(graph, p)}
    for kind, target in chosen.items():
        assert graph is not None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append({"format": kind, "path": str(writers[kind](path)), "nodes": graph.number_of_nodes(), "edges": graph.number_of_edges()})
    if args.json:
        print_json(written)
        return 0
    for w in written:
        size = (f" ({w['nodes']} nodes, {w['edges']} edges)" if "nodes" in w else f" (all {w['edges']} edges)" if "edges" in w
                else f" ({', '.join(w['files'])})")
        print(f"wrote {w['path']}{size}")
    if per_position and chosen:
        print("positions aggregated: each drawn edge is the sum over its position pairs (the per-position edges go with --csv-dir)")
    return 0


def _paths_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas paths``."""
    s = command(sub, "paths", common, "strongest pathways (or shortest / all paths in Cypher)")
    s.add_argument("--run", required=True)
    s.add_argument("--mode", default="strongest", choices=["strongest", "shortest", "all"],
                   help="strongest: k strongest by product of per-target shares; shortest/all: Cypher in the database")
    s.add_argument("--source", help="criteria (e.g. Embed, L0.H0, kind=Head,layer=0) or, for shortest/all, a component id")
    s.add_argument("--target", help="as --source (default: the logits)")
    s.add_argument("--paths", type=count(1, 10_000, "paths are searched one by one"), default=10, metavar="K", help="the K strongest pathways (--mode strongest)")
    s.add_argument("--top", dest="paths", type=count(1, 10_000, "paths are searched one by one"), default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # before 0.2
    s.add_argument("--min-weight", type=float, default=0.0, help="ignore edges with |score| below this")
    s.add_argument("--through", action="append", default=[], metavar="CRITERIA", help="paths must pass a matching component (repeatable)")
    s.add_argument("--max-length", type=count(1, 64), help="at most this many hops")
    s.add_argument("--split-channels", action="store_true", help="treat each q/k/v channel as its own hop")
    s.add_argument("--positions", action="store_true",
                   help="search components at token positions (L1.H0:7) over a --per-position run's ATTRIBUTION_AT edges; "
                        "default: positions aggregated")
    table_output(s)
    s.set_defaults(func=cmd_paths)


def _hierarchy_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas hierarchy``."""
    s = command(sub, "hierarchy", common, "hierarchy levels, skip connections, modules")
    s.add_argument("--run", required=True)
    s.add_argument("--min-weight", type=float, default=0.0, help="significant edges: |score| >= this")
    s.add_argument("--no-store", action="store_true", help="do not store levels back as IN_RUN relationships")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_hierarchy)


def _binding_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas binding``."""
    s = command(sub, "binding", common, "binding circuits: inputs converging on different channels")
    s.add_argument("--run", required=True)
    s.add_argument("--min-share", type=float, default=0.1, help="significant input: this share of the head's |attribution|")
    s.add_argument("--channels", default="qk", choices=["qk", "any"], help="qk: q-source + k-source; any: any two channels")
    s.add_argument("--null", metavar="RUN", help="a null run (e.g. the untrained NAME@0 on the same task): each input must also "
                                                 "beat the share of its own slot there")
    s.add_argument("--show", type=count(1, 100_000), default=10, metavar="N", help="binding circuits to print, best first")
    s.add_argument("--top", dest="show", type=count(1, 100_000), default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # before 0.2
    s.add_argument("--save", type=count(0, 1_000), default=0, metavar="N", help="save the N best as :Circuit {kind: 'binding'}")
    table_output(s)
    s.set_defaults(func=cmd_binding)


def _prompts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas prompts``."""
    s = command(sub, "prompts", common, "per-prompt view of a --per-prompt run: where a component or circuit collapses")
    s.add_argument("--run", required=True, help="a run ingested with --per-prompt")
    s.add_argument("--component", help="a component (id, or local id such as L1.H0): its contribution per prompt")
    s.add_argument("--circuit", help="a circuit of the run (atlas circuit): its faithfulness per prompt")
    s.add_argument("--collapse", type=float, default=0.5, help="collapsed: contribution below this share of its mean")
    s.add_argument("--carried", type=float, default=0.5, help="carried: circuit faithfulness at least this on the prompt")
    s.add_argument("--png", help="write a per-prompt plot here")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print an object: the view's figures and a 'prompts' array")
    g.add_argument("--csv", action="store_true", help="print the per-prompt table as CSV")
    s.set_defaults(func=cmd_prompts)


def _motifs_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas motifs``."""
    s = command(sub, "motifs", common, "3-node motif census against degree-preserving random graphs")
    s.add_argument("--run", required=True)
    s.add_argument("--min-weight", type=float, default=0.0)
    s.add_argument("--random", type=count(1, 100_000, "each is a rewired copy of the graph"), default=100, help="randomised graphs")
    s.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    table_output(s)
    s.set_defaults(func=cmd_motifs)


def _development_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas development``."""
    s = command(sub, "development", common, "critical periods: when each final-circuit edge forms vs the loss drop")
    s.add_argument("--model", dest="models", nargs="+", required=True, metavar="MODEL",
                   help="a zoo model (its saved checkpoints, step 0 the null), a hub model with --steps, or checkpoints in training order "
                        "(files, or NAME@stepN)")
    s.add_argument("--steps", help="a hub model: the checkpoints to load (e.g. 0,1000,8000,143000 for Pythia); checkpoint files: their "
                                   "training steps, comma-separated (default 0, 1, 2, ...)")
    s.add_argument("--task", default="default", help="the task every checkpoint is ingested and scored on")
    method_option(s, "the method every checkpoint is ingested with")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS), default=16)
    s.add_argument("--top", type=count(1, 100_000), default=10, help="the final circuit: the last checkpoint's top-N edges by |score|")
    s.add_argument("--png", help="also draw the trajectories, the loss and sparsity over training")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_development)


def _compare_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas compare``."""
    s = command(sub, "compare", common, "compare two connectomes (checkpoints, tasks, methods, models)")
    s.add_argument("items", nargs="*", metavar="RUN",
                   help="two runs; or checkpoints for a timeline, each ingested and compared with the last: zoo NAME@STEP ... NAME, "
                        "hub NAME@stepN ...")
    s.add_argument("--checkpoints", metavar="NAME", help="timeline over every saved checkpoint of zoo model NAME (step 0 included), or "
                                                         "hub model NAME's checkpoints at --steps")
    s.add_argument("--steps", help="--checkpoints of a hub model: the training steps to load, comma-separated in order (e.g. 0,1000,143000)")
    s.add_argument("--task", default="default", help="timeline: the task each checkpoint is ingested on")
    method_option(s, "timeline: the method")
    s.add_argument("--prompts", type=count(1, MAX_PROMPTS), default=16, help="timeline: prompts per checkpoint")
    s.add_argument("--top", type=count(1, 10_000_000, "the database's LIMIT"), default=50, help="top-N edges for the weighted Jaccard and the drawings")
    s.add_argument("--png", help="write a side-by-side drawing here (a timeline: its plot)")
    s.add_argument("--html", help="write a side-by-side page here (two pages beside it)")
    s.add_argument("--align", default="auto", choices=["auto", "functional", "names", "structure"],
                   help="how components correspond: auto = names for checkpoints of one training run, else functional (CKA of "
                        "outputs on shared stimuli, runs both models); structure = depth and probed roles (no model needed)")
    s.add_argument("--threshold", type=unit_interval, default=0.0, help="functional: least CKA for a candidate pair")
    s.add_argument("--keep-insignificant", action="store_true",
                   help="functional: match every candidate above --threshold, not only those the null rejects")
    s.add_argument("--depth-weight", type=unit_interval, default=0.0, help="functional: weight of relative depth next to CKA")
    s.add_argument("--null-models", type=count(1, 100_000, "each is a forward pass of a random model"), default=100,
                   help="functional: random models of B's architecture in the null")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true")
    device_options(s)
    s.set_defaults(func=cmd_compare)


def _export_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas export``."""
    s = command(sub, "export", common, "export a run's connectome (HTML, GraphML, GEXF, JSON, CSV, PNG)")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("--html", help="write a pyvis page here (offline, layered)")
    s.add_argument("--graphml", help="write GraphML here")
    s.add_argument("--gexf", help="write GEXF here")
    s.add_argument("--node-link", metavar="PATH", help="write node-link JSON here (networkx.node_link_graph reads it back)")
    s.add_argument("--csv-dir", metavar="FOLDER", help="write the whole run losslessly into this folder: nodes.csv and "
                   "relationships.csv (neo4j-admin import format) and run.json ('atlas import' loads it)")
    s.add_argument("--png", help="write a static layered drawing here")
    s.add_argument("--flow", metavar="PATH", help="write the whole run's layer x kind flow summary (block matrix PNG) here")
    s.add_argument("--heatmap", metavar="PATH", help="write an adjacency heatmap of the strongest components (PNG), ordered by layer and kind")
    s.add_argument("--heatmap-nodes", type=count(2, 100_000), default=200, help="components in the heatmap (most |score| first)")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.add_argument("--csv", dest="csv_path", metavar="FOLDER", help=argparse.SUPPRESS)  # the 0.1 spelling of --csv-dir
    s.add_argument("--top", type=count(1, 10_000_000, "the database's LIMIT"), help="only the N strongest edges by |score|")
    s.add_argument("--min-weight", type=float, default=0.0, help="only edges with |score| >= this")
    s.add_argument("--circuit", help="only the edges of this saved circuit")
    s.add_argument("--paths", type=count(1, 10_000), metavar="K", help="only the edges of the K strongest pathways")
    s.set_defaults(func=cmd_export)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the ``atlas`` parser (one function per command)."""
    for add in (_paths_parser, _hierarchy_parser, _binding_parser, _prompts_parser, _motifs_parser, _development_parser, _compare_parser, _export_parser):
        add(sub, common)
