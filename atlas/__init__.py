"""Connectome Atlas: the connectivity of a transformer as a graph you can query, see and compare.

The core package: component ids and schema (:mod:`atlas.ids`, :mod:`atlas.schema`), typed records
(:mod:`atlas.records`), frame contracts (:mod:`atlas.frames`), every Cypher statement
(:mod:`atlas.connectome`), the transport to the database (:mod:`atlas.store`, :mod:`atlas.guard`),
the embedded server (:mod:`atlas.server`), settings and errors. It imports neither ``ingest``,
``queries`` nor the ``atlas_cli`` package above them; nothing happens on import. See docs/architecture.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
