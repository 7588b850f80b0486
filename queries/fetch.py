"""Fetch functions: thin, parameterised Cypher that returns DataFrames (neuPrint's ``fetch_*`` habit).

Which function should I use?
  - ``fetch_runs``: what is in the database (one row per ``:Run``).
  - ``fetch_edges``: the edges of a run, optionally filtered and top-N by ``|score|``.
  - ``fetch_components``: the components of a model or run, with their properties.
  - ``fetch_custom``: any other read-only Cypher, as a DataFrame.
Columns are the database's property names; edge ends carry ``_pre``/``_post`` suffixes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlas.errors import QueryError, RunNotFound, ValidationError
from atlas.schema import RelType
from atlas.store import Store

__all__ = ["fetch_runs", "fetch_edges", "fetch_edge_columns", "fetch_components", "fetch_custom", "require_run"]

_EDGE_COLUMNS = ["componentId_pre", "componentId_post", "kind_pre", "kind_post", "layer_pre", "layer_post", "channel", "score"]


def fetch_custom(store: Store, cypher: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run any read-only Cypher (values as ``$parameters``) and return its rows."""
    return store.read(cypher, params)


def fetch_runs(store: Store, model_id: str | None = None) -> pd.DataFrame:
    """One row per run: ``runId, modelId, task, method, granularity, status, nPrompts, nEdges, createdAt``."""
    df = store.read(
        "MATCH (r:Run) WHERE $model IS NULL OR r.modelId = $model "
        "RETURN r.runId AS runId, r.modelId AS modelId, r.task AS task, r.method AS method, "
        "coalesce(r.granularity, 'head') AS granularity, "
        "r.status AS status, r.nPrompts AS nPrompts, r.nEdges AS nEdges, r.createdAt AS createdAt "
        "ORDER BY r.createdAt, r.runId",
        {"model": model_id},
    )
    return df


def require_run(store: Store, run_id: str) -> dict[str, Any]:
    """The run's properties; RunNotFound (listing what exists) when absent."""
    run = store.get_run(run_id)
    if run is None:
        runs = fetch_runs(store)
        known = runs["runId"].tolist() if "runId" in runs else []  # an empty database returns no columns
        hint = f"; known runs: {', '.join(known[:5])}" + (" ..." if len(known) > 5 else "") if known else "; the database has no runs yet"
        raise RunNotFound(f"no run {run_id!r}{hint}")
    return run


def fetch_edges(
    store: Store,
    run_id: str,
    *,
    top: int | None = None,
    min_weight: float = 0.0,
    kind_pre: str | None = None,
    kind_post: str | None = None,
    rel_type: RelType = RelType.ATTRIBUTION,
) -> pd.DataFrame:
    """Edges of a run with both ends' kinds and layers, strongest ``|score|`` first.

    Args:
        run_id: The run.
        top: Keep the ``top`` strongest edges (after filtering); None keeps all.
        min_weight: Keep edges with ``|score| >= min_weight``.
        kind_pre, kind_post: Restrict ends by label (``Head``, ``Mlp``, ``Embed``, ``Logit``, ...).

    Example:
        >>> fetch_edges(store, run_id, top=5, kind_post="Logit")  # doctest: +SKIP
    """
    require_run(store, run_id)
    if top is not None and top < 1:
        raise ValidationError(f"top must be at least 1, got {top}")
    if min_weight < 0:
        raise ValidationError(f"min_weight must be non-negative, got {min_weight}")
    score = "score" if rel_type is RelType.ATTRIBUTION else "effect"
    df = store.read(
        f"MATCH (a:Component)-[e:{rel_type.value} {{runId: $runId}}]->(b:Component) "
        f"WHERE abs(e.{score}) >= $minWeight "
        "AND ($kindPre IS NULL OR $kindPre IN labels(a)) AND ($kindPost IS NULL OR $kindPost IN labels(b)) "
        "RETURN a.componentId AS componentId_pre, b.componentId AS componentId_post, "
        "[l IN labels(a) WHERE l <> 'Component'][0] AS kind_pre, [l IN labels(b) WHERE l <> 'Component'][0] AS kind_post, "
        f"a.layer AS layer_pre, b.layer AS layer_post, e.channel AS channel, e.{score} AS score"
        # ORDER BY only with LIMIT: sorting a whole 1M-edge run in the server blows its query heap budget
        + (f" ORDER BY abs(e.{score}) DESC LIMIT $top" if top is not None else ""),
        {"runId": run_id, "minWeight": float(min_weight), "kindPre": kind_pre, "kindPost": kind_post, "top": top},
    )
    if df.empty:
        return pd.DataFrame(columns=_EDGE_COLUMNS)
    if top is None:
        df = df.reindex(df["score"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    return df


def fetch_edge_columns(store: Store, run_id: str, min_weight: float = 0.0) -> pd.DataFrame:
    """A run's edges as the four frame columns only, fetched as one row of lists.

    For analyses over whole runs: 2.4x faster than row by row over Bolt (1M edges: 7.8 s vs
    18.4 s). Falls back to rows when the server refuses to hold the lists (its query heap budget).
    """
    require_run(store, run_id)
    match = "MATCH (a:Component)-[e:ATTRIBUTION {runId: $run}]->(b:Component) WHERE abs(e.score) >= $w "
    params = {"run": run_id, "w": float(min_weight)}
    try:
        row = store.read(match + "RETURN collect(a.componentId) AS pre, collect(b.componentId) AS post, "
                         "collect(e.channel) AS channel, collect(e.score) AS score", params)
        data = {k: row[k].iloc[0] for k in ("pre", "post", "channel", "score")} if len(row) else None
    except QueryError:
        data = None
    if data is None:
        rows = store.read(match + "RETURN a.componentId AS pre, b.componentId AS post, e.channel AS channel, e.score AS score", params)
        data = {k: rows[k].tolist() for k in ("pre", "post", "channel", "score")}
    return pd.DataFrame({"componentId_pre": data["pre"], "componentId_post": data["post"],
                         "channel": data["channel"], "score": pd.Series(data["score"], dtype=float)})


def fetch_components(store: Store, model_id: str) -> pd.DataFrame:
    """Every component of a model with its properties (one column per property)."""
    df = store.read(
        "MATCH (c:Component {modelId: $model}) RETURN c.componentId AS componentId, "
        "[l IN labels(c) WHERE l <> 'Component'][0] AS kind, properties(c) AS props ORDER BY c.layer, c.componentId",
        {"model": model_id},
    )
    if df.empty:
        return df
    props = pd.json_normalize(df["props"].tolist())
    props = props.drop(columns=[c for c in ("componentId",) if c in props.columns])
    return pd.concat([df.drop(columns=["props"]), props], axis=1)
