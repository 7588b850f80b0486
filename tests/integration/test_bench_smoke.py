"""The benchmarks run (tiny sizes) so they cannot rot; the figures themselves come from ``make bench``."""

from __future__ import annotations

import subprocess
import sys

from atlas.config import StoreSettings


def test_bench_smoke(embedded: StoreSettings) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--home", str(embedded.home)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for title in ("attribution cost", "loading into the embedded store", "pathways", "atlas demo end to end"):
        assert f"## {title}" in proc.stdout
    assert "EAP-IG / (2f + 5fb)" in proc.stdout and "atlas / native" in proc.stdout
