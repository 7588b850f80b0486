"""Connectome Atlas: the connectivity of a transformer as a graph you can query, see and compare.

The core package: component ids and schema (:mod:`atlas.ids`, :mod:`atlas.schema`), frame
contracts (:mod:`atlas.frames`), the graph store (:mod:`atlas.store`), the embedded server
(:mod:`atlas.server`), settings and errors, and the CLI. It imports neither ``ingest`` nor
``queries``; nothing happens on import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
