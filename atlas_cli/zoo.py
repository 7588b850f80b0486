"""``atlas zoo`` (small models with known circuits) and ``atlas demo`` (the whole story)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from atlas.errors import ValidationError
from atlas_cli.common import command, count, open_store, print_frame, print_json, settings


def cmd_zoo(args: argparse.Namespace) -> int:
    from ingest.model.zoo import SHIPPED_DIR, ZOO, train_zoo_model, zoo_entry

    conf = settings(args)
    if args.action == "list":
        rows = [
            {"name": e.name, "hasMlp": e.has_mlp, "task": e.task, "groundTruth": e.ground_truth, "description": e.description}
            for e in ZOO.values()
        ]
        if args.json:
            print_json(rows, indent=1)
        else:
            import pandas as pd

            print_frame(pd.DataFrame(rows)[["name", "hasMlp", "task", "description"]], "table")
        return 0
    if not args.name:
        raise ValidationError(f"'atlas zoo {args.action}' needs a model name: one of {sorted(ZOO)}")
    entry = zoo_entry(args.name)
    folder = conf.home / "zoo" / entry.name
    if args.action == "train":
        from ingest.jobs.run import make_progress

        steps = args.steps or entry.default_steps
        bar = make_progress(True)(steps, f"training {entry.name}")
        t0 = time.perf_counter()
        info = train_zoo_model(entry.name, folder, steps=steps, progress=bar.update, checkpoint_every=args.checkpoint_every)
        bar.close()
        if args.json:
            print_json({"name": entry.name, "folder": str(folder), "seconds": time.perf_counter() - t0, **info})
            return 0
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
    print_json({"name": entry.name, "description": entry.description, "task": entry.task, "hasMlp": entry.has_mlp,
                      "groundTruth": entry.ground_truth, **info}, indent=1)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ingest.jobs.run import IngestConfig, run_ingest
    from queries.export import export_run_html
    from queries.fetch import fetch_edges

    t0 = time.perf_counter()
    conf = settings(args)
    with open_store(conf) as store:
        t_conn = time.perf_counter()
        config = IngestConfig(model="induction-2l", task="induction", method="eap-ig", n_prompts=args.prompts, steps=5)
        run_id = "demo-induction-2l"
        result = run_ingest(store, config, conf.home, run_id=run_id, progress=not args.quiet)
        t_ing = time.perf_counter()
        cols = ["componentId_pre", "componentId_post", "channel", "score"]
        into_logits = fetch_edges(store, run_id, top=5, kind_post="Logit")[cols]
        head_to_head = fetch_edges(store, run_id, top=5, kind_pre="Head", kind_post="Head")[cols]
        out = Path(args.out) / "connectome.html"
        path, graph = export_run_html(store, run_id, out)
    t_end = time.perf_counter()
    if args.json:
        print_json({"runId": run_id, "status": result.status, "html": str(path), "nNodes": graph.number_of_nodes(),
                          "nEdges": graph.number_of_edges(), "intoLogits": into_logits.to_dict("records"),
                          "headToHead": head_to_head.to_dict("records"),
                          "seconds": {"database": t_conn - t0, "ingest": t_ing - t_conn, "queriesAndExport": t_end - t_ing}})
        return 0
    print(f"\nRun {run_id} ({result.status}): EAP-IG (5 steps) on the zoo model induction-2l, task induction, {args.prompts} prompts")
    print("\nFive strongest edges into the logits (score = change in the correct token's logit, minus the mean logit, when the edge is corrupted):")
    print_frame(into_logits, "table")
    print("\nFive strongest head -> head edges:")
    print_frame(head_to_head, "table")
    print(f"\nWrote {path} ({graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges): open it in a browser.")
    print(f"Timings: database {t_conn - t0:.1f} s, ingest {t_ing - t_conn:.1f} s, queries+export {t_end - t_ing:.1f} s, total {t_end - t0:.1f} s")
    print("\nAsk your own questions, e.g.:")
    print(f"  atlas query \"MATCH (h:Head)-[e:ATTRIBUTION {{runId: \\$run}}]->(:Logit) RETURN h.componentId AS head, e.score AS score ORDER BY abs(e.score) DESC\" --param run={run_id}")
    print("  atlas runs")
    return 0


def _zoo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas zoo``."""
    s = command(sub, "zoo", common, "small models with known circuits, trained locally")
    s.add_argument("action", choices=["list", "train", "info"], help="list the zoo, train a model of it, or print one model's info")
    s.add_argument("name", nargs="?", help="zoo model name")
    s.add_argument("--steps", type=count(1, 10_000_000), help="training steps (default: the model's)")
    s.add_argument("--checkpoint-every", type=count(0, 10_000_000), default=0, help="save weights every N steps (0: only the final)")
    s.add_argument("--json", action="store_true", help="JSON output (list, train; info always prints JSON)")
    s.set_defaults(func=cmd_zoo)


def _demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas demo``."""
    s = command(sub, "demo", common, "the whole story on the embedded default, in under a minute")
    s.add_argument("--out", default="atlas-demo", help="folder for the HTML page")
    s.add_argument("--prompts", type=count(1, 4_096), default=16, help="number of prompts")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print the run, the page and the strongest edges as JSON")
    s.set_defaults(func=cmd_demo)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the ``atlas`` parser (one function per command)."""
    for add in (_zoo_parser, _demo_parser):
        add(sub, common)
