"""The embedded server's bulk edge path: ArcadeDB's in-process batch API, fed by the atlas over a
local socket.

Bolt costs the server a Cypher plan, a MATCH per batch and a CREATE per edge; ArcadeDB's
``GraphBatch`` appends edges to its edge lists directly (about twice the rate on this machine). The
embedded server is our own daemon (:mod:`atlas.server`), which holds the database in its process, so
it also listens on a Unix socket in the home's user-only database folder, ``HOME/arcadedb/bulk.sock``
(mode 0600; a peer whose uid is not the server's is refused). One request writes one batch of edges:

1. the client sends a header ``{"op": "edges", "type": REL_TYPE, "ids": [componentId, ...]}``;
2. the server answers the components' record ids (``{"rids": [...]}``), or which are missing
   (``{"missing": [...], "nMissing": n}``), before anything is written;
3. the client streams the edges as JSON arrays of ``{"_src": rid, "_dst": rid, property: value}``
   (built vectorised, scores with Python's round-trip float repr, so they are stored bit for bit);
   the server hands each array to the engine (``EdgeBatcher.newEdgesJson``) while the client builds
   the next one (two processes, so the building and the engine overlap);
4. an empty frame ends the stream; the server flushes and answers ``{"written": n}`` or ``{"error": ...}``.

Frames are an 8-byte big-endian length and that many bytes. Transactions are the engine's (a commit
per ``batch_size`` edges), as Bolt's batches are: a run is marked complete only after its edges are
all in, by its caller, and an interrupted run's edges are deleted when it is run again.

``ATLAS_BULK=0`` turns the path off (every write goes over Bolt, as against Neo4j); writes of fewer
than ``ATLAS_BULK_MIN`` edges (default 5,000) take Bolt anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas.errors import StoreError, ValidationError
from atlas.schema import RelType

if TYPE_CHECKING:  # numpy and pandas only in the client: the daemon imports this module at every start
    import numpy as np
    import pandas as pd

__all__ = ["bulk_socket", "bulk_min_edges", "write_edges_bulk", "serve_bulk", "BULK_MIN_EDGES", "SOCKET_NAME"]

SOCKET_NAME = "bulk.sock"
BULK_MIN_EDGES = 5_000  # fewer go over Bolt (the socket's round trips would not pay); $ATLAS_BULK_MIN overrides
_CHUNK = 20_000  # edges per JSON array (small enough that building the next overlaps the engine from the start)
_MAX_FRAME = 1 << 31
_REL_TYPES = tuple(r.value for r in RelType)


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack(">Q", len(payload)) + payload)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = conn.recv(min(n - got, 1 << 22))
        if not part:
            raise ConnectionError("the bulk socket closed mid-frame")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _recv(conn: socket.socket) -> bytes:
    (n,) = struct.unpack(">Q", _recv_exact(conn, 8))
    if n > _MAX_FRAME:
        raise ConnectionError(f"a bulk frame of {n} bytes is larger than allowed")
    return _recv_exact(conn, n)


def _send_json(conn: socket.socket, value: Any) -> None:
    _send(conn, json.dumps(value).encode())


def _recv_json(conn: socket.socket) -> Any:
    return json.loads(_recv(conn))


# -- client -----------------------------------------------------------------------------------
def bulk_min_edges() -> int:
    """Edges a write needs to take the bulk path: ``$ATLAS_BULK_MIN``, else :data:`BULK_MIN_EDGES`."""
    raw = os.environ.get("ATLAS_BULK_MIN", "")
    if not raw:
        return BULK_MIN_EDGES
    if not raw.isdigit():
        raise ValidationError(f"ATLAS_BULK_MIN must be a non-negative integer, got {raw!r}")
    return int(raw)


def bulk_socket(settings: Any) -> Path | None:
    """The embedded server's bulk socket for a store's settings, or None (a Bolt URI, ``ATLAS_BULK=0``,
    or a server that does not offer it)."""
    if getattr(settings, "uri", None) is not None or os.environ.get("ATLAS_BULK", "1") == "0":
        return None
    path = Path(settings.home) / "arcadedb" / SOCKET_NAME
    return path if path.is_socket() else None


def _json_text(values: np.ndarray) -> np.ndarray:
    """Each value as JSON text (an object array): floats as Python's round-trip repr, integers and
    booleans as JSON writes them."""
    import numpy as np

    listed = values.tolist()
    if values.dtype.kind in "fiu" and listed:  # one repr of the list: floats round-trip, integers as written
        return np.array(repr(listed)[1:-1].split(", "), dtype=object)
    return np.array([json.dumps(v) for v in listed], dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _bulkable(columns: Mapping[str, pd.Series]) -> bool:
    """Whether every column can travel as JSON with no missing value and no infinity (else Bolt,
    which stores a missing value as no property)."""
    import numpy as np

    for values in columns.values():
        if values.dtype == object:
            if values.map(_missing).any():
                return False
        elif values.isna().any() or (values.dtype.kind == "f" and not np.isfinite(values.to_numpy()).all()):
            return False
    return True


def write_edges_bulk(path: Path, rel_type: str, pre_ids: pd.Series, post_ids: pd.Series, columns: Mapping[str, pd.Series],
                     fixed: Mapping[str, Any], progress: Callable[[int], None] | None = None) -> int | None:
    """Write edges through the bulk socket ``path``; returns how many the server wrote, or None when
    the columns cannot travel as JSON or nothing answers at ``path`` (the caller then uses Bolt). ``columns`` are per-edge
    properties by their stored names, ``fixed`` those equal on every edge.

    Raises:
        ValidationError: an edge names a component that is not in the database (nothing written).
        StoreError: the server refused or failed the write.
    """
    import numpy as np
    import pandas as pd

    if rel_type not in _REL_TYPES:
        raise ValidationError(f"unknown relationship type {rel_type!r}")
    if not _bulkable(columns):
        return None
    n = len(pre_ids)
    ends, ids = pd.factorize(pd.concat([pre_ids, post_ids], ignore_index=True))
    pre, post = ends[:n], ends[n:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:  # a socket left by a server that is gone: Bolt writes the same edges
        conn.close()
        return None
    with conn:
        _send_json(conn, {"op": "edges", "type": rel_type, "ids": [str(i) for i in ids]})
        answer = _recv_json(conn)
        if "error" in answer:
            raise StoreError(f"the embedded server refused a bulk write: {answer['error']}")
        if answer.get("missing"):
            missing = answer["missing"]
            more = answer.get("nMissing", len(missing)) - len(missing)
            raise ValidationError(f"edges name components that are not in the database: {missing}"
                                  + (f" (and {more} more)" if more > 0 else "") + f"; 0 of {n} edges were written, write the components first")
        rids = answer["rids"]
        constant = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in fixed.items())
        heads = np.array([f'{{"_src":"{r}","_dst":"' for r in rids], dtype=object)
        mids = np.array([f'{r}"{constant}' for r in rids], dtype=object)
        names = list(columns)
        coded: list[tuple[np.ndarray, np.ndarray]] = []  # string columns: codes into their JSON texts
        for name in names:
            values = columns[name]
            key = f",{json.dumps(name)}:"
            if pd.api.types.is_string_dtype(values) and not isinstance(values.iloc[0] if len(values) else "", list):
                codes, uniques = pd.factorize(values)
                coded.append((codes, np.array([key + json.dumps(str(u)) for u in uniques], dtype=object)))
            else:
                coded.append((np.arange(0), np.array([key], dtype=object)))  # text per edge, built per chunk

        def chunks() -> Iterator[tuple[int, str]]:
            for lo in range(0, n, _CHUNK):
                hi = min(lo + _CHUNK, n)
                parts = [heads[pre[lo:hi]], mids[post[lo:hi]]]
                for name, (codes, texts) in zip(names, coded, strict=True):
                    if len(codes):
                        parts.append(texts[codes[lo:hi]])
                    else:  # numbers (and lists, e.g. per-prompt scores) as JSON text per edge
                        values = columns[name].iloc[lo:hi]
                        text = _json_text(values.to_numpy()) if values.dtype != object else np.array([json.dumps(v) for v in values], dtype=object)
                        parts.append(texts[0] + text)
                yield hi - lo, "[" + "},".join(map("".join, zip(*parts, strict=True))) + "}]"

        for size, text in chunks():
            _send(conn, text.encode())
            if progress:
                progress(size)
        _send(conn, b"")
        done = _recv_json(conn)
    if "error" in done:
        raise StoreError(f"the embedded server failed a bulk write: {done['error']}")
    written = int(done["written"])
    if written != n:
        raise StoreError(f"the embedded server wrote {written} of {n} edges through the bulk path")
    return written


# -- server (inside the daemon) -----------------------------------------------------------------
def _peer_uid(conn: socket.socket) -> int:
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", data)[1])


def _record_ids(db: Any, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for lo in range(0, len(ids), 10_000):
        for row in db.query("sql", "SELECT componentId, @rid AS rid FROM Component WHERE componentId IN :ids", {"ids": ids[lo:lo + 10_000]}):
            found[str(row.get("componentId"))] = str(row.get("rid"))
    return found


_ONE_AT_A_TIME = threading.Lock()  # one batch writer at a time: two would race for the same vertices' edge lists


def _handle(conn: socket.socket, database: Callable[[], Any], log: Callable[[str], None]) -> None:
    import jpype

    with conn:
        if _peer_uid(conn) != os.getuid():
            _send_json(conn, {"error": "refused: another user"})
            return
        header = _recv_json(conn)
        if header.get("op") != "edges" or header.get("type") not in _REL_TYPES or not isinstance(header.get("ids"), list):
            _send_json(conn, {"error": "a bulk request is {op: edges, type, ids}"})
            return
        db = database()
        ids = [str(i) for i in header["ids"]]
        rids = _record_ids(db, ids)
        missing = [i for i in ids if i not in rids]
        if missing:
            _send_json(conn, {"missing": missing[:5], "nMissing": len(missing)})
            return
        _send_json(conn, {"rids": [rids[i] for i in ids]})
        batcher = jpype.JClass("com.arcadedb.python.EdgeBatcher")
        try:
            db.schema.get_or_create_edge_type(header["type"])  # Cypher makes it on first use; the batch API does not
            # the write-ahead log stays on (the engine turns it off for a bulk load by default): a
            # crash mid-load then loses at most the unfinished run's edges, never the database's pages
            with _ONE_AT_A_TIME, db.graph_batch(batch_size=50_000, use_wal=True) as batch:
                while chunk := _recv(conn):
                    batcher.newEdgesJson(batch._java_graph_batch, header["type"], chunk.decode())
                batch.flush()
                written = int(batch.get_total_edges_created())
        except Exception as exc:  # the engine's message, to the client; the daemon lives on
            log(f"bulk write failed: {exc}")
            with contextlib.suppress(OSError):
                _send_json(conn, {"error": str(exc).splitlines()[0][:500]})
            return
        _send_json(conn, {"written": written})


def serve_bulk(root: Path, database: Callable[[], Any], log: Callable[[str], None] = lambda _: None) -> socket.socket | None:
    """Listen on ``root/bulk.sock`` (0600) in a daemon thread, one thread per connection; returns the
    listening socket (close it to stop), or None where a Unix socket cannot be made there."""
    path = root / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        listener.listen(4)
    except OSError as exc:  # e.g. a path longer than a socket's address allows
        log(f"no bulk socket ({exc}): edges go over Bolt")
        listener.close()
        return None

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the daemon is stopping
            threading.Thread(target=_handle_logged, args=(conn,), daemon=True).start()

    def _handle_logged(conn: socket.socket) -> None:
        try:
            _handle(conn, database, log)
        except Exception as exc:  # a client that went away mid-request
            log(f"bulk request ended: {exc}")

    threading.Thread(target=accept, daemon=True, name="atlas-bulk").start()
    return listener
