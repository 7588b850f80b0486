"""Fetch functions: the connectome as DataFrames (neuPrint's ``fetch_*`` habit).

Which function should I use?
  - ``fetch_runs``: what is in the database (one row per ``:Run``).
  - ``fetch_edges``: the edges of a run, optionally filtered and top-N by ``|score|``.
  - ``fetch_edge_columns``: all of a run's edges, fast, for whole-run analyses.
  - ``fetch_components``: the components of a model, with their properties.
  - ``fetch_custom``: any other read-only Cypher, as a DataFrame.
  - ``require_run``: a run's record (``RunNotFound`` naming the runs that exist).
Columns are the database's property names; edge ends carry ``_pre``/``_post`` suffixes. The
statements live in :mod:`atlas.connectome`, the schema's one home; this module is their public face.
"""

from __future__ import annotations

from atlas.connectome import fetch_components, fetch_custom, fetch_edge_columns, fetch_edges, fetch_runs, require_run

__all__ = ["fetch_runs", "fetch_edges", "fetch_edge_columns", "fetch_components", "fetch_custom", "require_run"]
