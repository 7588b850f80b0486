"""Open an exported page in headless Chromium and report what it drew: every node in view, labels,
the filters and the search at work, script errors. Used by the browser test and by ``bench scale``
(on the 1M-edge run's exported top edges). Needs Debian's ``chromium``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

PROBE_HEAD = """<script>
window.__atlasErrors = [];
window.addEventListener('error', function (e) { window.__atlasErrors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__atlasErrors.push(Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); }; })();
</script>"""
PROBE = """<script>
window.addEventListener('load', function () {
  var ids = nodes.getIds(), pos = network.getPositions(), canvas = document.querySelector('canvas');
  var w = canvas.clientWidth, h = canvas.clientHeight;
  var outside = ids.filter(function (id) { var d = network.canvasToDOM(pos[id]); return d.x < 0 || d.y < 0 || d.x > w || d.y > h; });
  var labelled = nodes.get().filter(function (n) { return String(n.label || '').trim() !== ''; }).length;
  var out = {n: ids.length, outside: outside, labelled: labelled, titled: nodes.get().filter(function (n) { return n.title; }).length};
  document.getElementById('atlas-layer-max').value = 0; atlasApply();
  out.layersShown = nodes.get().filter(function (n) { return !n.hidden; }).map(function (n) { return n.atlasLayer; });
  out.edgesShownLayer0 = edges.get().filter(function (e) { return !e.hidden; }).length;
  document.getElementById('atlas-reset').click();
  var cut = edges.get().map(function (e) { return e.atlasAbs; }).sort(function (a, b) { return b - a; })[9];
  document.getElementById('atlas-min-score').value = cut; atlasApply();
  out.edgesAboveCut = edges.get().filter(function (e) { return !e.hidden; }).map(function (e) { return e.atlasAbs >= cut; });
  document.getElementById('atlas-reset').click();
  var kindBox = document.querySelector('.atlas-kind[value="Head"]'); kindBox.checked = false; atlasApply();
  out.kindsShown = nodes.get().filter(function (n) { return !n.hidden; }).map(function (n) { return n.atlasKind; });
  document.getElementById('atlas-reset').click();
  document.getElementById('atlas-search').value = 'L3.H1'; atlasSearch();
  out.found = network.getSelectedNodes();
  out.count = document.getElementById('atlas-count').textContent;
  out.errors = window.__atlasErrors;
  var pre = document.createElement('pre'); pre.id = 'atlas-probe'; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    """The headless browser's path, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def probe_page(page: Path, workdir: Path, search: str = "L3.H1", browser: str | None = None) -> dict[str, Any]:
    """Load ``page`` (with probes added, in a copy under ``workdir``) offline and return the probe's
    findings: ``n`` nodes, ``outside`` (ids drawn outside the canvas), ``labelled``, ``titled``,
    what the layer / |score| / kind filters left shown, ``found`` (ids the search selected), ``errors``."""
    browser = browser or chromium()
    if browser is None:
        raise RuntimeError("no headless browser found: install Debian's chromium (apt-get install chromium)")
    text = page.read_text(encoding="utf-8")
    probed = workdir / f"probed-{page.name}"
    probe = PROBE.replace("'L3.H1'", json.dumps(search).replace('"', "'"))
    probed.write_text(text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", probe + "</body>", 1), encoding="utf-8")
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
         f"--user-data-dir={workdir / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    match = re.search(r'<pre id="atlas-probe">(.*?)</pre>', proc.stdout, re.DOTALL)
    if not match:
        raise RuntimeError(f"the page did not finish loading: {proc.stderr[-500:]}")
    return dict(json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&")))
