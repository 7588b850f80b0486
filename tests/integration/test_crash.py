"""Crashes and concurrency: killed ingests, a killed server, two writers of one run, readers alongside.

Every ingest here is a real ``atlas`` process against a real embedded server; the checks are on
what the database holds afterwards.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings, resolve_store_settings
from atlas.server import server_status, start_server, stop_server
from atlas.store import Store

pytestmark = pytest.mark.slow

INGEST = ["ingest", "--model", "induction-2l", "--method", "eap", "--prompts", "8", "--quiet", "--json"]


def _atlas(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "atlas_cli", *args, "--home", str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _edges(store: Store, run_id: str) -> pd.DataFrame:
    df = cx.fetch_edge_columns(store, run_id)
    return df.sort_values(["componentId_pre", "componentId_post", "channel"]).reset_index(drop=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _status(store: Store, run_id: str) -> tuple[str | None, int]:
    df = store.read("MATCH (r:Run {runId: $r}) OPTIONAL MATCH ()-[e:ATTRIBUTION {runId: $r}]->() RETURN r.status AS s, count(e) AS n",
                    {"r": run_id})
    return (df["s"].iloc[0], int(df["n"].iloc[0])) if len(df) else (None, 0)


def test_killed_ingests_then_a_rerun_equal_an_uninterrupted_run(store: Store, embedded: StoreSettings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    home = embedded.home
    monkeypatch.setenv("ATLAS_EDGE_BATCH", "1")  # 81 transactions per run: room to be killed between them (a faster ingest left too little with 21)
    code, out, err = _finish(_atlas(home, *INGEST, "--run-id", "whole"))
    assert code == 0, err
    rng = random.Random(7)
    seen = []
    for i in range(8):
        proc = _atlas(home, *INGEST, "--run-id", "crashy")
        if i % 2:  # at a random moment (loading, computing or writing)
            time.sleep(rng.uniform(0.5, 6.0))
        else:  # as soon as the run is being written, after a random number of its transactions
            want = rng.randint(0, 60)
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                status, n = _status(store, "crashy")
                if status == "writing" and n >= want:
                    break
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        seen.append(_status(store, "crashy"))
        if seen[-1][0] == "complete":  # it finished before the kill: the next one starts from nothing again
            cx.delete_run(store, "crashy")
    # some kills left a run half-written: status 'writing' with part of its edges
    assert any(s == "writing" and 0 < n < 81 for s, n in seen), seen
    code, out, err = _finish(_atlas(home, *INGEST, "--run-id", "crashy"))
    assert code == 0, err
    assert json.loads(out)["status"] in ("written", "unchanged")
    whole, crashy = cx.require_run(store, "whole"), cx.require_run(store, "crashy")
    assert crashy.complete and crashy.n_edges == whole.n_edges == 81
    pd.testing.assert_frame_equal(_edges(store, "crashy"), _edges(store, "whole"))
    # components are shared, never duplicated by the reruns
    ids = store.read("MATCH (c:Component {modelId: 'induction-2l'}) RETURN c.componentId AS id")["id"]
    assert len(ids) == len(set(ids)) == 10
    assert "writerToken" not in crashy.details  # released when complete


def test_a_live_writer_holds_its_run_and_a_dead_one_does_not(store: Store) -> None:
    """The claim itself: refused while the writer process lives, taken over once it is gone, and of
    two claims at the same moment exactly one wins."""
    import threading

    from atlas.errors import RunConflict
    from atlas.records import RunRecord

    cx.ensure_schema(store)  # as every writer does first: the unique runId constraint
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cx.begin_run(store, RunRecord(run_id="held", model_id="induction-2l"))
        store.run("MATCH (r:Run {runId: 'held'}) SET r.writerPid = $pid", {"pid": writer.pid}, write=True)
        with pytest.raises(RunConflict, match=f"being written by process {writer.pid}"):
            cx.begin_run(store, RunRecord(run_id="held", model_id="induction-2l"))
    finally:
        writer.kill()
        writer.wait()
    cx.begin_run(store, RunRecord(run_id="held", model_id="induction-2l"))  # its writer is dead: taken over

    def race(run_id: str) -> list[str]:
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def claim() -> None:
            with Store.connect(store.settings, quiet=True) as s:
                barrier.wait()
                try:
                    cx.begin_run(s, RunRecord(run_id=run_id, model_id="induction-2l"))
                    outcomes.append("won")
                except RunConflict:
                    outcomes.append("refused")

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(outcomes)

    for attempt in range(3):
        assert race(f"raced-{attempt}") == ["refused", "won"]  # a new run
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        store.run("MATCH (r:Run {runId: $r}) SET r.writerPid = $pid", {"r": f"raced-{attempt}", "pid": int(gone.stdout)}, write=True)
        assert race(f"raced-{attempt}") == ["refused", "won"]  # a dead writer's run, taken over once


def test_same_run_started_twice_at_once(store: Store, embedded: StoreSettings) -> None:
    procs = [_atlas(embedded.home, *INGEST, "--run-id", "twin") for _ in range(2)]
    results = [_finish(p) for p in procs]
    written = [json.loads(out) for code, out, _ in results if code == 0 and json.loads(out)["status"] == "written"]
    assert len(written) == 1, results
    other = next(r for r in results if not (r[0] == 0 and json.loads(r[1])["status"] == "written"))
    code, out, err = other
    # the loser says so: refused while the winner writes, or found the run complete
    assert (code == 2 and err.count("\n") == 1 and ("being written" in err or "another process is writing run 'twin'" in err
                                                     or "completed by another" in err)) \
        or (code == 0 and json.loads(out)["status"] == "unchanged"), other
    assert "ConstraintValidation" not in err and "Neo." not in err  # said plainly, not as the database's error
    run = cx.require_run(store, "twin")
    assert run.complete and len(cx.fetch_edge_columns(store, "twin")) == 81  # written once, no duplicates


def test_two_ingests_and_a_reader_at_once(store: Store, embedded: StoreSettings) -> None:
    writers = [_atlas(embedded.home, *INGEST, "--run-id", f"par-{i}") for i in range(2)]
    readers = [_atlas(embedded.home, "query", "MATCH (r:Run) RETURN count(r) AS n", "--json") for _ in range(3)]
    for proc in writers + readers:
        code, out, err = _finish(proc)
        assert code == 0, err
        json.loads(out)
    for i in range(2):
        assert cx.require_run(store, f"par-{i}").complete and len(cx.fetch_edge_columns(store, f"par-{i}")) == 81


@pytest.mark.embedded_only
def test_killed_server_is_restarted_and_the_rerun_completes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    start_server(home, quiet=True)
    try:
        rng = random.Random(3)
        for attempt in range(2):
            proc = _atlas(home, *INGEST, "--run-id", "survivor")
            time.sleep(rng.uniform(1.0, 3.0))
            info = server_status(home)
            assert info is not None
            os.kill(info.pid, signal.SIGKILL)  # the database dies, wherever the ingest is
            code, _, err = _finish(proc)
            assert code in (0, 2) and "Traceback" not in err, err
            # the next command finds the dead server, starts a new one, and the rerun completes
            code, out, err = _finish(_atlas(home, *INGEST, "--run-id", "survivor"))
            assert code == 0, err
            with Store.connect(resolve_store_settings(home=home), quiet=True) as s:
                run = cx.require_run(s, "survivor")
                assert run.complete and len(cx.fetch_edge_columns(s, "survivor")) == 81, attempt
    finally:
        stop_server(home)
