"""Where the atlas keeps its files and which database it talks to.

Resolution order for every setting: explicit argument (CLI flag) > environment variable > default.
Nothing is read at import time.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from atlas.errors import ConfigError

__all__ = ["StoreSettings", "atlas_home", "ensure_home", "check_private_file", "resolve_store_settings", "EMBEDDED_DATABASE"]

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
"""URI schemes of the Bolt protocol (the official driver's): the only ones a store URI may use."""

EMBEDDED_DATABASE = "atlas"
"""Name of the database the embedded ArcadeDB server holds."""


def atlas_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The atlas home: ``explicit``, else ``$ATLAS_HOME``, else ``./.atlas``; made absolute.

    The home is a security boundary (it holds the database's passwords, its files and the model
    cache, whose pickles torch loads), so an existing home that is not a directory, is not owned by
    the current user, or that another user may write is refused. Creating it is
    :func:`ensure_home`'s job.
    """
    raw = explicit if explicit is not None else os.environ.get("ATLAS_HOME") or ".atlas"
    given = Path(raw).expanduser()
    if given.is_symlink():  # resolving it would trust wherever it points
        raise ConfigError(f"atlas home {given} is a symbolic link; refusing to trust it (give the directory it points to)")
    home = given.resolve()
    if home.exists():
        if not home.is_dir():
            raise ConfigError(f"atlas home {home} exists and is not a directory")
        _check_owned(home, "atlas home")
    return home


def ensure_home(home: Path) -> Path:
    """Create the atlas home (mode 0700) when missing; refuse one another user owns or may write."""
    if not home.exists():
        home.parent.mkdir(parents=True, exist_ok=True)
        try:
            home.mkdir(mode=0o700)
        except FileExistsError:
            pass  # created concurrently: checked below like any existing home
        else:
            os.chmod(home, 0o700)  # mkdir's mode is masked by the umask
    if not home.is_dir():
        raise ConfigError(f"atlas home {home} exists and is not a directory")
    _check_owned(home, "atlas home")
    return home


def _check_owned(path: Path, what: str) -> os.stat_result:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{what} {path} is a symbolic link; refusing to trust it")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{what} {path} is owned by another user (uid {st.st_uid}); refusing to trust it")
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to trust it (chmod go-w {path} if that is intended)"
        )
    return st


def check_private_file(path: Path, what: str, *, secret: bool = False) -> bool:
    """Check a file of the home before trusting it; returns False when it does not exist.

    It must be a regular file owned by the current user that no one else may write; a ``secret``
    that others may read is made private (0600) first.
    """
    if not os.path.lexists(path):
        return False
    st = _check_owned(path, what)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file; refusing to trust it")
    if secret and st.st_mode & 0o077:
        import sys

        print(f"atlas: warning: {what} {path} was readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); made it private (0600). "
              "Anyone who read it could reach the database: consider 'atlas db stop' and a new home", file=sys.stderr)
        os.chmod(path, 0o600)
    return True


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
    if uri is not None and ("://" not in uri or uri.split("://", 1)[0] not in BOLT_SCHEMES):
        raise ConfigError(f"invalid database URI {uri!r}: expected a Bolt URI ({', '.join(BOLT_SCHEMES)}), e.g. bolt://localhost:7687 or neo4j+s://host")
    return StoreSettings(uri=uri, user=user, password=password, database=database, home=atlas_home(home))
