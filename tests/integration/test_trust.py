"""Trust, second pass: what an attacker and a clumsy user found after the first battery, each case
against the real embedded server and the real command line.

- ``--write`` does not open the atlas's own schema, and other schema commands and ``IN
  TRANSACTIONS`` need ``--allow-schema`` as well;
- an empty ``--run-id`` is refused while parsing;
- ``atlas runs`` tells an interrupted run from one being written, and analyses of a run that is not
  complete warn;
- ``atlas runs --delete`` asks, deletes through the run's life cycle, and deleting twice changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main
from ingest.jobs.run import IngestConfig, run_ingest

pytestmark = pytest.mark.slow


def _atlas(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    try:
        code = main([*argv, "--home", str(home)])
    except SystemExit as exc:  # argparse's refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _schema(store: Store) -> list[str]:
    return sorted(cx.fetch_schema(store).astype(str).agg("|".join, axis=1))


def test_write_does_not_open_the_atlas_schema(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    cx.ensure_schema(store)
    before = _schema(store)
    own = ["DROP CONSTRAINT run_id", "DROP CONSTRAINT `component_id` IF EXISTS", "DROP INDEX attribution_run",
           "CREATE CONSTRAINT sneaky IF NOT EXISTS FOR (n:Run) REQUIRE n.runId IS UNIQUE"]
    for statement in own:  # never, not even with both flags
        code, _, err = _atlas(capsys, embedded.home, "query", statement, "--write", "--allow-schema")
        assert code == 2 and err.count("\n") == 1 and "the atlas's own constraints and indexes" in err, (statement, err)
    for statement in ("CREATE INDEX i1 IF NOT EXISTS FOR (n:Run) ON (n.task)", "CALL { CREATE (:Evil) } IN TRANSACTIONS",
                      "CREATE CONSTRAINT c1 IF NOT EXISTS FOR (n:Model) REQUIRE n.name IS UNIQUE"):
        code, _, err = _atlas(capsys, embedded.home, "query", statement, "--write")
        assert code == 2 and "--allow-schema" in err and err.count("\n") == 1, (statement, err)
    assert _schema(store) == before and store.read("MATCH (n:Evil) RETURN count(n) AS n")["n"].iloc[0] == 0
    # an index of the user's own, asked for with both flags, is made (and dropped the same way)
    code, _, err = _atlas(capsys, embedded.home, "query", "CREATE INDEX i1 IF NOT EXISTS FOR (n:Run) ON (n.task)", "--write", "--allow-schema")
    assert code == 0, err
    assert any("i1" in row for row in _schema(store))
    code, _, err = _atlas(capsys, embedded.home, "query", "DROP INDEX i1 IF EXISTS", "--write", "--allow-schema")
    assert code == 0, err
    assert _schema(store) == before
    code, _, err = _atlas(capsys, embedded.home, "query", "MATCH (n) RETURN count(n) AS n", "--allow-schema")
    assert code == 2 and "--allow-schema goes with --write" in err


def test_an_empty_run_id_is_refused_while_parsing(embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("", "   ", " padded"):
        code, _, err = _atlas(capsys, embedded.home, "ingest", "--model", "induction-2l", "--run-id", bad)
        assert code == 2 and err.count("\n") == 1 and "--run-id" in err, (bad, err)


def test_runs_tell_interrupted_from_writing_and_analyses_warn(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import socket
    import subprocess
    import sys

    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4), embedded.home, run_id="trust-base", progress=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for run_id, pid in (("trust-dead", gone.pid), ("trust-live", os.getpid())):
        store.run("MATCH (r:Run {runId: 'trust-base'}) WITH r MATCH (m:Model {modelId: r.modelId}) "
                  "CREATE (x:Run {runId: $id, modelId: r.modelId, status: 'writing', writerToken: 'tok', writerPid: $pid, "
                  "writerHost: $host, writerSince: 1.0, createdAt: r.createdAt})-[:OF_MODEL]->(m)",
                  {"id": run_id, "pid": pid, "host": socket.gethostname()}, write=True)
    code, out, _ = _atlas(capsys, embedded.home, "runs", "--json")
    status = {r["runId"]: r["status"] for r in json.loads(out)}
    assert status["trust-dead"] == "interrupted" and status["trust-live"] == "writing" and status["trust-base"] == "complete"
    code, _, err = _atlas(capsys, embedded.home, "hierarchy", "--run", "trust-dead")
    assert "warning: run trust-dead is writing, not complete" in err
    code, _, err = _atlas(capsys, embedded.home, "hierarchy", "--run", "trust-base")
    assert "warning" not in err

    # deleting a run a live process writes is refused; an interrupted one is deleted
    code, _, err = _atlas(capsys, embedded.home, "runs", "--delete", "trust-live", "--yes")
    assert code == 2 and "being written by process" in err
    code, out, _ = _atlas(capsys, embedded.home, "runs", "--delete", "trust-dead", "--yes")
    assert code == 0 and cx.fetch_run(store, "trust-dead") is None


def test_delete_a_run_asks_and_is_idempotent(store: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4), embedded.home, run_id="trust-del", progress=False)
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4, seed=3), embedded.home, run_id="trust-keep", progress=False)
    edges = store.read("MATCH ()-[e:ATTRIBUTION {runId: 'trust-del'}]->() RETURN count(e) AS n")["n"].iloc[0]
    components = store.read("MATCH (c:Component {modelId: 'induction-2l'}) RETURN count(c) AS n")["n"].iloc[0]
    assert edges > 0
    code, _, err = _atlas(capsys, embedded.home, "runs", "--delete", "trust-del")  # stdin is not a terminal: no silent delete
    assert code == 2 and "--yes" in err and cx.fetch_run(store, "trust-del") is not None
    code, out, _ = _atlas(capsys, embedded.home, "runs", "--delete", "trust-del", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"runId": "trust-del", "status": "deleted", "nEdges": int(edges)}
    assert cx.fetch_run(store, "trust-del") is None
    assert store.read("MATCH ()-[e {runId: 'trust-del'}]->() RETURN count(e) AS n")["n"].iloc[0] == 0
    assert store.read("MATCH (c:EdgeColumns) WHERE c.columnsKey STARTS WITH 'trust-del|' RETURN count(c) AS n")["n"].iloc[0] == 0
    assert store.read("MATCH (c:Component {modelId: 'induction-2l'}) RETURN count(c) AS n")["n"].iloc[0] == components
    assert cx.fetch_run(store, "trust-keep") is not None and cx.fetch_run(store, "trust-keep").complete
    code, out, _ = _atlas(capsys, embedded.home, "runs", "--delete", "trust-del", "--yes")
    assert code == 0 and "nothing to delete" in out


def test_the_home_a_symlink_a_readable_password_and_a_missing_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A symlinked home is refused (resolving it would trust wherever it points); ``atlas db stop``
    and ``status`` on a home that does not exist say so and create nothing; a password file others
    may read is made private, with a warning."""
    import os
    import stat

    from atlas.config import atlas_home, check_private_file
    from atlas.errors import ConfigError

    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link"):
        atlas_home(str(link))
    code, _, err = _atlas(capsys, link, "runs")
    assert code == 2 and "symbolic link" in err and err.count("\n") == 1
    missing = tmp_path / "does-not-exist"
    for action in ("stop", "status"):
        code, out, _ = _atlas(capsys, missing, "db", action)
        assert "not running" in out and not missing.exists(), action
    code, out, err = _atlas(capsys, missing, "runs", "--json")  # answered at once: no server started, no home made
    assert code == 0 and json.loads(out) == [] and "no database" in err and not missing.exists()
    secret = real / "password"
    secret.write_text("hunter2")
    os.chmod(secret, 0o644)
    assert check_private_file(secret, "password file", secret=True)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and "was readable by other users" in capsys.readouterr().err


@pytest.mark.embedded_only
def test_a_planted_state_file_is_not_followed(tmp_path: Path, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """``server.json`` naming another process (pid 1, another home's server port) is not trusted with
    the home's passwords: the home's own server is found by its command line, used, and stopped by
    ``atlas db stop``, which returns once it has exited."""
    from atlas.server import _paths, pid_alive, server_status, start_server, stop_server

    home = tmp_path / "home"
    info, started = start_server(home, quiet=True)
    try:
        other = server_status(embedded.home)  # the session's server: a real Bolt port that is not this home's
        assert started and other is not None
        state = _paths(home)["state"]
        state.write_text(json.dumps({"pid": 1, "boltPort": other.bolt_port, "httpPort": other.http_port}))
        found = server_status(home)
        assert found is not None and found.pid == info.pid and found.bolt_port == info.bolt_port
        assert "is not this home's database server" in capsys.readouterr().err
        state.write_text(json.dumps({"pid": 1, "boltPort": other.bolt_port, "httpPort": other.http_port}))
        code, out, err = _atlas(capsys, home, "runs", "--json")
        assert code == 0 and json.loads(out) == [], err  # this home's (empty) database, not the session's
        state.unlink()  # lost altogether: still found, and stopped
        code, out, _ = _atlas(capsys, home, "db", "stop")
        assert code == 0 and out.strip() == "stopped" and not pid_alive(info.pid)
    finally:
        if pid_alive(info.pid):
            stop_server(home)
