"""The benchmarks run (tiny sizes) so they cannot rot; the figures themselves come from ``make bench``.

The peer benchmark needs auto-circuit in its own virtualenv, which it installs from PyPI on first use:
this test needs the package registry (as ``make test`` itself does) and fails, loudly, without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from atlas.config import StoreSettings


@pytest.mark.embedded_only  # benchmarks the embedded store against ArcadeDB's in-process path
def test_bench_smoke(embedded: StoreSettings) -> None:
    # the peer row installs auto-circuit into .bench-venvs/ on first use (about a minute) and fails
    # unless its EAP and ours agree
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--home", str(embedded.home)],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for title in ("attribution cost", "EAP and EAP-IG(5) on the GPT-2-small shape by prompts", "neuron-level EAP",
                  "peer: auto-circuit EAP vs atlas EAP", "loading into the embedded store", "pathways",
                  "atlas demo end to end", "precision: bfloat16 and float16 scores against float32", "start-up"):
        assert f"## {title}" in proc.stdout
    for column in ("EAP-IG / (2f + 5fb)", "ratio to bare (min/med/max)", "GEMM limit s (min/med/max)", "atlas, bulk socket (edges/s)",
                   "atlas / engine", "atlas over Bolt (edges/s)", "GraphBatch, no properties", "atlas db stop (returns once the server has exited"):
        assert column in proc.stdout, column
