"""Node-link JSON read back by the oldest networkx the atlas allows (3.2, which names the edge list
``links``) and by the installed one (3.6 names it ``edges``): the file carries both. The old reader
runs in a throwaway virtual environment with networkx 3.2.1 from the package registry."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import networkx as nx

from queries.export import to_json
from queries.graph import edges_to_graph

READ = """import json, sys, networkx as nx
g = nx.node_link_graph(json.load(open(sys.argv[1])))
print(json.dumps({"version": nx.__version__, "nodes": g.number_of_nodes(), "edges": g.number_of_edges(),
                  "multi": g.is_multigraph(), "directed": g.is_directed(), "runId": g.graph.get("runId")}))"""


def test_node_link_json_reads_back_on_the_oldest_and_newest_networkx(tmp_path: Path) -> None:
    import pandas as pd

    pins = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "networkx>=3.2,<4" in pins  # the oldest allowed is what this test reads with
    edges = pd.DataFrame({"componentId_pre": ["m/EMBED", "m/EMBED", "m/L0.H0"], "componentId_post": ["m/L0.H0", "m/L0.H0", "m/LOGITS"],
                          "channel": ["q", "k", "in"], "score": [0.5, -0.25, 1.0]})
    graph = edges_to_graph(edges)
    graph.graph.update({"runId": "r1", "modelId": "m"})
    path = to_json(graph, tmp_path / "g.json")
    data = json.loads(path.read_text())
    assert data["edges"] == data["links"] and len(data["edges"]) == 3
    back = nx.node_link_graph(data)
    assert back.number_of_edges() == 3 and back.graph["runId"] == "r1"

    venv = tmp_path / "nx32"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "networkx==3.2.1"], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-1500:]
    old = subprocess.run([str(venv / "bin" / "python"), "-c", READ, str(path)], capture_output=True, text=True, timeout=120)
    assert old.returncode == 0, old.stderr[-1500:]
    read = json.loads(old.stdout)
    assert read == {"version": "3.2.1", "nodes": 3, "edges": 3, "multi": True, "directed": True, "runId": "r1"}
