"""What every command shares: one-line argparse errors, the database options, one way to open the
store, and one way to print a frame (table, CSV or JSON)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

__all__ = ["count", "unit_interval", "table_output", "Parser", "HelpFormatter", "FLAG_HELP", "command", "method_option", "store_options", "settings", "open_store", "connect", "print_frame", "print_json", "jsonable", "fmt", "require_run"]


def count(low: int, high: int, why: str = "") -> Any:
    """An argparse ``type`` for an integer in ``[low, high]``; the error says the bound and why
    (checked while parsing, so before the database or torch start)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}{reason}, got {value:,}")
        return value

    parse.__name__ = "integer"
    return parse


def unit_interval(text: str) -> float:
    """An argparse ``type`` for a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


unit_interval.__name__ = "number"


def run_id_text(text: str) -> str:
    """An argparse ``type`` for ``--run-id``: refused while parsing when empty or padded (an empty id
    used to become the default id silently)."""
    from atlas.errors import ValidationError
    from atlas.ids import chosen_run_id

    try:
        return chosen_run_id(text, "")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--run-id ")) from None


run_id_text.__name__ = "run id"


FLAG_HELP: dict[str, str] = {
    "--json": "print the result as JSON",
    "--quiet": "no progress bars",
    "--run": "the run's id (see 'atlas runs')",
    "--model": "zoo name, model directory/.pt file, Hugging Face save_pretrained folder, or TransformerLens name (pythia-70m)",
    "--prompts": "number of prompts",
    "--seed": "seed of the prompts",
    "--metric": "what the edges measure the effect on (see 'atlas ingest --help')",
    "--min-weight": "only edges with |score| >= this",
    "--top": "only the N strongest edges by |score|",
    "--paths": "the K strongest pathways",
    "--show": "rows to print",
    "--png": "also draw a PNG here",
    "--task": "task name, or a prompts .json file",
}
"""The atlas's vocabulary of flags: one meaning per flag, its help where a command gives none of its own
(``--top`` always counts edges, ``--paths`` pathways, ``--show`` printed rows)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not for flags, not ``None``, not twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as for every other user mistake, and the flags'
    vocabulary (:data:`FLAG_HELP`) as the help of an option that brings none."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("help") is None and args and args[0] in FLAG_HELP:
            kwargs["help"] = FLAG_HELP[args[0]]
        return super().add_argument(*args, **kwargs)


    def error(self, message: str) -> NoReturn:
        self.exit(2, f"atlas: error: {message} (see '{self.prog} --help')\n")


def command(sub: Any, name: str, common: argparse.ArgumentParser, help: str) -> Any:
    """A subcommand's parser, with the store options and the atlas's help format."""
    return sub.add_parser(name, parents=[common], help=help, description=help, formatter_class=HelpFormatter)


def table_output(parser: argparse.ArgumentParser) -> None:
    """``--json`` (a JSON array, one object per row) or ``--csv`` for a command that prints a table."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print a JSON array, one object per row")
    g.add_argument("--csv", action="store_true", help="print CSV")


def store_options() -> argparse.ArgumentParser:
    """The parent parser of every command: how to reach the database and where the atlas home is."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("database (default: the embedded ArcadeDB server in the atlas home)")
    g.add_argument("--uri", help="Bolt URI of a Neo4j server, e.g. bolt://localhost:7687 (env ATLAS_URI)")
    g.add_argument("--user", help="user name for --uri (env ATLAS_USER; default neo4j)")
    g.add_argument("--password", help="password for --uri (env ATLAS_PASSWORD)")
    g.add_argument("--database", help="database name (env ATLAS_DATABASE; default: the server's)")
    g.add_argument("--home", help="atlas home for the embedded server, zoo cache and password (env ATLAS_HOME; default ./.atlas)")
    return p


def settings(args: argparse.Namespace) -> Any:
    """The store settings named by the command's flags (then the environment, then defaults)."""
    from atlas.config import resolve_store_settings

    return resolve_store_settings(args.uri, args.user, args.password, args.database, args.home)


def open_store(conf: Any, *, quiet: bool = False, read_only: bool = False) -> Any:
    """Open the store of resolved settings: the one way commands open it."""
    from atlas.store import Store

    return Store.connect(conf, quiet=quiet, read_only=read_only)


def connect(args: argparse.Namespace, *, read_only: bool = False) -> Any:
    """Open the store the command's flags name."""
    return open_store(settings(args), read_only=read_only)


def require_run(store: Any, run_id: str) -> Any:
    """The run's record (:class:`atlas.records.RunRecord`); a missing run is one clear line, and a run
    that is not complete (being written, interrupted, failed, being deleted) is answered with a
    warning on stderr: what it holds may be partial."""
    from atlas.connectome import require_run as require

    run = require(store, run_id)
    if not run.complete:
        print(f"atlas: warning: run {run_id} is {run.status.value}, not complete: the answer covers what it holds so far", file=sys.stderr)
    return run


def jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        return v.item()
    return v


def print_json(value: Any, indent: int | None = None) -> None:
    """Print ``value`` as strict JSON (:func:`atlas.jsontext.strict_json`): every ``--json`` goes through here."""
    from atlas.jsontext import strict_json

    print(json.dumps(strict_json(value), indent=indent, allow_nan=False))


def print_frame(df: Any, how: str) -> None:
    """Print a DataFrame as a table, CSV or a JSON array (one object per row)."""
    if how == "json":
        records = df.to_dict("records")
        print_json(records, indent=1)
    elif how == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif df.empty:
        print("(no rows)")
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))


def fmt(args: argparse.Namespace) -> str:
    """``json``, ``csv`` or ``table``, from the command's ``--json`` / ``--csv`` flags."""
    return "json" if getattr(args, "json", False) is True else "csv" if getattr(args, "csv", False) is True else "table"


def method_option(parser: argparse.ArgumentParser, what: str = "the edge method") -> None:
    """``--method``, its choices and help read from the method registry (no torch: the registry is plain data)."""
    from ingest.edges.registry import METHODS

    lines = "; ".join(f"{spec.method.value}: {spec.summary}" for spec in METHODS.values())
    parser.add_argument("--method", default="eap-ig", choices=[m.value for m in METHODS], help=f"{what} ({lines})")


def device_options(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device`` (where the model computes) and, unless the command reloads a run's own precision, ``--dtype``."""
    parser.add_argument("--device", help="where the model computes: auto (CUDA when available, else the CPU), cpu, cuda, cuda:N or mps "
                                         "(default: auto)")
    if dtype:
        parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                            help="the weights' precision; metrics and attribution sums are accumulated in float32 (default: float32)")
