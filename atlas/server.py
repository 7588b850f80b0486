"""The embedded graph database: an ArcadeDB server with its Bolt plugin, run as a local daemon.

The server lives in its own process (``python -m atlas.server``), started detached so several
atlas processes can share it. Its state lives in the atlas home::

    HOME/password         root password, generated once, mode 0600
    HOME/reader-password  password of ``reader``, a user whose group may only read, mode 0600
    HOME/server.json      {pid, boltPort, httpPort, heap}, written once the server listens
    HOME/server.lock      serialises concurrent starts
    HOME/arcadedb/        databases, config and the server's own log/ folder
    HOME/log/server.out   the daemon's stdout/stderr

Security: every listener binds to 127.0.0.1; the home is created 0700 and a home or file in it that
another user owns or may write is refused (see :func:`atlas.config.check_private_file`); the server
runs in ArcadeDB's production mode with ``LOAD CSV`` file and remote URLs off; read-only work
(``atlas query`` without ``--write``) logs in as ``reader``, whose database group grants
``readRecord`` alone, so the server itself refuses writes, schema changes and user management.
Nothing is written to the current directory.

Memory: the server's JVM heap is sized from the machine (:func:`default_heap`: a quarter of the
memory this process may use, between 1 and 32 GiB); ``atlas db start --heap 8g`` or
``ATLAS_DB_HEAP`` overrides it. ArcadeDB gives its queries half of the heap for in-memory buffers
(sorts, ``collect()``) and about one buffered element per 2 KB of heap, so a 6 GB heap holds a
3M-element ``collect()`` or an unlimited ``ORDER BY`` over 3M rows; the atlas's own whole-run reads
fall back to streaming rows when a run is larger than that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from atlas.config import EMBEDDED_DATABASE, check_private_file, ensure_home
from atlas.errors import ConfigError, StoreUnavailable

__all__ = [
    "ServerInfo", "ensure_server", "server_status", "start_server", "stop_server", "read_password",
    "ROOT_USER", "READER_USER", "pid_alive", "default_heap", "resolve_heap",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
ROOT_USER = "root"
READER_USER = "reader"
"""The embedded server's read-only user: its group in the atlas database may only read records."""
READER_GROUP = {"access": [], "resultSetLimit": -1, "readTimeout": -1, "types": {"*": {"access": ["readRecord"]}}}


_HEAP = re.compile(r"^([1-9][0-9]*)([mMgG])$")


def _memory_limit_bytes() -> int:
    """The memory this process may use: physical memory, or the cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            raw = Path(path).read_text().strip()
            if raw.isdigit() and 0 < int(raw) < total:
                total = int(raw)
    return total


def default_heap(limit_bytes: int | None = None) -> str:
    """The embedded server's heap for this machine: a quarter of its memory, 1 to 32 GiB, in GiB
    (24 GiB -> ``6g``, 8 GiB -> ``2g``, 2 GiB -> ``1g``)."""
    gib = (limit_bytes if limit_bytes is not None else _memory_limit_bytes()) / 2**30
    return f"{max(1, min(32, int(gib / 4)))}g"


def resolve_heap(heap: str | None = None) -> str:
    """The heap to start the server with: ``heap``, else ``$ATLAS_DB_HEAP``, else :func:`default_heap`.

    Raises:
        ConfigError: the value is not a size such as ``512m`` or ``8g``, or is under 256 MB.
    """
    value = heap or os.environ.get("ATLAS_DB_HEAP") or default_heap()
    m = _HEAP.match(value.strip())
    if m is None:
        raise ConfigError(f"database heap must be a size such as 512m or 8g, got {value!r} (--heap / ATLAS_DB_HEAP)")
    mb = int(m.group(1)) * (1024 if m.group(2).lower() == "g" else 1)
    if mb < 256:
        raise ConfigError(f"database heap {value!r} is too small: the server needs at least 256m")
    return value.strip().lower()


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server."""

    pid: int
    bolt_port: int
    http_port: int
    home: Path
    heap: str | None = None

    @property
    def uri(self) -> str:
        return f"bolt://{HOST}:{self.bolt_port}"


def _paths(home: Path) -> dict[str, Path]:
    return {
        "password": home / "password",
        "reader-password": home / "reader-password",
        "state": home / "server.json",
        "lock": home / "server.lock",
        "root": home / "arcadedb",
        "log": home / "log",
    }


def has_database(home: Path) -> bool:
    """Whether the home's embedded server has ever made its database (a fresh home has none: a
    read-only question about it can be answered without starting the server)."""
    from atlas.config import EMBEDDED_DATABASE

    return (_paths(home)["root"] / "databases" / EMBEDDED_DATABASE).is_dir()


def read_password(home: Path, create: bool = False, user: str = ROOT_USER) -> str:
    """The password of ``user`` (root or reader) of the embedded server; generated (mode 0600)
    when ``create`` and missing. A password file another user owns or may write is refused."""
    path = _paths(home)["password" if user == ROOT_USER else "reader-password"]
    if not check_private_file(path, "password file", secret=True):
        if not create:
            raise ConfigError(f"no password file at {path}: start the server with 'atlas db start'")
        ensure_home(home)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (an exited child not yet reaped) counts as dead and is reaped."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: the usual case, the daemon was started by another atlas process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _server_args(pid: int) -> dict[str, str] | None:
    """The ``--home``, ``--bolt-port``, ``--http-port`` and ``--heap`` of process ``pid`` when it is an
    atlas database daemon (``python -m atlas.server ...``), else None; read from /proc (Linux) or ``ps``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        try:
            out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        argv = out.split()
    if "atlas.server" not in argv:
        return None
    found: dict[str, str] = {}
    for flag in ("--home", "--bolt-port", "--http-port", "--heap"):
        if flag in argv[:-1]:
            found[flag] = argv[argv.index(flag) + 1]
    return found


def _is_home_server(pid: int, home: Path, bolt_port: int | None = None) -> bool:
    """Whether ``pid`` is this home's database daemon (its command line names the home, and the port
    when given): a state file that points anywhere else is not followed with the home's passwords."""
    found = _server_args(pid)
    if found is None or Path(found.get("--home", "")).resolve() != home.resolve():
        return False
    return bolt_port is None or found.get("--bolt-port") == str(bolt_port)


def find_home_servers(home: Path) -> list[ServerInfo]:
    """Every running database daemon of ``home`` found by its command line (Linux /proc): the server a
    lost or planted state file orphaned is found this way and stopped."""
    out = []
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else []:
        pid = int(entry.name)
        found = _server_args(pid)
        if found and Path(found.get("--home", "")).resolve() == home.resolve() and pid_alive(pid):
            try:
                out.append(ServerInfo(pid, int(found["--bolt-port"]), int(found["--http-port"]), home, found.get("--heap")))
            except (KeyError, ValueError):
                continue
    return out


def server_status(home: Path) -> ServerInfo | None:
    """The running server of this home, or None (a stale state file is removed). A state file whose
    process is not this home's daemon (another program, another home's server) is not trusted: the
    home's own daemon, if one runs, is found by its command line instead."""
    state = _paths(home)["state"]
    if not check_private_file(state, "server state file"):
        return _adopt_orphan(home) if home.is_dir() else None
    try:
        data = json.loads(state.read_text())
        info = ServerInfo(int(data["pid"]), int(data["boltPort"]), int(data["httpPort"]), home, data.get("heap"))
    except (ValueError, KeyError, TypeError):
        state.unlink(missing_ok=True)
        return None
    if pid_alive(info.pid) and _is_home_server(info.pid, home, info.bolt_port):
        return info if _port_open(info.bolt_port) else None
    if pid_alive(info.pid):  # a planted or stale state file: some other process has that pid
        print(f"atlas: warning: {state} names process {info.pid}, which is not this home's database server; ignoring it",
              file=sys.stderr)
    state.unlink(missing_ok=True)
    return _adopt_orphan(home)


def _adopt_orphan(home: Path) -> ServerInfo | None:
    """The home's running daemon when its state file was lost or replaced (found by its command
    line, recorded again), else None. Not while the home's lock is held: a server being started
    writes its state file only once it is ready, and must not be adopted before."""
    lock = _paths(home)["lock"]
    if lock.is_file() and not lock.is_symlink():
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # a start or stop is under way (this process's own included)
            fcntl.flock(fh, fcntl.LOCK_UN)
    for orphan in find_home_servers(home):
        if _port_open(orphan.bolt_port):
            _write_state(home, orphan)
            return orphan
    return None


def _write_state(home: Path, info: ServerInfo) -> None:
    """Record a found server in the state file again (user-only, as the daemon writes it)."""
    state = _paths(home)["state"]
    tmp = state.with_name(state.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as fh:
        json.dump({"pid": info.pid, "boltPort": info.bolt_port, "httpPort": info.http_port, "heap": info.heap}, fh)
    os.replace(tmp, state)


@contextlib.contextmanager
def _locked(home: Path):
    ensure_home(home)
    lock = _paths(home)["lock"]
    check_private_file(lock, "lock file")
    with os.fdopen(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start_server(home: Path, heap: str | None = None, quiet: bool = False) -> tuple[ServerInfo, bool]:
    """Start the embedded server for ``home`` unless one runs; returns (info, started_now).

    ``heap`` (else ``$ATLAS_DB_HEAP``, else sized from the machine) applies to a server started now;
    a running one keeps the heap it was started with (``info.heap``)."""
    heap = resolve_heap(heap)
    with _locked(home):
        info = server_status(home)
        if info is not None:
            return info, False
        paths = _paths(home)
        read_password(home, create=True)
        read_password(home, create=True, user=READER_USER)
        paths["log"].mkdir(mode=0o700, parents=True, exist_ok=True)
        paths["state"].unlink(missing_ok=True)
        bolt, http = _free_port(), _free_port()
        while http == bolt:
            http = _free_port()
        cmd = [sys.executable, "-m", "atlas.server", "--home", str(home), "--bolt-port", str(bolt), "--http-port", str(http),
               "--heap", heap]
        if not quiet:
            print(f"atlas: starting the embedded database in {home} ...", file=sys.stderr)
        log_file = paths["log"] / "server.out"
        check_private_file(log_file, "server log")
        with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(home), start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreUnavailable(
                    f"the embedded database exited during start-up (code {proc.returncode}); see {paths['log'] / 'server.out'}"
                )
            info = server_status(home)
            if info is not None:
                return info, True
            time.sleep(0.05)
        proc.kill()
        raise StoreUnavailable(f"the embedded database did not start within {START_TIMEOUT_S:.0f} s; see {paths['log'] / 'server.out'}")


def ensure_server(home: Path, quiet: bool = False) -> ServerInfo:
    """A running server for ``home``, started on demand (and said so on stderr)."""
    info = server_status(home)
    if info is not None:
        return info
    return start_server(home, quiet=quiet)[0]


def stop_server(home: Path, timeout: float = 30.0) -> bool:
    """Stop the server of ``home``; returns False when none was running (a home that does not exist
    runs none, and is not created). Returns once the process has exited."""
    if not home.is_dir():
        return False
    with _locked(home):
        info = server_status(home)
        if info is None:  # no state file to go by: a daemon of this home that lost it is stopped all the same
            found = find_home_servers(home)
            if not found:
                return False
            info = found[0]
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(info.pid):
            time.sleep(0.1)
        if pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
        _paths(home)["state"].unlink(missing_ok=True)
        return True


def _serve(home: Path, bolt_port: int, http_port: int, heap: str) -> None:
    """Daemon body: run ArcadeDB until SIGTERM. Writes the state file once Bolt listens and the
    read-only user exists."""
    import arcadedb_embedded as adb  # heavy (starts a JVM): only in the daemon

    os.umask(0o077)  # database files, config and logs readable by this user only
    paths = _paths(home)
    root = paths["root"]
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # homes made by earlier versions left it 0755
    server = adb.ArcadeDBServer(
        root_path=str(root / "databases"),
        root_password=read_password(home),
        config={
            "host": HOST,
            "mode": "production",  # among others, forces LOAD CSV file URLs off
            "http_port": http_port,
            "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt_port": bolt_port,
            "server_rootPath": str(root),
            "server_databaseDirectory": str(root / "databases"),
            "polyglotEngineEnabled": False,  # no scripting languages: not used, and 0.15 s of every start
            "serverMetrics": False,
            "opencypher_loadCsv_allowFileUrls": False,
            "opencypher_loadCsv_allowRemoteUrls": False,
        },
        jvm_kwargs={"heap_size": heap},
    )
    server.start()
    stop = {"now": False}

    def on_term(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    bulk = None
    try:
        if not (root / "databases" / EMBEDDED_DATABASE).exists():
            server.create_database(EMBEDDED_DATABASE)
        _ensure_reader(server, read_password(home, user=READER_USER), root / "reader.sha256")
        from atlas.bulk import serve_bulk

        bulk = serve_bulk(root, lambda: server.get_database(EMBEDDED_DATABASE),
                          log=lambda line: print(f"atlas bulk: {line}", file=sys.stderr, flush=True))
        tmp = paths["state"].with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "boltPort": bolt_port, "httpPort": http_port, "heap": heap}))
        os.replace(tmp, paths["state"])
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            if paths["state"].exists() and json.loads(paths["state"].read_text()).get("pid") == os.getpid():
                paths["state"].unlink()
        with contextlib.suppress(Exception):
            if bulk is not None:
                bulk.close()
                (root / "bulk.sock").unlink()
        server.stop()


def _ensure_reader(server: object, password: str, stamp: Path) -> None:
    """(Re)create the read-only user and its group in the atlas database, through the server's
    own security API (so the password is hashed the server's way and the files stay consistent).

    Skipped when the user exists and ``stamp`` (user-only) holds the digest of this password and
    group, as the last start left them: the server's password hashing is deliberately slow (about
    0.3 s of every start)."""
    import hashlib

    import jpype

    json_object = jpype.JClass("com.arcadedb.serializer.json.JSONObject")
    security = server._java_server.getSecurity()  # type: ignore[attr-defined]
    digest = hashlib.sha256(json.dumps([password, READER_GROUP, EMBEDDED_DATABASE], sort_keys=True).encode()).hexdigest()
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == digest and security.existsUser(READER_USER):
            return
    stamp.unlink(missing_ok=True)
    security.saveGroup(EMBEDDED_DATABASE, READER_USER, json_object(json.dumps(READER_GROUP)))
    if security.existsUser(READER_USER):
        security.dropUser(READER_USER)
    security.createUser(json_object(json.dumps({
        "name": READER_USER,
        "password": str(security.encodePassword(password)),
        "databases": {EMBEDDED_DATABASE: [READER_USER]},
    })))
    fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(digest)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m atlas.server", description="Run the embedded ArcadeDB server (daemon).")
    p.add_argument("--home", required=True)
    p.add_argument("--bolt-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--heap", default=None, help="JVM heap (default: sized from the machine)")
    a = p.parse_args(argv)
    _serve(Path(a.home), a.bolt_port, a.http_port, resolve_heap(a.heap))


if __name__ == "__main__":
    main()
