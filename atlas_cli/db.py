"""``atlas db``, ``query``, ``runs``, ``import``, ``serve``: the database itself and what is in it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlas.errors import ValidationError
from atlas_cli.common import command, connect, count, fmt, open_store, print_frame, print_json, settings, table_output


def cmd_db(args: argparse.Namespace) -> int:
    from atlas.server import server_status, start_server, stop_server

    conf = settings(args)
    if not conf.embedded:
        raise ValidationError("'atlas db' manages the embedded server only; a --uri server is managed by its owner")
    home = conf.home
    state: dict[str, Any] = {"home": str(home)}
    if args.action == "start":
        info, started = start_server(home, heap=args.heap, quiet=True)
        state.update({"status": "started" if started else "running", "uri": info.uri, "pid": info.pid, "heap": info.heap})
        text = f"{'started' if started else 'already running'}: {info.uri} (pid {info.pid}, heap {info.heap}, home {home})"
        if not started and args.heap and args.heap.lower() != info.heap:
            text += f"; it keeps its heap: 'atlas db stop' first to start it with {args.heap}"
    elif args.action == "stop":
        stopped = stop_server(home)
        state["status"] = "stopped" if stopped else "not running"
        text = "stopped" if stopped else f"not running (home {home})"
    else:
        status = server_status(home)
        if status is None:
            state["status"] = "not running"
            text = f"not running (home {home})"
        else:
            from atlas.connectome import count_graph

            with open_store(conf, quiet=True) as store:
                counts = count_graph(store)
            state.update({"status": "running", "uri": status.uri, "pid": status.pid, "heap": status.heap, **counts})
            text = (f"running: {status.uri} (pid {status.pid}, heap {status.heap}, home {home}); "
                    f"{counts['nodes']} nodes, {counts['relationships']} relationships")
    if args.json:
        print_json(state)
    else:
        print(text)
    return 1 if state["status"] == "not running" and args.action == "status" else 0


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

    from atlas.guard import check_user_statement

    if args.allow_schema and not args.write:
        raise ValidationError("--allow-schema goes with --write")
    check_user_statement(cypher, write=args.write, allow_schema=args.allow_schema)
    with open_store(settings(args), read_only=not args.write) as store:
        df = store.run(cypher, _parse_params(args.param), write=args.write)
    print_frame(df, fmt(args))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from queries.fetch import fetch_runs

    if args.delete:
        return _delete_run(args)
    conf = settings(args)
    if conf.embedded:
        from atlas.server import has_database

        if not has_database(conf.home):  # a fresh home: said at once, no server started, nothing created
            import pandas as pd

            from atlas.connectome import RUNS_COLUMNS

            print(f"atlas: no database in {conf.home} yet: nothing has been ingested there", file=sys.stderr)
            print_frame(pd.DataFrame(columns=list(RUNS_COLUMNS)), fmt(args))
            return 0
    with connect(args) as store:
        df = fetch_runs(store, args.model)
    print_frame(df, fmt(args))
    return 0


def _delete_run(args: argparse.Namespace) -> int:
    """``atlas runs --delete RUN``: asks first (unless ``--yes``), deletes through the run's life
    cycle (:func:`atlas.connectome.delete_run_safely`), and deleting twice changes nothing."""
    from atlas.connectome import delete_run_safely, fetch_run

    run_id = args.delete
    with connect(args) as store:
        run = fetch_run(store, run_id)
        if run is None:
            message = f"no run {run_id!r}: nothing to delete"
            print_json({"runId": run_id, "status": "absent", "nEdges": 0}) if args.json else print(message)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ValidationError(f"deleting run {run_id} needs confirmation: pass --yes (stdin is not a terminal to ask on)")
            answer = input(f"delete run {run_id} ({run.model_id}, {run.method}, {run.n_edges or 0} edges, {run.status.value})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        n = delete_run_safely(store, run_id)
    if args.json:
        print_json({"runId": run_id, "status": "deleted", "nEdges": n or 0})
    else:
        print(f"deleted run {run_id}: {n or 0} edges (its components stay with their model)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from queries.transfer import import_run_csv

    folder = args.folder or args.csv
    if not folder:
        raise ValidationError("say which folder to import: atlas import FOLDER (written by 'atlas export --run RUN --csv-dir FOLDER')")
    with connect(args) as store:
        out = import_run_csv(store, Path(folder), edges_loaded=args.edges_loaded, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print_json({"runId": out.run_id, "status": out.status, "nNodes": out.n_nodes, "nEdges": out.n_edges})
    elif out.status == "unchanged":
        print(f"run {out.run_id} is already complete ({out.n_edges} edges); nothing changed")
    elif out.status == "records written":
        print(f"run {out.run_id}: its {out.n_edges} edges were in the database already; wrote its records, the run is complete")
    else:
        print(f"imported run {out.run_id}: {out.n_nodes} components and {out.n_edges} edges from {folder}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The explorer (:mod:`explorer`): a local web app over the store, as its read-only user."""
    import ipaddress
    import secrets

    from explorer.api import Explorer
    from explorer.app import create_app

    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValidationError(f"--host takes an IP address of this machine (127.0.0.1, 0.0.0.0, ...), got {host!r}") from None
    token = None if loopback else secrets.token_urlsafe(24)
    hosts = ("127.0.0.1", "localhost", "[::1]", "::1") if loopback else ("*",)
    store = open_store(settings(args), read_only=True)
    explorer = Explorer(store)
    if args.run:
        from atlas.connectome import require_run

        require_run(store, args.run)
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # a taken port is one line, not a traceback
        try:
            probe.bind((host, args.port))
        except OSError as exc:
            store.close()
            raise ValidationError(f"cannot listen on {host}:{args.port}: {exc.strerror or exc}; choose another --port") from None
    shown = "127.0.0.1" if loopback else (socket.gethostname() if host in ("0.0.0.0", "::") else host)
    from urllib.parse import quote

    url = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "") + (f"#/run/{quote(args.run, safe='')}" if args.run else "")
    app = create_app(explorer, token=token, hosts=hosts)
    import uvicorn

    print(f"the atlas explorer: {url}", flush=True)
    if token:
        print("listening beyond this machine: the token in the URL is required on every request (anyone with it can read the store)",
              file=sys.stderr, flush=True)
    print("read-only over the store; Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=host, port=args.port, log_level="warning", access_log=False)
    finally:
        store.close()
    return 0


def _serve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas serve``."""
    s = command(sub, "serve", common, "browse the store in a web browser (the explorer; read-only)")
    s.add_argument("--port", type=count(1, 65535), default=8765, help="the port to listen on")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on; anything but loopback requires the printed token")
    s.add_argument("--run", help="open at this run's overview")
    s.set_defaults(func=cmd_serve)


def _db_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas db``."""
    s = command(sub, "db", common, "start, stop or inspect the embedded database server")
    s.add_argument("action", choices=["start", "stop", "status"], help="start or stop the embedded server, or say whether it runs")
    s.add_argument("--json", action="store_true", help="print the state as JSON")
    s.add_argument("--heap", help="JVM heap of a server started now, e.g. 8g (default: $ATLAS_DB_HEAP, else a quarter of the "
                   "machine's memory, 1-32 GiB); queries may buffer half of it")
    s.set_defaults(func=cmd_db)


def _query_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas query``."""
    s = command(sub, "query", common, "run Cypher (read-only unless --write)")
    s.add_argument("cypher", help="the statement ('-' reads it from stdin); values as $params")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter (VALUE parsed as JSON when it is JSON)")
    s.add_argument("--write", action="store_true", help="allow the statement to write")
    s.add_argument("--allow-schema", action="store_true",
                   help="with --write: also allow schema commands (indexes, constraints; never the atlas's own) and "
                        "CALL {...} IN TRANSACTIONS, which commit outside the statement's transaction")
    table_output(s)
    s.set_defaults(func=cmd_query)


def _runs_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas runs``."""
    s = command(sub, "runs", common, "list runs (or delete one)")
    s.add_argument("--model", help="only runs of this model id")
    s.add_argument("--delete", metavar="RUN", help="delete this run: its edges, circuits and record (asks first; the components stay)")
    s.add_argument("--yes", action="store_true", help="--delete without asking")
    table_output(s)
    s.set_defaults(func=cmd_runs)


def _import_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``atlas import``."""
    s = command(sub, "import", common, "load a CSV export (neo4j-admin format) into the database")
    s.add_argument("folder", nargs="?", help="a folder written by 'atlas export --run RUN --csv-dir FOLDER'")
    s.add_argument("--csv", metavar="FOLDER", help=argparse.SUPPRESS)  # the 0.1 spelling of FOLDER
    s.add_argument("--edges-loaded", action="store_true",
                   help="neo4j-admin database import already loaded nodes.csv and relationships.csv: check them and write the run's records only")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_import)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the ``atlas`` parser (one function per command)."""
    for add in (_db_parser, _query_parser, _runs_parser, _import_parser, _serve_parser):
        add(sub, common)
