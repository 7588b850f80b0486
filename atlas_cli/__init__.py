"""The ``atlas`` command line: a thin shell over the Python API, above ``atlas``, ``ingest`` and ``queries``.

One module per command group, each with its parsers next to its handlers (:mod:`atlas_cli.db`,
:mod:`atlas_cli.measure`, :mod:`atlas_cli.analyse`, :mod:`atlas_cli.zoo`); :mod:`atlas_cli.common` holds the one way to open
the store and to print. Every user mistake (an :class:`atlas.errors.AtlasError`) ends as one line
on stderr and exit status 2. Heavy modules (torch, transformer_lens, the ingest and query packages)
are imported inside handlers so ``atlas --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from atlas.errors import AtlasError
from atlas_cli import analyse, db, measure, zoo
from atlas_cli.common import Parser, count, store_options

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from atlas import __version__

    p = Parser(prog="atlas", description="Connectome Atlas: map a transformer like a brain, in a graph database.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"atlas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = store_options()
    for group in (db, measure, analyse, zoo):
        group.register(sub, common)
    for parser in sub.choices.values():  # every command that draws takes --dpi
        flags = {o for a in parser._actions for o in a.option_strings}
        if flags & {"--png", "--flow", "--heatmap"} and "--dpi" not in flags:
            parser.add_argument("--dpi", type=count(30, 1200), help="resolution of raster figures (default: each figure's own, 110-120); "
                                "a path ending in .svg or .pdf is written as vector graphics")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``atlas`` console script; returns the exit status."""
    import warnings

    # Library deprecation chatter (TransformerLens 3.x announces its 4.0 API) is not for CLI users.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import logging

    # The driver logs each transaction it tries again (a deadlock between two ingests of one model)
    # as a warning; the atlas retries those by design, so they are not news for the user.
    logging.getLogger("neo4j").addHandler(logging.NullHandler())
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub when a handler first imports it
    handler: Callable[[argparse.Namespace], int] = args.func
    if getattr(args, "dpi", None):
        from queries.export import FIGURE_DPI

        FIGURE_DPI.set(args.dpi)
    try:
        if getattr(args, "device", None) or getattr(args, "dtype", None):
            from ingest.model.device import placement  # (torch: only where a model is placed)

            with placement(getattr(args, "device", None), getattr(args, "dtype", None)):
                return handler(args)
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
