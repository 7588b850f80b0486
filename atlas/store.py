"""The graph store: one implementation over the official ``neo4j`` driver for both servers.

``Store.connect()`` reaches the embedded ArcadeDB server (started on demand) or, given a URI, any
Neo4j 5 server. ``Store.connect(read_only=True)`` is what user-written queries get: on the embedded
server it logs in as the ``reader`` user, whose group may only read (ArcadeDB ignores the driver's
READ access mode, Neo4j enforces it). Reads also run in an explicit transaction that is always
rolled back and refuse any statement that wrote, and :mod:`atlas.guard` refuses statements that act
outside transactions before sending them. Writes are ``UNWIND $rows`` batches in managed
transactions. The statements themselves live in :mod:`atlas.connectome`; this module only
carries them, with values always as parameters.

This is the only module that imports ``neo4j``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from atlas.config import EMBEDDED_DATABASE, StoreSettings, resolve_store_settings
from atlas.errors import (
    QueryError,
    ReadOnlyViolation,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from atlas.guard import check_statement

__all__ = ["Store", "DEFAULT_BATCH", "EDGE_BATCH", "home_write_lock"]

DEFAULT_BATCH = 5000
# how long a statement is tried again after a transient error (deadlock, write conflict), as the
# driver's managed transactions do for batches (its max_transaction_retry_time below)
TRANSIENT_RETRY_S = 10.0
EDGE_BATCH = 50000
_WRITE_QUERY_TYPES = {"w", "rw", "s"}


def _translate(exc: Exception, cypher: str | None = None, *, read_only: bool = False) -> StoreError:
    """Map a driver exception onto the atlas error tree with a one-line message."""
    import neo4j.exceptions as nx

    msg = getattr(exc, "message", None) or str(exc)
    msg = " ".join(str(msg).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    code = str(getattr(exc, "code", None) or "")
    if read_only and (isinstance(exc, nx.Forbidden) or code.endswith(("Security.Forbidden", "AccessMode"))):
        return ReadOnlyViolation(
            "the database refused the statement: this connection may only read; pass --write (write=True) to allow writes"
        )
    if isinstance(exc, nx.Forbidden):
        return QueryError(f"the database refused the statement: not permitted for this user ({code})")
    if isinstance(exc, nx.AuthError):
        return StoreAuthError(f"the database refused the credentials: {msg}")
    if isinstance(exc, nx.CypherSyntaxError):
        return QueryError(f"Cypher syntax error: {msg}")
    if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)) or isinstance(exc, OSError):
        return StoreUnavailable(f"cannot reach the database: {msg}")
    if isinstance(exc, nx.Neo4jError):
        code = getattr(exc, "code", None) or "error"
        return QueryError(f"the database rejected the statement ({code}): {msg}")
    if isinstance(exc, nx.DriverError):
        return StoreUnavailable(f"database driver error: {msg}")
    return StoreError(msg)


def _lost_merge_race(exc: Exception, cypher: str) -> bool:
    """A MERGE that lost a race to create the same node (two ingests of one model at once): the
    unique constraint refused the second CREATE. Running the statement again is safe and then
    matches the winner's node."""
    return str(getattr(exc, "code", "") or "").endswith("ConstraintValidationFailed") and "MERGE" in cypher.upper()


def _plain(value: Any) -> Any:
    """Graph values as plain Python: nodes and relationships become property dicts."""
    from neo4j.graph import Node, Path, Relationship

    if isinstance(value, Node):
        return {"_labels": sorted(value.labels), **{k: _plain(v) for k, v in value.items()}}
    if isinstance(value, Relationship):
        return {"_type": value.type, **{k: _plain(v) for k, v in value.items()}}
    if isinstance(value, Path):
        return [_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):
        return value.iso_format()
    return value


def _chunks(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


WRITE_LOCK = "write.lock"


@contextlib.contextmanager
def home_write_lock(settings: StoreSettings, *, exclusive: bool = False) -> Iterator[None]:
    """Hold the embedded home's writer lock (``HOME/write.lock``, 0600): shared by every write over
    Bolt, exclusive for a bulk load (:mod:`atlas.bulk`). ArcadeDB's batch API appends to vertices'
    edge lists outside the transactions Bolt writes use, so a Bolt write that touches the same
    vertices meanwhile could lose its edges (measured: 50,000 of 300,000); the lock keeps them apart.
    Nothing to hold for a server given by URI (no bulk path there)."""
    if settings.uri is not None:
        yield
        return
    path = Path(settings.home) / WRITE_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:  # e.g. a symbolic link planted there: refused, as the home's other files are
        raise StoreError(f"cannot open the home's writer lock {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


class Store:
    """A connection to the connectome database.

    Use as a context manager::

        with Store.connect() as store:
            store.read("MATCH (r:Run) RETURN r.runId AS runId")

    Args:
        driver: An open ``neo4j.Driver``.
        database: Database name, or None for the server's default.
        settings: The settings it was opened with.
    """

    def __init__(self, driver: Any, database: str | None, settings: StoreSettings, *, read_only: bool = False) -> None:
        self._driver = driver
        self.database = database
        self.settings = settings
        self.read_only = read_only
        self._agent: str | None = None

    # -- connection -------------------------------------------------------------------------
    @classmethod
    def connect(cls, settings: StoreSettings | None = None, *, quiet: bool = False, read_only: bool = False) -> Store:
        """Open the store named by ``settings`` (default: flags/env/embedded), verifying it answers.

        For the embedded default the ArcadeDB server is started on demand (a line on stderr says so).
        With ``read_only`` the server itself refuses writes: the embedded server is reached as its
        read-only user, a Neo4j server in READ access mode, and ``run(write=True)`` is refused.

        Raises:
            StoreUnavailable: nothing answers at the URI.
            StoreAuthError: wrong user or password.
        """
        import neo4j

        settings = settings or resolve_store_settings()
        if settings.embedded:
            from atlas.server import READER_USER, ROOT_USER, ensure_server, read_password

            info = ensure_server(settings.home, quiet=quiet)
            user = READER_USER if read_only else ROOT_USER
            uri, password = info.uri, read_password(settings.home, user=user)
            database: str | None = settings.database or EMBEDDED_DATABASE
        else:
            assert settings.uri is not None
            uri = settings.uri
            user = settings.user or "neo4j"
            if settings.password is None:
                raise StoreAuthError("no password for the database: pass --password or set ATLAS_PASSWORD")
            password = settings.password
            database = settings.database
        try:
            driver = neo4j.GraphDatabase.driver(
                uri,
                auth=(user, password),
                connection_timeout=5.0,
                max_transaction_retry_time=TRANSIENT_RETRY_S,
                notifications_min_severity="OFF",
            )
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise StoreUnavailable(f"invalid database URI {uri!r}: {exc}") from exc
        try:
            driver.verify_connectivity()
        except Exception as exc:
            driver.close()
            error = _translate(exc)
            if settings.embedded and read_only and isinstance(error, StoreAuthError):
                raise StoreAuthError(
                    f"{error}; a server started by an older atlas has no read-only user: restart it with 'atlas db stop'"
                ) from exc
            raise error from exc
        return cls(driver, database, settings, read_only=read_only)

    def close(self) -> None:
        self._driver.close()

    @property
    def agent(self) -> str:
        """The server's own name for itself (``Neo4j/5.26.0``, ``Neo4j/5.26.0 compatible (ArcadeDB
        26.10.2)``), asked once per store."""
        if self._agent is None:
            try:
                self._agent = str(self._driver.get_server_info().agent)
            except Exception as exc:
                raise _translate(exc) from exc
        return self._agent

    @property
    def is_arcadedb(self) -> bool:
        """True when the server is ArcadeDB (the embedded default, or one reached by URI): the
        schema and a few statements differ where the two engines' costs differ."""
        return "arcadedb" in self.agent.lower()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self, read: bool = False) -> Any:
        import neo4j

        mode = neo4j.READ_ACCESS if read or self.read_only else neo4j.WRITE_ACCESS
        return self._driver.session(database=self.database, default_access_mode=mode)

    def _require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyViolation("this store was opened read-only; open it without read_only to write")

    # -- generic statements -----------------------------------------------------------------
    def read(self, cypher: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run a read-only statement and return its rows as a DataFrame (columns = RETURN names).

        The statement runs in an explicit transaction that is rolled back, so nothing it does
        persists; a statement that tried to write raises ReadOnlyViolation, and one whose effect
        would escape the transaction is refused before sending (:mod:`atlas.guard`).
        """
        return self.run(cypher, params, write=False)

    def run(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False, timeout: float | None = None) -> pd.DataFrame:
        """Run one statement; writes persist only when ``write`` is true (and the store is not read-only).
        ``timeout``: seconds the server may spend on it (its transaction timeout; QueryError past it)."""
        if not isinstance(cypher, str) or not cypher.strip():
            raise QueryError("empty Cypher statement")
        if write:
            self._require_writable()
        check_statement(cypher, write=write)
        params = dict(params or {})
        import neo4j.exceptions

        deadline, pause = time.monotonic() + TRANSIENT_RETRY_S, 0.05
        while True:
            try:
                with home_write_lock(self.settings) if write else contextlib.nullcontext():
                    keys, rows, wrote = self._run_once(cypher, params, write, timeout)
                break
            except neo4j.exceptions.Neo4jError as exc:
                # a deadlock or a write conflict with another session (a transient error the
                # server rolled back), or a MERGE that lost a race: running the statement again is
                # safe, as execute_write does
                if not (exc.is_retryable() or _lost_merge_race(exc, cypher)) or time.monotonic() + pause > deadline:
                    raise _translate(exc, cypher, read_only=not write) from exc
                time.sleep(pause * (0.5 + random.random()))
                pause = min(2 * pause, 1.0)
            except StoreError:
                raise
            except Exception as exc:
                raise _translate(exc, cypher, read_only=not write) from exc
        if wrote and not write:
            raise ReadOnlyViolation(
                "the statement writes to the database and was rolled back; pass --write (write=True) to allow writes"
            )
        return pd.DataFrame(rows, columns=keys)

    def _run_once(self, cypher: str, params: dict[str, Any], write: bool, timeout: float | None = None) -> tuple[list[str], list[list[Any]], bool]:
        """One try of :meth:`run`: (column names, rows, whether the statement wrote)."""
        with self._session(read=not write) as session:
            tx = session.begin_transaction(timeout=timeout)
            try:
                result = tx.run(cypher, params)
                keys = list(result.keys())
                rows = [[_plain(v) for v in rec.values()] for rec in result]
                summary = result.consume()
                wrote = summary.counters.contains_updates or summary.query_type in _WRITE_QUERY_TYPES
                if write:
                    tx.commit()
                else:
                    tx.rollback()
            finally:
                if not tx.closed():
                    tx.close()
        return keys, rows, wrote

    def write_rows(
        self,
        cypher: str,
        rows: Sequence[dict[str, Any]],
        *,
        params: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Send ``rows`` as ``$rows`` in batches, each batch one managed (retried) transaction.

        The statement must be idempotent per batch (MERGE), or the caller must make the whole
        operation restartable (see ``write_edges``). Returns the number of rows sent.
        """
        self._require_writable()
        extra = dict(params or {})

        def work(tx: Any, batch: Sequence[dict[str, Any]]) -> None:
            tx.run(cypher, {**extra, "rows": list(batch)}).consume()

        sent = 0
        try:
            with home_write_lock(self.settings), self._session() as session:
                for batch in _chunks(rows, batch_size):
                    for attempt in range(6):
                        try:
                            session.execute_write(work, batch)
                            break
                        except Exception as exc:  # a MERGE that lost a race to another writer: again, it now matches
                            if attempt == 5 or not _lost_merge_race(exc, cypher):
                                raise
                            time.sleep(0.05 * (attempt + 1) * (0.5 + random.random()))
                    sent += len(batch)
                    if progress is not None:
                        progress(len(batch))
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, cypher) from exc
        return sent

    def write_batches(
        self,
        cypher: str,
        batches: Iterable[tuple[int, dict[str, Any]]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Run ``cypher`` once per ``(rows, params)`` batch, each one managed transaction, and
        return what each reported as ``n`` (the statement must ``RETURN ... AS n``).

        Batches are built lazily, so a caller can pack each one (dictionary codes, the ids it
        touches) while the server is still busy with nothing else of it in memory.
        """
        self._require_writable()

        def work(tx: Any, params: dict[str, Any]) -> int:
            record = tx.run(cypher, params).single()
            return int(record["n"]) if record is not None else 0

        counts: list[int] = []
        try:
            with home_write_lock(self.settings), self._session() as session:
                for rows, params in batches:
                    counts.append(session.execute_write(work, params))
                    if progress is not None:
                        progress(rows)
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, cypher) from exc
        return counts
