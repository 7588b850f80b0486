"""The embedded graph database: an ArcadeDB server with its Bolt plugin, run as a local daemon.

The server lives in its own process (``python -m atlas.server``), started detached so several
atlas processes can share it. Its state lives in the atlas home::

    HOME/password        root password, generated once, mode 0600
    HOME/server.json     {pid, boltPort, httpPort}, written once the server listens
    HOME/server.lock     serialises concurrent starts
    HOME/arcadedb/       databases, config and the server's own log/ folder
    HOME/log/server.out  the daemon's stdout/stderr

Every listener binds to 127.0.0.1; nothing is written to the current directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from atlas.config import EMBEDDED_DATABASE
from atlas.errors import ConfigError, StoreUnavailable

__all__ = ["ServerInfo", "ensure_server", "server_status", "start_server", "stop_server", "read_password"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server."""

    pid: int
    bolt_port: int
    http_port: int
    home: Path

    @property
    def uri(self) -> str:
        return f"bolt://{HOST}:{self.bolt_port}"


def _paths(home: Path) -> dict[str, Path]:
    return {
        "password": home / "password",
        "state": home / "server.json",
        "lock": home / "server.lock",
        "root": home / "arcadedb",
        "log": home / "log",
    }


def read_password(home: Path, create: bool = False) -> str:
    """The embedded server's root password; generated (mode 0600) when ``create`` and missing."""
    path = _paths(home)["password"]
    if not path.exists():
        if not create:
            raise ConfigError(f"no password file at {path}: start the server with 'atlas db start'")
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
    return path.read_text().strip()


def _pid_alive(pid: int) -> bool:
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


def server_status(home: Path) -> ServerInfo | None:
    """The running server of this home, or None (a stale state file is removed)."""
    state = _paths(home)["state"]
    if not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
        info = ServerInfo(int(data["pid"]), int(data["boltPort"]), int(data["httpPort"]), home)
    except (ValueError, KeyError, TypeError):
        state.unlink(missing_ok=True)
        return None
    if _pid_alive(info.pid) and _port_open(info.bolt_port):
        return info
    if not _pid_alive(info.pid):
        state.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _locked(home: Path):
    home.mkdir(parents=True, exist_ok=True)
    with open(_paths(home)["lock"], "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start_server(home: Path, heap: str | None = None, quiet: bool = False) -> tuple[ServerInfo, bool]:
    """Start the embedded server for ``home`` unless one runs; returns (info, started_now)."""
    with _locked(home):
        info = server_status(home)
        if info is not None:
            return info, False
        paths = _paths(home)
        read_password(home, create=True)
        paths["log"].mkdir(parents=True, exist_ok=True)
        paths["state"].unlink(missing_ok=True)
        bolt, http = _free_port(), _free_port()
        while http == bolt:
            http = _free_port()
        cmd = [sys.executable, "-m", "atlas.server", "--home", str(home), "--bolt-port", str(bolt), "--http-port", str(http)]
        if heap or os.environ.get("ATLAS_DB_HEAP"):
            cmd += ["--heap", heap or os.environ["ATLAS_DB_HEAP"]]
        if not quiet:
            print(f"atlas: starting the embedded database in {home} ...", file=sys.stderr)
        with open(paths["log"] / "server.out", "ab") as out:
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
            time.sleep(0.2)
        proc.kill()
        raise StoreUnavailable(f"the embedded database did not start within {START_TIMEOUT_S:.0f} s; see {paths['log'] / 'server.out'}")


def ensure_server(home: Path, quiet: bool = False) -> ServerInfo:
    """A running server for ``home``, started on demand (and said so on stderr)."""
    info = server_status(home)
    if info is not None:
        return info
    return start_server(home, quiet=quiet)[0]


def stop_server(home: Path, timeout: float = 30.0) -> bool:
    """Stop the server of ``home``; returns False when none was running."""
    with _locked(home):
        info = server_status(home)
        if info is None:
            return False
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(info.pid):
            time.sleep(0.1)
        if _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
        _paths(home)["state"].unlink(missing_ok=True)
        return True


def _serve(home: Path, bolt_port: int, http_port: int, heap: str) -> None:
    """Daemon body: run ArcadeDB until SIGTERM. Writes the state file once Bolt listens."""
    import arcadedb_embedded as adb  # heavy (starts a JVM): only in the daemon

    paths = _paths(home)
    root = paths["root"]
    root.mkdir(parents=True, exist_ok=True)
    server = adb.ArcadeDBServer(
        root_path=str(root / "databases"),
        root_password=read_password(home),
        config={
            "host": HOST,
            "http_port": http_port,
            "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt_port": bolt_port,
            "server_rootPath": str(root),
            "server_databaseDirectory": str(root / "databases"),
        },
        jvm_kwargs={"heap_size": heap},
    )
    server.start()
    stop = {"now": False}

    def on_term(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        if not (root / "databases" / EMBEDDED_DATABASE).exists():
            server.create_database(EMBEDDED_DATABASE)
        tmp = paths["state"].with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "boltPort": bolt_port, "httpPort": http_port}))
        os.replace(tmp, paths["state"])
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            if paths["state"].exists() and json.loads(paths["state"].read_text()).get("pid") == os.getpid():
                paths["state"].unlink()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m atlas.server", description="Run the embedded ArcadeDB server (daemon).")
    p.add_argument("--home", required=True)
    p.add_argument("--bolt-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--heap", default="2g")
    a = p.parse_args(argv)
    _serve(Path(a.home), a.bolt_port, a.http_port, a.heap)


if __name__ == "__main__":
    main()
