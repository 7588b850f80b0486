"""Sharded ingestion on a local Ray: the sharded run equals the single-process run, is written
once with its shard plan, survives a killed worker (Ray retries it), and a killed driver leaves an
unfinished run that the rerun completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas import connectome as cx
from atlas.config import StoreSettings
from atlas.store import Store
from atlas_cli import main
from ingest.edges.shards import FAULT_ENV
from ingest.jobs.run import IngestConfig, compute_run

pytestmark = pytest.mark.slow
KEY = ["componentId_pre", "componentId_post", "channel"]


@pytest.fixture(scope="module")
def local_ray() -> object:
    """One local Ray for the module (compute_sharded uses a running Ray and leaves it running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _same(single: pd.DataFrame, sharded: pd.DataFrame, keys: list[str] = KEY, rtol: float = 1e-5) -> None:
    assert single[keys].reset_index(drop=True).equals(sharded[keys].reset_index(drop=True))  # same edges, same order
    scale = float(np.abs(single["score"]).max())
    np.testing.assert_allclose(sharded["score"].to_numpy(), single["score"].to_numpy(), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("method,extra", [("eap-ig", {"per_prompt": True}), ("eap", {"per_position": True}),
                                          ("eap-ig", {"model": "modadd-1l", "task": "default", "granularity": "neuron", "top_neurons": 4}),
                                          ("patching", {})])
def test_sharded_compute_equals_the_single_process_compute(local_ray: object, embedded: StoreSettings, method: str, extra: dict) -> None:
    config = IngestConfig(**{"model": "induction-2l", **extra}, method=method, n_prompts=7)
    single = compute_run(config, embedded.home)
    sharded = compute_run(config, embedded.home, shards=3)
    _same(single.edges, sharded.edges)
    plan = sharded.shard_plan
    assert plan is not None and plan["shards"] == 3 and plan["ray"] == "local"
    if method == "patching":  # exact patching splits its edges, the other methods their prompts
        assert plan["by"] == "edges" and sum(plan["sizes"]) == len(single.edges)
    else:
        assert plan["by"] == "prompts" and plan["sizes"] == [3, 2, 2]
    if extra.get("per_prompt"):
        got, want = np.array(sharded.edges["promptScores"].tolist()), np.array(single.edges["promptScores"].tolist())
        assert got.shape == (len(single.edges), 7)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    if extra.get("per_position"):
        assert single.positional is not None and sharded.positional is not None
        _same(single.positional, sharded.positional, [*KEY, "srcPos", "dstPos"])
    if extra.get("granularity") == "neuron":  # neurons are chosen once, on every prompt: the same graph
        assert single.nodes["componentId"].tolist() == sharded.nodes["componentId"].tolist()


def test_cli_sharded_run_is_written_once_with_its_plan_and_is_the_same_run(local_ray: object, store: Store, embedded: StoreSettings,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(embedded.home)]
    argv = ["ingest", "--model", "induction-2l", "--method", "eap-ig", "--prompts", "6", "--quiet", "--json", *home]
    assert main([*argv, "--shards", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "written"
    run = cx.require_run(store, out["runId"])
    assert run.complete and json.loads(run.details["shardPlan"])["sizes"] == [3, 3]
    single = compute_run(IngestConfig(model="induction-2l", method="eap-ig", n_prompts=6), embedded.home).edges
    stored = cx.fetch_edge_columns(store, out["runId"]).sort_values(KEY).reset_index(drop=True)
    _same(single.sort_values(KEY).reset_index(drop=True), stored)
    # the split is not part of the run's identity: without shards it is the same run, already complete
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {**out, "status": "unchanged", "nNodes": 0, "seconds": {}}
    assert len(cx.fetch_edge_columns(store, out["runId"])) == len(single)  # written once, no duplicates
    assert main(["ingest", "--model", "induction-2l", "--prompts", "4", "--shards", "5", "--run-id", "too-many", *home]) == 2
    assert "--shards 5 is more than the run's 4 prompts" in capsys.readouterr().err
    assert cx.fetch_run(store, "too-many") is None


@pytest.mark.parametrize("address,message", [("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
                                             ("nowhere", "--ray takes HOST:PORT")])
def test_an_unreachable_cluster_is_one_line_in_seconds(store: Store, embedded: StoreSettings, address: str, message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert main(["ingest", "--model", "induction-2l", "--prompts", "4", "--shards", "2", "--ray", address, "--run-id", "no-cluster",
                 "--quiet", "--home", str(embedded.home)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and time.monotonic() - t0 < 60
    assert cx.fetch_run(store, "no-cluster") is None


def test_a_killed_worker_is_retried_by_ray(local_ray: object, embedded: StoreSettings, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    config = IngestConfig(model="induction-2l", method="eap", n_prompts=6)
    sharded = compute_run(config, embedded.home, shards=2)
    assert marker.exists()  # a worker did die mid-task ...
    monkeypatch.delenv(FAULT_ENV)
    _same(compute_run(config, embedded.home).edges, sharded.edges)  # ... and its shard was computed again


def test_a_killed_driver_leaves_no_complete_run_and_the_rerun_completes_it(store: Store, embedded: StoreSettings) -> None:
    run_id = "sharded-killed"
    argv = [sys.executable, "-m", "atlas_cli", "ingest", "--model", "induction-2l", "--method", "patching", "--prompts", "8",
            "--run-id", run_id, "--quiet", "--json", "--home", str(embedded.home)]
    proc = subprocess.Popen([*argv, "--shards", "27"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # kill the driver as soon as its first shard is back
        if line.startswith("shard 1 of 27 done") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # the local Ray's agents outlive the driver by about a minute: not in CI
        os.killpg(proc.pid, signal.SIGKILL)
    run = cx.fetch_run(store, run_id)
    assert run is None or not run.complete
    again = subprocess.run([*argv, "--shards", "3"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "written"
    run = cx.require_run(store, run_id)
    assert run.complete and json.loads(run.details["shardPlan"])["by"] == "edges"
    single = compute_run(IngestConfig(model="induction-2l", method="patching", n_prompts=8), embedded.home).edges
    stored = cx.fetch_edge_columns(store, run_id).sort_values(KEY).reset_index(drop=True)
    _same(single.sort_values(KEY).reset_index(drop=True), stored, rtol=1e-9)
