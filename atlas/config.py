"""Where the atlas keeps its files and which database it talks to.

Resolution order for every setting: explicit argument (CLI flag) > environment variable > default.
Nothing is read at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from atlas.errors import ConfigError

__all__ = ["StoreSettings", "atlas_home", "resolve_store_settings", "EMBEDDED_DATABASE"]

EMBEDDED_DATABASE = "atlas"
"""Name of the database the embedded ArcadeDB server holds."""


def atlas_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The atlas home: ``explicit``, else ``$ATLAS_HOME``, else ``./.atlas``; made absolute."""
    raw = explicit if explicit is not None else os.environ.get("ATLAS_HOME") or ".atlas"
    home = Path(raw).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"atlas home {home} exists and is not a directory")
    return home


@dataclass(frozen=True)
class StoreSettings:
    """How to reach the graph database.

    Attributes:
        uri: Bolt URI of a Neo4j (or other Bolt) server; None means the embedded ArcadeDB server.
        user: User name (Neo4j: usually ``neo4j``); ignored for the embedded server (``root``).
        password: Password; for the embedded server it is read from the atlas home.
        database: Database name; None means the server's default (``atlas`` when embedded).
        home: The atlas home (embedded server data, password file, model cache).
    """

    uri: str | None
    user: str | None
    password: str | None
    database: str | None
    home: Path

    @property
    def embedded(self) -> bool:
        return self.uri is None


def resolve_store_settings(
    uri: str | None = None,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> StoreSettings:
    """Merge flags with ``ATLAS_URI``, ``ATLAS_USER``, ``ATLAS_PASSWORD``, ``ATLAS_DATABASE``, ``ATLAS_HOME``."""
    uri = uri or os.environ.get("ATLAS_URI") or None
    user = user or os.environ.get("ATLAS_USER") or None
    password = password or os.environ.get("ATLAS_PASSWORD") or None
    database = database or os.environ.get("ATLAS_DATABASE") or None
    if uri is not None and "://" not in uri:
        raise ConfigError(f"invalid database URI {uri!r}: expected e.g. bolt://localhost:7687 or neo4j+s://host")
    return StoreSettings(uri=uri, user=user, password=password, database=database, home=atlas_home(home))
