"""The exported page in a real headless browser: it loads offline, draws every node, logs no errors.

Needs Debian's ``chromium`` (``.ci/run`` installs it when missing). Without it this test fails and
says so: it is not optional.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from atlas.config import StoreSettings
from atlas.store import Store
from ingest.jobs import IngestConfig, run_ingest
from queries.export import select_graph, to_html

_PROBE_HEAD = """<script>
window.__atlasErrors = [];
window.addEventListener('error', function (e) { window.__atlasErrors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__atlasErrors.push(Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); }; })();
</script>"""
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
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
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
    probed.write_text(text.replace("<head>", "<head>" + _PROBE_HEAD, 1).replace("</body>", _PROBE_TAIL + "</body>", 1))
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
