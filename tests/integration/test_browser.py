"""The exported page in a real headless browser: it loads offline, draws every node, logs no errors.

Needs Debian's ``chromium`` (``.ci/run`` installs it when missing). Without it this test fails and
says so: it is not optional.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from atlas.config import StoreSettings
from atlas.store import Store
from bench.browser import PROBE_HEAD, chromium
from ingest.jobs.run import IngestConfig, run_ingest
from queries.export import select_graph, to_html

_PROBE_TAIL = """<script>
window.addEventListener('load', function () {
  var drawn = (typeof network !== 'undefined' && network) ? Object.keys(network.getPositions()) : [];
  var canvas = document.querySelector('canvas');
  var out = document.createElement('pre');
  out.id = 'atlas-probe';
  out.textContent = JSON.stringify({drawn: drawn, errors: window.__atlasErrors,
    canvas: canvas ? [canvas.width, canvas.height] : null});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    path = chromium()
    if path:
        return path
    pytest.fail("no headless browser found: install Debian's chromium (`apt-get install chromium`; .ci/run does this)")


def test_exported_page_draws_every_node_offline(store: Store, embedded: StoreSettings, tmp_path: Path) -> None:
    browser = _chromium()
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4), embedded.home, run_id="browser", progress=False)
    graph = select_graph(store, "browser")
    page = to_html(graph, tmp_path / "page.html")
    text = page.read_text()
    assert not re.search(r"<(link|script)\b[^>]*(href|src)=", text)
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", _PROBE_TAIL + "</body>", 1))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'<pre id="atlas-probe">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert match, f"the page did not finish loading: {proc.stderr[-500:]}"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["errors"] == []
    assert sorted(result["drawn"]) == sorted(graph.nodes)
    assert result["canvas"] and result["canvas"][0] > 0 and result["canvas"][1] > 0



def test_large_page_fits_every_node_and_filters_offline(store: Store, embedded: StoreSettings, tmp_path: Path) -> None:
    """A 60k-edge run's top edges spanning 200+ components: every node in view on load, labels on
    hover only, and the layer, kind, |score| filters and the id search work, with no script error."""
    from bench.browser import probe_page
    from bench.synthetic import write_synthetic_run

    browser = _chromium()
    write_synthetic_run(store, 60_000, "browser-large")  # 4 layers x 50 heads
    graph = None
    for top in (600, 1200, 2400, 4800, 9600):
        graph = select_graph(store, "browser-large", top=top)
        if graph.number_of_nodes() >= 200:
            break
    assert graph is not None and graph.number_of_nodes() >= 200
    page = to_html(graph, tmp_path / "large.html")
    assert not re.search(r"<(link|script)\b[^>]*(href|src)=", page.read_text())
    out = probe_page(page, tmp_path, search="L3.H1", browser=browser)
    assert out["errors"] == []
    assert out["n"] == graph.number_of_nodes()
    assert out["outside"] == []  # every drawn node inside the canvas
    assert out["labelled"] == 0 and out["titled"] == out["n"]  # no labels to overlap: ids on hover
    assert out["layersShown"] and set(out["layersShown"]) <= {-1, 0}
    assert 0 < out["edgesShownLayer0"] < graph.number_of_edges()
    assert len(out["edgesAboveCut"]) >= 10 and all(out["edgesAboveCut"])
    assert out["kindsShown"] and "Head" not in out["kindsShown"]
    want = sorted(n for n in graph.nodes if "l3.h1" in n.lower())
    assert want and sorted(out["found"]) == want
