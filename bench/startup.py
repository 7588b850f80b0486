"""Start-up costs a person at a shell waits for, each in a fresh process, min / median / max over the
repetitions: what a model-loading command imports (``python -X importtime``, by package), the
embedded server's start, a read-only command on a home whose server is down (it starts it) and up,
and ``atlas db stop`` (which returns once the server has exited)."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# what the model-loading commands import, as the CLI does on its way to computing edges
_MODEL_IMPORTS = "import ingest.jobs.run, ingest.edges.methods, transformer_lens"
_OURS = ("atlas", "atlas_cli", "ingest", "queries", "explorer")


def import_seconds() -> dict[str, float]:
    """Seconds of a model-loading command's imports by top-level package (self time summed), from
    ``python -X importtime`` in a fresh interpreter; ``total`` is the wall time of that interpreter."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", _MODEL_IMPORTS], capture_output=True, text=True, check=True)
    total = time.perf_counter() - started
    by_package: dict[str, float] = {}
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            top = m.group(2).split(".")[0]
            by_package[top] = by_package.get(top, 0.0) + int(m.group(1)) / 1e6
    return {"total": total, **by_package}


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def bench_startup(smoke: bool, repeats: int = 3) -> list[dict[str, Any]]:
    from atlas.server import pid_alive, server_status

    runs = 1 if smoke else repeats
    rows: list[dict[str, Any]] = []
    imports = [import_seconds() for _ in range(runs)]
    keys = sorted({k for i in imports for k in i} - {"total"}, key=lambda k: -statistics.median(i.get(k, 0.0) for i in imports))
    rows.append({"what": "a model-loading command's imports, wall (fresh interpreter)", "seconds (min/med/max)": _spread([i["total"] for i in imports])})
    ours = [sum(v for k, v in i.items() if k in _OURS) for i in imports]
    rows.append({"what": "  of it, the atlas's own modules", "seconds (min/med/max)": _spread(ours)})
    for key in [k for k in keys if k not in _OURS][:8]:
        rows.append({"what": f"  of it, {key}", "seconds (min/med/max)": _spread([i.get(key, 0.0) for i in imports])})
    atlas = [sys.executable, "-m", "atlas_cli"]
    with tempfile.TemporaryDirectory(prefix="atlas-startup-") as tmp:
        home = Path(tmp) / "home"
        h = ["--home", str(home)]
        subprocess.run([*atlas, "db", "start", *h], capture_output=True, check=True)  # makes the database
        subprocess.run([*atlas, "db", "stop", *h], capture_output=True, check=True)
        start, cold, warm, stop = [], [], [], []
        for _ in range(runs):
            start.append(_wall([*atlas, "db", "start", *h]))
            info = server_status(home)
            assert info is not None
            stop.append(_wall([*atlas, "db", "stop", *h]))
            assert not pid_alive(info.pid), "atlas db stop returned before the server exited"
            cold.append(_wall([*atlas, "runs", *h]))  # starts the server
            warm.append(_wall([*atlas, "runs", *h]))
            subprocess.run([*atlas, "db", "stop", *h], capture_output=True, check=True)
    rows += [{"what": "atlas db start (database exists, server down)", "seconds (min/med/max)": _spread(start)},
             {"what": "atlas runs, server down (starts it)", "seconds (min/med/max)": _spread(cold)},
             {"what": "atlas runs, server up", "seconds (min/med/max)": _spread(warm)},
             {"what": "atlas db stop (returns once the server has exited: checked)", "seconds (min/med/max)": _spread(stop)}]
    return rows
