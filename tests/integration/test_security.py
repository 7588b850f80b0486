"""Read-only really is: each of the three walls on its own, against the real embedded server.

Every hostile statement must leave the database unchanged: node and relationship counts, the
schema the server reports, and the server's users and groups files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import neo4j
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings, atlas_home, ensure_home
from atlas.errors import ConfigError, ReadOnlyViolation
from atlas.server import READER_USER, read_password, server_status, start_server, stop_server
from atlas.store import Store
from atlas_cli import main
from tests.conftest import TEST_URI

# Each statement was seen changing the database through the old rolled-back "read-only" query.
HOSTILE = [
    "CREATE USER evil SET PASSWORD 'evilpass1' CHANGE NOT REQUIRED",
    "ALTER USER root SET PASSWORD 'x12345678'",
    "DROP USER root",
    "DROP INDEX attribution_run",
    "DROP CONSTRAINT run_id",
    "CREATE INDEX foo IF NOT EXISTS FOR (n:Run) ON (n.task)",
    "CREATE CONSTRAINT bar IF NOT EXISTS FOR (n:Model) REQUIRE n.name IS UNIQUE",
    "CALL { CREATE (:X {x: 33}) } IN TRANSACTIONS",
    "CREATE (:X {x: 1})",
    "MATCH (r:Run) SET r.status = 'tampered'",
    "MATCH (r:Run) DETACH DELETE r",
]
FILE_READ = "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row LIMIT 2"


@pytest.fixture(scope="module")
def seeded(store: Store) -> Store:
    cx.ensure_schema(store)
    store.run("MERGE (r:Run {runId: 'sec-1'}) SET r.status = 'complete'", write=True)
    return store


def _fingerprint(store: Store, home: Path) -> dict[str, Any]:
    config = home / "arcadedb" / "config"
    seen = {
        **cx.count_graph(store),
        "schema": sorted(json.dumps(r, sort_keys=True, default=str) for r in cx.fetch_schema(store).to_dict("records")),
        "runs": store.read("MATCH (r:Run) RETURN r.runId AS id, r.status AS status ORDER BY id").to_dict("records"),
    }
    if TEST_URI is not None:  # another server's users live where this test cannot read them
        return seen
    return {**seen, "users": hashlib.sha256((config / "server-users.jsonl").read_bytes()).hexdigest(),
            "groups": hashlib.sha256((config / "server-groups.json").read_bytes()).hexdigest()}


def _reader_driver(home: Path) -> Any:
    info = server_status(home)
    assert info is not None
    return neo4j.GraphDatabase.driver(info.uri, auth=(READER_USER, read_password(home, user=READER_USER)))


@pytest.mark.embedded_only
@pytest.mark.parametrize("cypher", [*HOSTILE, FILE_READ])
def test_server_wall_alone_refuses_as_reader(seeded: Store, embedded: StoreSettings, cypher: str) -> None:
    """Bypass the atlas's own checks: the read-only user sends the statement and commits."""
    before = _fingerprint(seeded, embedded.home)
    with _reader_driver(embedded.home) as driver, driver.session(database="atlas") as session:
        with pytest.raises(neo4j.exceptions.Neo4jError):
            tx = session.begin_transaction()
            try:
                tx.run(cypher).consume()
                tx.commit()
            finally:
                if not tx.closed():
                    tx.close()
    assert _fingerprint(seeded, embedded.home) == before


@pytest.mark.embedded_only
def test_reader_can_read(seeded: Store, embedded: StoreSettings) -> None:
    with _reader_driver(embedded.home) as driver:
        records = driver.execute_query("MATCH (r:Run {runId: 'sec-1'}) RETURN r.status AS s", database_="atlas").records
    assert [r["s"] for r in records] == ["complete"]


def test_root_cannot_read_files_either(seeded: Store) -> None:
    """LOAD CSV file URLs are off in the server (production mode), not only refused by the atlas."""
    with seeded._driver.session(database=seeded.database) as session, pytest.raises(neo4j.exceptions.Neo4jError):
        session.run(FILE_READ).consume()


@pytest.mark.parametrize("cypher", [*HOSTILE, FILE_READ])
def test_read_only_store_refuses_and_changes_nothing(seeded: Store, embedded: StoreSettings, cypher: str) -> None:
    before = _fingerprint(seeded, embedded.home)
    with Store.connect(embedded, quiet=True, read_only=True) as ro, pytest.raises(ReadOnlyViolation):
        ro.run(cypher)
    assert _fingerprint(seeded, embedded.home) == before


@pytest.mark.parametrize("cypher", ["CREATE (:X {x: 1})", "MATCH (r:Run) SET r.status = 'tampered'"])
def test_rollback_wall_alone(seeded: Store, embedded: StoreSettings, cypher: str) -> None:
    """As root (no server wall) a data write in a read is still rolled back and reported."""
    before = _fingerprint(seeded, embedded.home)
    with pytest.raises(ReadOnlyViolation, match="rolled back"):
        seeded.read(cypher)
    assert _fingerprint(seeded, embedded.home) == before


def test_read_only_store_refuses_writes_client_side(seeded: Store, embedded: StoreSettings) -> None:
    with Store.connect(embedded, quiet=True, read_only=True) as ro:
        with pytest.raises(ReadOnlyViolation):
            ro.run("CREATE (:X)", write=True)
        with pytest.raises(ReadOnlyViolation):
            ro.write_rows("UNWIND $rows AS r CREATE (:X {x: r})", [1, 2])


@pytest.mark.parametrize("cypher", HOSTILE[:3])
def test_user_management_refused_even_with_write(seeded: Store, embedded: StoreSettings, cypher: str) -> None:
    before = _fingerprint(seeded, embedded.home)
    with pytest.raises(ReadOnlyViolation, match="user management"):
        seeded.run(cypher, write=True)
    assert _fingerprint(seeded, embedded.home) == before


@pytest.mark.parametrize("cypher", [*HOSTILE, FILE_READ])
def test_cli_query_is_read_only(seeded: Store, embedded: StoreSettings, cypher: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = _fingerprint(seeded, embedded.home)
    code = main(["query", cypher, "--home", str(embedded.home)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert _fingerprint(seeded, embedded.home) == before


def test_cli_write_is_the_way_in(seeded: Store, embedded: StoreSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "CREATE (:Scratch {tag: 'sec'})", "--write", "--home", str(embedded.home)]) == 0
    assert seeded.read("MATCH (s:Scratch {tag: 'sec'}) RETURN count(s) AS n")["n"].iloc[0] == 1
    seeded.run("MATCH (s:Scratch {tag: 'sec'}) DELETE s", write=True)


@pytest.mark.embedded_only
def test_home_and_files_are_private(embedded: StoreSettings) -> None:
    home = embedded.home
    assert home.stat().st_mode & 0o077 == 0
    for name in ("password", "reader-password", "server.json", "server.lock"):
        assert (home / name).stat().st_mode & 0o077 == 0, name
    assert (home / "arcadedb").stat().st_mode & 0o077 == 0  # database files unreachable for others


# -- planted files: a home, password or server.json another user owns or may write ----------------
OTHER_UID = 4242


def _cli_err(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([*args, "--home", str(home)])
    return code, capsys.readouterr().err


def test_new_home_is_created_0700(tmp_path: Path) -> None:
    home = ensure_home(tmp_path / "fresh")
    assert home.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_home_writable_by_others_is_refused(tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    home.mkdir()
    os.chmod(home, mode)
    with pytest.raises(ConfigError, match="writable by other users"):
        atlas_home(home)
    code, err = _cli_err(home, capsys, "db", "status")
    assert code == 2 and err.count("\n") == 1 and "writable by other users" in err
    assert not (home / "password").exists()


def test_home_owned_by_another_user_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    os.chown(home, OTHER_UID, OTHER_UID)
    code, err = _cli_err(home, capsys, "db", "start")
    assert code == 2 and "owned by another user" in err


@pytest.mark.embedded_only
@pytest.mark.parametrize("name", ["password", "reader-password", "server.json"])
@pytest.mark.parametrize("plant", ["other-owner", "group-writable", "symlink"])
def test_planted_files_are_refused(tmp_path: Path, name: str, plant: str, capsys: pytest.CaptureFixture[str]) -> None:
    home = ensure_home(tmp_path / "h")
    target = home / name
    content = json.dumps({"pid": os.getpid(), "boltPort": 1, "httpPort": 2}) if name == "server.json" else "planted-pass"
    if plant == "symlink":
        real = tmp_path / "elsewhere"
        real.write_text(content)
        target.symlink_to(real)
    else:
        target.write_text(content)
        os.chmod(target, 0o600)
        if plant == "other-owner":
            os.chown(target, OTHER_UID, OTHER_UID)
        else:
            os.chmod(target, 0o620)
    code, err = _cli_err(home, capsys, "query", "RETURN 1")
    assert code == 2 and err.count("\n") == 1, err
    assert "refusing to trust it" in err
    assert not (home / "log" / "server.out").exists()


@pytest.mark.embedded_only
def test_fresh_server_in_fresh_home_is_hardened(tmp_path: Path) -> None:
    """A second server in a brand-new home: production mode, and the reader exists from the start."""
    home = tmp_path / "h2"
    info, started = start_server(home, quiet=True)
    try:
        assert started
        log = (home / "log" / "server.out").read_text()
        assert "production" in log
        assert (home / "log" / "server.out").stat().st_mode & 0o077 == 0
        users = [json.loads(line)["name"] for line in (home / "arcadedb" / "config" / "server-users.jsonl").read_text().splitlines() if line]
        assert sorted(users) == ["reader", "root"]
        proc = subprocess.run(
            [sys.executable, "-m", "atlas_cli", "query", "CREATE (:X)", "--home", str(home)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and "may only read" in proc.stderr
    finally:
        stop_server(home)
