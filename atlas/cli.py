"""The ``atlas`` command line: a thin shell over the Python API.

Every user mistake (an :class:`AtlasError`) ends as one line on stderr and exit status 2. Heavy
modules (torch, transformer_lens, the ingest and query packages) are imported inside handlers so
``atlas --help`` is instant. The ``ingest``/``queries`` imports here are the CLI's alone; the core
``atlas`` modules never import them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from atlas.errors import AtlasError, ValidationError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as for every other user mistake."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"atlas: error: {message} (see '{self.prog} --help')\n")


def _store_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("database (default: the embedded ArcadeDB server in the atlas home)")
    g.add_argument("--uri", help="Bolt URI of a Neo4j server, e.g. bolt://localhost:7687 (env ATLAS_URI)")
    g.add_argument("--user", help="user name for --uri (env ATLAS_USER; default neo4j)")
    g.add_argument("--password", help="password for --uri (env ATLAS_PASSWORD)")
    g.add_argument("--database", help="database name (env ATLAS_DATABASE; default: the server's)")
    g.add_argument("--home", help="atlas home for the embedded server, zoo cache and password (env ATLAS_HOME; default ./.atlas)")
    return p


def _settings(args: argparse.Namespace) -> Any:
    from atlas.config import resolve_store_settings

    return resolve_store_settings(args.uri, args.user, args.password, args.database, args.home)


def _connect(args: argparse.Namespace) -> Any:
    from atlas.store import Store

    return Store.connect(_settings(args))


def _print_frame(df: Any, fmt: str) -> None:
    if fmt == "json":
        records = df.to_dict("records")
        print(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in records], indent=1, default=str))
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif df.empty:
        print("(no rows)")
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        return v.item()
    return v


def _fmt(args: argparse.Namespace) -> str:
    return "json" if getattr(args, "json", False) else "csv" if getattr(args, "csv", False) else "table"


# -- handlers ----------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from atlas.server import server_status, start_server, stop_server

    settings = _settings(args)
    if not settings.embedded:
        raise ValidationError("'atlas db' manages the embedded server only; a --uri server is managed by its owner")
    home = settings.home
    if args.action == "start":
        info, started = start_server(home, quiet=True)
        print(f"{'started' if started else 'already running'}: {info.uri} (pid {info.pid}, home {home})")
    elif args.action == "stop":
        print("stopped" if stop_server(home) else f"not running (home {home})")
    else:
        info = server_status(home)
        if info is None:
            print(f"not running (home {home})")
            return 1
        from atlas.store import Store

        with Store.connect(settings, quiet=True) as store:
            counts = store.counts()
        print(f"running: {info.uri} (pid {info.pid}, home {home}); {counts['nodes']} nodes, {counts['relationships']} relationships")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.jobs import IngestConfig, run_ingest

    config = IngestConfig(model=args.model, task=args.task, method=args.method, metric=args.metric, n_prompts=args.prompts,
                          steps=args.steps, seed=args.seed, granularity=args.granularity, top_neurons=args.top_neurons,
                          saes=tuple(args.sae or ()), top_features=args.top_features)
    config.validate()
    settings = _settings(args)
    from atlas.store import Store

    with Store.connect(settings) as store:
        result = run_ingest(store, config, settings.home, run_id=args.run_id, progress=not args.quiet)
    if args.json:
        print(json.dumps({"runId": result.run_id, "status": result.status, "nNodes": result.n_nodes, "nEdges": result.n_edges, "seconds": result.seconds}))
    elif result.status == "unchanged":
        print(f"run {result.run_id} is already complete ({result.n_edges} edges); nothing changed")
    else:
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        print(f"run {result.run_id}: {result.n_nodes} components, {result.n_edges} edges written ({secs})")
    return 0


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValidationError(f"--param takes NAME=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        if not key.isidentifier():
            raise ValidationError(f"--param name {key!r} is not a valid parameter name")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def cmd_query(args: argparse.Namespace) -> int:
    cypher = args.cypher
    if cypher == "-":
        cypher = sys.stdin.read()
    from atlas.store import Store

    with Store.connect(_settings(args), read_only=not args.write) as store:
        df = store.run(cypher, _parse_params(args.param), write=args.write)
    _print_frame(df, _fmt(args))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from queries.fetch import fetch_runs

    with _connect(args) as store:
        df = fetch_runs(store, args.model)
    _print_frame(df, _fmt(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from queries.export import select_graph, to_csv, to_gexf, to_graphml, to_html, to_json, to_png

    targets = {"html": args.html, "graphml": args.graphml, "gexf": args.gexf, "json": args.json, "csv": args.csv, "png": args.png}
    chosen = {k: v for k, v in targets.items() if v}
    if not chosen:
        raise ValidationError("say what to write: --html, --graphml, --gexf, --json, --png PATH or --csv FOLDER")
    with _connect(args) as store:
        graph = select_graph(store, args.run, top=args.top, min_weight=args.min_weight, circuit=args.circuit, paths=args.paths)
    writers = {"html": lambda p: to_html(graph, p, title=f"connectome {args.run}"), "graphml": lambda p: to_graphml(graph, p),
               "gexf": lambda p: to_gexf(graph, p), "json": lambda p: to_json(graph, p), "png": lambda p: to_png(graph, p),
               "csv": lambda p: to_csv(graph, p, args.run)[0].parent}
    for kind, target in chosen.items():
        path = Path(target)
        if kind != "csv":
            path.parent.mkdir(parents=True, exist_ok=True)
        written = writers[kind](path)
        print(f"wrote {written} ({graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from queries.compare import compare_runs
    from queries.export import select_graph, to_html_side_by_side, to_png_side_by_side

    with _connect(args) as store:
        out = compare_runs(store, args.run_a, args.run_b, top=args.top)
        if args.png or args.html:
            ga, gb = select_graph(store, args.run_a, top=args.top), select_graph(store, args.run_b, top=args.top)
    fig = out["figures"]
    if args.png:
        print(f"wrote {to_png_side_by_side(ga, gb, Path(args.png), (args.run_a, args.run_b))}", file=sys.stderr)
    if args.html:
        print(f"wrote {to_html_side_by_side(ga, gb, Path(args.html), (args.run_a, args.run_b))}", file=sys.stderr)
    if args.json:
        print(json.dumps({**fig, "changes": out["changes"].head(args.top).to_dict("records")}, default=_jsonable))
        return 0
    print(f"{args.run_a} ({fig['modelA']}) vs {args.run_b} ({fig['modelB']})" + (" — components aligned by depth and roles" if fig["aligned"] else ""))
    print(f"  shared edges {fig['nShared']} of {fig['nEdgesA']} / {fig['nEdgesB']}; Spearman of shared scores {fig['spearman']:.3f}")
    print(f"  weighted Jaccard of the top {fig['top']} edges {fig['weightedJaccard']:.3f}; gained {len(fig['gained'])}, lost {len(fig['lost'])}")
    print("\nlargest changes:")
    _print_frame(out["changes"].head(10), "table")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.evaluate import evaluate_model

    settings = _settings(args)
    with Store.connect(settings) as store:
        out = evaluate_model(store, args.model, args.method, settings.home, n_prompts=args.prompts, steps=args.steps,
                             progress=not args.quiet, task=args.task)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['model']} / {out['method']} on {out['task']} (run {out['runId']}):")
    print(f"  ROC AUC vs ground truth {out['auc']:.3f} ({out['nTruth']} true of {out['nEdges']} scored edges)")
    print(f"  Spearman vs exact patching {out['spearman']:.3f}")
    if out["structuralExcluded"]:
        print(f"  excluded (structural, no token corruption moves them): {', '.join(out['structuralExcluded'])}")
    import pandas as pd

    _print_frame(pd.DataFrame(out["truthRanks"]), "table")
    return 0


def cmd_population(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import run_population

    settings = _settings(args)
    if args.store:
        with Store.connect(settings) as store:
            tables = run_population(store, args.model, settings.home, args.layer, args.debiased)
    else:
        tables = run_population(None, args.model, settings.home, args.layer, args.debiased)
    if args.json:
        print(json.dumps({k: v.to_dict("records") for k, v in tables.items()}, default=_jsonable))
        return 0
    where = f"layer {args.layer}" if args.layer is not None else "all layers"
    print(f"components of {where} (linear CKA{' debiased' if args.debiased else ''}, SVCCA, RSA on the probe set):")
    _print_frame(tables["components"], "table")
    print("\nresidual stream between layers:")
    _print_frame(tables["layers"], "table")
    return 0


def cmd_sae(args: argparse.Namespace) -> int:
    from ingest.studies import train_sae

    settings = _settings(args)
    kwargs = {"transcoder": args.transcoder, "out": Path(args.out) if args.out else None, "steps": args.steps, "l1": args.l1,
              "n_prompts": args.prompts, "task": args.task, "progress": not args.quiet}
    if args.no_store:
        out = train_sae(None, args.model, args.hook, args.features, settings.home, **kwargs)
    else:
        from atlas.store import Store

        with Store.connect(settings) as store:
            out = train_sae(store, args.model, args.hook, args.features, settings.home, **kwargs)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['dictionaryId']} -> {out['path']}")
    print(f"  held-out FVU {out['fvu']:.4f}, mean L0 {out['l0']:.1f} of {out['dSae']}, dead features {out['dead']} "
          f"({out['nTrain']} training / {out['nEval']} held-out activations, {out['steps']} steps, l1 {out['l1']})")
    if args.transcoder or args.hook.endswith("hook_mlp_out"):  # what feature-level ingestion accepts
        print(f"  use it: atlas ingest --model {args.model} --task default --granularity feature --sae {out['path']}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from queries.export import import_csv

    with _connect(args) as store:
        n_nodes, n_rels = import_csv(store, Path(args.csv))
    print(f"imported {n_nodes} components and {n_rels} relationships from {args.csv}")
    return 0


def cmd_lesion(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import LesionConfig, run_lesion

    config = LesionConfig(model=args.model, task=args.task, ablation=args.ablation, scope="edge" if args.edges else "node", metric=args.metric,
                          n_prompts=args.prompts, n_reference=args.reference, seed=args.seed).validate()
    settings = _settings(args)
    with Store.connect(settings) as store:
        out = run_lesion(store, config, settings.home, run_id=args.run_id, progress=not args.quiet)
    if out["status"] == "unchanged":
        print(f"run {out['runId']} is already complete; nothing changed")
        return 0
    frame = out["frame"].sort_values("effect")
    print(f"run {out['runId']}: {args.ablation} {'edge' if args.edges else 'node'} lesions (effect = change in the metric; most harmful first)")
    _print_frame(frame.head(args.show), _fmt(args))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import verify_run

    settings = _settings(args)
    with Store.connect(settings) as store:
        _require_run(store, args.run)
        out = verify_run(store, args.run, args.top, settings.home, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items() if k != "edges"}))
        return 0
    print(f"run {args.run}: top {out['top']} edges patched exactly")
    print(f"  Spearman(fast score, exact effect) = {out['spearman']:.3f}")
    print(f"  sum of exact edge effects / clean-corrupt gap = {out['explained']:.3f}")
    if math.isnan(out["faithfulness"]):
        print("  faithfulness: not defined here (neurons or features sit next to their MLP: use a head-level run)")
    else:
        print(f"  faithfulness of the top-{out['top']} circuit (other edges corrupted) = {out['faithfulness']:.3f}")
    _print_frame(out["edges"], "table")
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import save_circuit

    settings = _settings(args)
    with Store.connect(settings) as store:
        _require_run(store, args.run)
        out = save_circuit(store, args.run, settings.home, top=args.top, min_weight=args.min_weight, ablation=args.ablation)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "edgeKeys"}, default=str))
        return 0
    print(f"circuit {out['circuitId']}: {out['nEdges']} edges, {out['nNodes']} components, {args.ablation} ablation")
    print(f"  faithfulness {out['faithfulness']:.3f} (metric: circuit {out['metricCircuit']:.4g}, full {out['metricFull']:.4g}, all ablated {out['metricEmpty']:.4g})")
    return 0


def cmd_anatomy(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import run_anatomy

    settings = _settings(args)
    with Store.connect(settings) as store:
        frame = run_anatomy(store, args.model, settings.home)
    print(f"{len(frame)} COMPOSITION edges written; strongest by z-score (random baseline {frame['baseline'].iloc[0]:.3f}):")
    _print_frame(frame.sort_values("zScore", ascending=False).head(args.show), _fmt(args))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.studies import run_probe

    settings = _settings(args)
    with Store.connect(settings) as store:
        frame = run_probe(store, args.model, settings.home)
    cols = [c for c in ("componentId", "prevTokenScore", "duplicateTokenScore", "inductionScore", "topTokens") if c in frame.columns]
    print(f"{len(frame)} components probed; properties stored on the components:")
    _print_frame(frame[cols], _fmt(args))
    return 0


def cmd_paths(args: argparse.Namespace) -> int:
    from queries.criteria import ComponentCriteria
    from queries.paths import fetch_all_paths, fetch_paths, fetch_shortest_paths

    with _connect(args) as store:
        if args.mode == "strongest":
            df = fetch_paths(
                store, args.run,
                sources=ComponentCriteria.parse(args.source) if args.source else None,
                targets=ComponentCriteria.parse(args.target) if args.target else None,
                top=args.top, min_weight=args.min_weight,
                through=[ComponentCriteria.parse(t) for t in args.through],
                max_length=args.max_length, split_channels=args.split_channels,
            )
            cols = ["rank", "strength", "length", "path", "channels"]
        else:
            if not args.source or not args.target:
                raise ValidationError(f"--mode {args.mode} needs --source and --target component ids")
            _require_run(store, args.run)
            if args.mode == "shortest":
                df = fetch_shortest_paths(store, args.run, args.source, args.target, min_weight=args.min_weight)
            else:
                df = fetch_all_paths(store, args.run, args.source, args.target, max_length=args.max_length or 3, min_weight=args.min_weight)
            cols = [c for c in ("length", "strength", "path", "channels", "scores") if c in df.columns]
    _print_frame(df if _fmt(args) != "table" else df[cols], _fmt(args))
    return 0


def cmd_hierarchy(args: argparse.Namespace) -> int:
    from queries.hierarchy import fetch_hierarchy, store_hierarchy

    with _connect(args) as store:
        _require_run(store, args.run)
        result = fetch_hierarchy(store, args.run, args.min_weight)
        if not args.no_store:
            store_hierarchy(store, args.run, result, args.min_weight)
    if args.json:
        print(json.dumps({"summary": result.summary, "levels": result.levels.to_dict("records"),
                          "skips": result.edges[result.edges["skip"] > 0].to_dict("records")}, default=_jsonable))
        return 0
    print(f"levels of run {args.run} (edges with |score| >= {args.min_weight}):")
    _print_frame(result.levels, "table")
    sm = result.summary
    print(f"\nstrictness {sm['strictness']:.3f} (share of edges skipping a level {sm['skipShare']:.3f}; skips by length {sm['skipHistogram']})")
    print(f"depth {sm['depth']}, Spearman(level, layer) {sm['levelLayerSpearman']:.3f}, {sm['nModules']} modules (modularity {sm['modularity']:.3f}), flow hierarchy {sm['flowHierarchy']:.3f}")
    skips = result.edges[result.edges["skip"] > 0]
    if len(skips):
        print("\nskip connections (strongest first):")
        _print_frame(skips.sort_values("weight", ascending=False).head(10), "table")
    return 0


def cmd_binding(args: argparse.Namespace) -> int:
    from queries.binding import fetch_binding, save_binding

    with _connect(args) as store:
        _require_run(store, args.run)
        if args.null:
            _require_run(store, args.null)
        df = fetch_binding(store, args.run, args.min_share, args.channels, args.null)
        saved = [save_binding(store, args.run, row) for row in df.head(args.save).to_dict("records")] if args.save else []
    _print_frame(df.head(args.top), _fmt(args))
    for cid in saved:
        print(f"saved circuit {cid}", file=sys.stderr)
    return 0


def cmd_motifs(args: argparse.Namespace) -> int:
    from queries.motifs import fetch_motifs

    with _connect(args) as store:
        _require_run(store, args.run)
        df = fetch_motifs(store, args.run, args.min_weight, args.random, args.seed)
    _print_frame(df, _fmt(args))
    return 0


def _require_run(store: Any, run_id: str) -> None:
    from queries.fetch import require_run

    require_run(store, run_id)


def cmd_zoo(args: argparse.Namespace) -> int:
    from ingest.zoo import SHIPPED_DIR, ZOO, train_zoo_model, zoo_entry

    settings = _settings(args)
    if args.action == "list":
        rows = [
            {"name": e.name, "hasMlp": e.has_mlp, "task": e.task, "groundTruth": e.ground_truth, "description": e.description}
            for e in ZOO.values()
        ]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            import pandas as pd

            _print_frame(pd.DataFrame(rows)[["name", "hasMlp", "task", "description"]], "table")
        return 0
    if not args.name:
        raise ValidationError(f"'atlas zoo {args.action}' needs a model name: one of {sorted(ZOO)}")
    entry = zoo_entry(args.name)
    folder = settings.home / "zoo" / entry.name
    if args.action == "train":
        from ingest.jobs import make_progress

        steps = args.steps or entry.default_steps
        bar = make_progress(True)(steps, f"training {entry.name}")
        t0 = time.perf_counter()
        info = train_zoo_model(entry.name, folder, steps=steps, progress=bar.update, checkpoint_every=args.checkpoint_every)
        bar.close()
        print(f"trained {entry.name} in {time.perf_counter() - t0:.1f} s (final loss {info['finalLoss']:.3f}) -> {folder}")
        for head, role in info["roles"].items():
            print(f"  {head}: " + "  ".join(f"{k} {v:.3f}" for k, v in role.items()))
        return 0
    for where in (folder, SHIPPED_DIR / entry.name):
        if (where / "info.json").exists():
            info = json.loads((where / "info.json").read_text())
            break
    else:
        info = {"trained": False}
    print(json.dumps({"name": entry.name, "description": entry.description, "task": entry.task, "hasMlp": entry.has_mlp,
                      "groundTruth": entry.ground_truth, **info}, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from atlas.store import Store
    from ingest.jobs import IngestConfig, run_ingest
    from queries.export import export_run_html
    from queries.fetch import fetch_edges

    t0 = time.perf_counter()
    settings = _settings(args)
    with Store.connect(settings) as store:
        t_conn = time.perf_counter()
        config = IngestConfig(model="induction-2l", task="induction", method="eap-ig", n_prompts=args.prompts, steps=5)
        run_id = "demo-induction-2l"
        result = run_ingest(store, config, settings.home, run_id=run_id, progress=not args.quiet)
        t_ing = time.perf_counter()
        cols = ["componentId_pre", "componentId_post", "channel", "score"]
        print(f"\nRun {run_id} ({result.status}): EAP-IG (5 steps) on the zoo model induction-2l, task induction, {args.prompts} prompts")
        print("\nFive strongest edges into the logits (score = change in the correct token's logit, minus the mean logit, when the edge is corrupted):")
        _print_frame(fetch_edges(store, run_id, top=5, kind_post="Logit")[cols], "table")
        print("\nFive strongest head -> head edges:")
        _print_frame(fetch_edges(store, run_id, top=5, kind_pre="Head", kind_post="Head")[cols], "table")
        out = Path(args.out) / "connectome.html"
        path, graph = export_run_html(store, run_id, out)
    t_end = time.perf_counter()
    print(f"\nWrote {path} ({graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges): open it in a browser.")
    print(f"Timings: database {t_conn - t0:.1f} s, ingest {t_ing - t_conn:.1f} s, queries+export {t_end - t_ing:.1f} s, total {t_end - t0:.1f} s")
    print("\nAsk your own questions, e.g.:")
    print(f"  atlas query \"MATCH (h:Head)-[e:ATTRIBUTION {{runId: \\$run}}]->(:Logit) RETURN h.componentId AS head, e.score AS score ORDER BY abs(e.score) DESC\" --param run={run_id}")
    print("  atlas runs")
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = _store_options()
    p = _Parser(prog="atlas", description="Connectome Atlas: map a transformer like a brain, in a graph database.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from atlas import __version__

    p.add_argument("--version", action="version", version=f"atlas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("db", parents=[common], help="start, stop or inspect the embedded database server", formatter_class=fmt)
    s.add_argument("action", choices=["start", "stop", "status"])
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("ingest", parents=[common], help="compute a run's edges and write them into the database", formatter_class=fmt)
    s.add_argument("--model", required=True, help="zoo name, model directory/.pt file, or cached TransformerLens name")
    s.add_argument("--task", default="induction", help="task name, or a prompts .json file")
    s.add_argument("--method", default="eap-ig", choices=["eap-ig", "eap-ig-act", "eap", "patching"],
                   help="eap-ig: integrated gradients over inputs; eap-ig-act: over activations; patching: exact")
    s.add_argument("--metric", default="logit", choices=["logit", "logprob", "target-logit"],
                   help="logit: target logit minus mean logit (linear, does not saturate); logprob: log p(target); "
                        "target-logit: the raw target logit (as auto-circuit scores)")
    s.add_argument("--run-id", help="run id (default: derived from the configuration, so re-running is idempotent)")
    s.add_argument("--prompts", type=int, default=16, help="number of prompts")
    s.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps")
    s.add_argument("--seed", type=int, default=0, help="seed of the task's prompts")
    s.add_argument("--granularity", default="head", choices=["head", "neuron", "feature"],
                   help="neuron: also the top-K neurons of each MLP as nodes, with edges into and out of them")
    s.add_argument("--top-neurons", type=int, default=8, help="K neurons per MLP (by EAP node attribution) for --granularity neuron")
    s.add_argument("--sae", action="append", metavar="PATH",
                   help="a sparse dictionary on an MLP (sae-lens folder: an SAE on blocks.L.hook_mlp_out or a transcoder) "
                        "for --granularity feature; repeat for several layers")
    s.add_argument("--top-features", type=int, default=64,
                   help="at most K active features per dictionary (by EAP node attribution); the error node holds the rest")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("query", parents=[common], help="run Cypher (read-only unless --write)", formatter_class=fmt)
    s.add_argument("cypher", help="the statement ('-' reads it from stdin); values as $params")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter (VALUE parsed as JSON when it is JSON)")
    s.add_argument("--write", action="store_true", help="allow the statement to write")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print a JSON array, one object per row")
    g.add_argument("--csv", action="store_true", help="print CSV")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("runs", parents=[common], help="list runs", formatter_class=fmt)
    s.add_argument("--model", help="only runs of this model id")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("export", parents=[common], help="export a run's connectome (HTML, GraphML, GEXF, JSON, CSV, PNG)", formatter_class=fmt)
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("--html", help="write a pyvis page here (offline, layered)")
    s.add_argument("--graphml", help="write GraphML here")
    s.add_argument("--gexf", help="write GEXF here")
    s.add_argument("--json", help="write node-link JSON here")
    s.add_argument("--csv", help="write nodes.csv and relationships.csv (neo4j-admin import format) into this folder")
    s.add_argument("--png", help="write a static layered drawing here")
    s.add_argument("--top", type=int, help="only the N strongest edges by |score|")
    s.add_argument("--min-weight", type=float, default=0.0, help="only edges with |score| >= this")
    s.add_argument("--circuit", help="only the edges of this saved circuit")
    s.add_argument("--paths", type=int, metavar="K", help="only the edges of the K strongest pathways")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("compare", parents=[common], help="compare two connectomes (checkpoints, tasks, methods, models)", formatter_class=fmt)
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--top", type=int, default=50, help="top-N edges for the weighted Jaccard and the drawings")
    s.add_argument("--png", help="write a side-by-side drawing here")
    s.add_argument("--html", help="write a side-by-side page here (two pages beside it)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("evaluate", parents=[common], help="score a method against a zoo model's known circuit", formatter_class=fmt)
    s.add_argument("--model", required=True, help="zoo model")
    s.add_argument("--method", default="eap-ig", choices=["eap-ig", "eap-ig-act", "eap", "patching"])
    s.add_argument("--task", help="the model's evaluation task (default) or one of its control tasks, e.g. binding-reverse")
    s.add_argument("--prompts", type=int, default=16)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--json", action="store_true", help="print an object with auc, spearman, truthRanks, ...")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sae", parents=[common], help="sparse dictionaries: train an SAE or transcoder on the model's own activations",
                       formatter_class=fmt)
    s.add_argument("action", choices=["train"])
    s.add_argument("--model", required=True)
    s.add_argument("--hook", required=True, help="hook to reconstruct, e.g. blocks.0.hook_mlp_out (a transcoder: the MLP's output hook)")
    s.add_argument("--features", type=int, required=True, help="dictionary size")
    s.add_argument("--transcoder", action="store_true", help="read the MLP's input, predict its output")
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--l1", type=float, default=0.1, help="sparsity penalty (decoder-norm-weighted L1, on unit-scaled activations)")
    s.add_argument("--prompts", type=int, default=2048, help="prompts of the task whose activations it learns from")
    s.add_argument("--task", default="default", help="task of those prompts (default: the zoo model's own; else induction)")
    s.add_argument("--out", help="folder to save into (default: ATLAS_HOME/dictionaries/ID)")
    s.add_argument("--no-store", action="store_true", help="do not record the dictionary in the database")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_sae)

    s = sub.add_parser("population", parents=[common], help="population coding: RSA, CKA and CCA between components and layers", formatter_class=fmt)
    s.add_argument("--model", required=True)
    s.add_argument("--layer", type=int, help="components of this layer only (default: all)")
    s.add_argument("--debiased", action="store_true", help="debiased HSIC form of CKA (use when features >> stimuli)")
    s.add_argument("--store", action="store_true", help="store component pairs as SIMILAR_TO edges")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_population)

    s = sub.add_parser("import", parents=[common], help="load a CSV export (neo4j-admin format) into the database", formatter_class=fmt)
    s.add_argument("--csv", required=True, help="folder with nodes.csv and relationships.csv")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("lesion", parents=[common], help="lesion every node (or edge) and measure the effect", formatter_class=fmt)
    s.add_argument("--model", required=True, help="zoo name, model file, or cached TransformerLens name")
    s.add_argument("--task", default="induction", help="task name, or a prompts .json file")
    s.add_argument("--ablation", default="zero", choices=["zero", "mean", "resample", "corrupt"])
    s.add_argument("--edges", action="store_true", help="lesion every edge (path patching) instead of every node")
    s.add_argument("--metric", default="logit", choices=["logit", "logprob", "target-logit"])
    s.add_argument("--run-id", help="run id (default: derived from the configuration)")
    s.add_argument("--prompts", type=int, default=16)
    s.add_argument("--reference", type=int, default=32, help="reference prompts for mean/resample statistics")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--show", type=int, default=10, help="rows to print")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_lesion)

    s = sub.add_parser("verify", parents=[common], help="patch a fast run's top edges exactly and report agreement", formatter_class=fmt)
    s.add_argument("--run", required=True, help="an eap / eap-ig run")
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("circuit", parents=[common], help="keep a run's strongest edges, ablate the rest, save the circuit", formatter_class=fmt)
    s.add_argument("--run", required=True)
    s.add_argument("--top", type=int, help="keep the N strongest edges by |score|")
    s.add_argument("--min-weight", type=float, default=0.0, help="keep edges with |score| >= W")
    s.add_argument("--ablation", default="corrupt", choices=["corrupt", "zero", "mean", "resample"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_circuit)

    s = sub.add_parser("anatomy", parents=[common], help="weight-based Q/K/V composition between heads (task-free)", formatter_class=fmt)
    s.add_argument("--model", required=True)
    s.add_argument("--show", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_anatomy)

    s = sub.add_parser("probe", parents=[common], help="role scores and receptive fields of every head and MLP", formatter_class=fmt)
    s.add_argument("--model", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_probe)

    s = sub.add_parser("paths", parents=[common], help="strongest pathways (or shortest / all paths in Cypher)", formatter_class=fmt)
    s.add_argument("--run", required=True)
    s.add_argument("--mode", default="strongest", choices=["strongest", "shortest", "all"],
                   help="strongest: k strongest by product of per-target shares; shortest/all: Cypher in the database")
    s.add_argument("--source", help="criteria (e.g. Embed, L0.H0, kind=Head,layer=0) or, for shortest/all, a component id")
    s.add_argument("--target", help="as --source (default: the logits)")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--min-weight", type=float, default=0.0, help="ignore edges with |score| below this")
    s.add_argument("--through", action="append", default=[], metavar="CRITERIA", help="paths must pass a matching component (repeatable)")
    s.add_argument("--max-length", type=int, help="at most this many hops")
    s.add_argument("--split-channels", action="store_true", help="treat each q/k/v channel as its own hop")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    s.set_defaults(func=cmd_paths)

    s = sub.add_parser("hierarchy", parents=[common], help="hierarchy levels, skip connections, modules", formatter_class=fmt)
    s.add_argument("--run", required=True)
    s.add_argument("--min-weight", type=float, default=0.0, help="significant edges: |score| >= this")
    s.add_argument("--no-store", action="store_true", help="do not store levels back as IN_RUN relationships")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_hierarchy)

    s = sub.add_parser("binding", parents=[common], help="binding circuits: inputs converging on different channels", formatter_class=fmt)
    s.add_argument("--run", required=True)
    s.add_argument("--min-share", type=float, default=0.1, help="significant input: this share of the head's |attribution|")
    s.add_argument("--channels", default="qk", choices=["qk", "any"], help="qk: q-source + k-source; any: any two channels")
    s.add_argument("--null", metavar="RUN", help="a null run (e.g. the untrained NAME@0 on the same task): each input must also "
                                                 "beat the share of its own slot there")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--save", type=int, default=0, metavar="N", help="save the N best as :Circuit {kind: 'binding'}")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    s.set_defaults(func=cmd_binding)

    s = sub.add_parser("motifs", parents=[common], help="3-node motif census against degree-preserving random graphs", formatter_class=fmt)
    s.add_argument("--run", required=True)
    s.add_argument("--min-weight", type=float, default=0.0)
    s.add_argument("--random", type=int, default=100, help="randomised graphs")
    s.add_argument("--seed", type=int, default=0)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    s.set_defaults(func=cmd_motifs)

    s = sub.add_parser("zoo", parents=[common], help="small models with known circuits, trained locally", formatter_class=fmt)
    s.add_argument("action", choices=["list", "train", "info"])
    s.add_argument("name", nargs="?", help="zoo model name")
    s.add_argument("--steps", type=int, help="training steps (default: the model's)")
    s.add_argument("--checkpoint-every", type=int, default=0, help="save weights every N steps (0: only the final)")
    s.add_argument("--json", action="store_true", help="JSON output (list)")
    s.set_defaults(func=cmd_zoo)

    s = sub.add_parser("demo", parents=[common], help="the whole story on the embedded default, in under a minute", formatter_class=fmt)
    s.add_argument("--out", default="atlas-demo", help="folder for the HTML page")
    s.add_argument("--prompts", type=int, default=16, help="number of prompts")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``atlas`` console script; returns the exit status."""
    import warnings

    # Library deprecation chatter (TransformerLens 3.x announces its 4.0 API) is not for CLI users.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except AtlasError as exc:
        message = " ".join(str(exc).split())
        print(f"atlas: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atlas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `atlas ... | head`: the reader left; not an error worth a traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path the user gave cannot be read or written
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"atlas: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
