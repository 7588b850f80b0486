"""The explorer (``atlas serve``): its JSON endpoints against the real embedded store, its security
(read-only user, Host check, token when exposed, one-line 4xx), and every page in real headless
Chromium (driven by Playwright through the system's Chromium; no browser is downloaded).

The browser tests save a screenshot of each page under docs/explorer/ (the docs show them), so the
pictures there are of the app as it is."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atlas.config import StoreSettings
from atlas.errors import QueryError
from atlas.store import Store
from ingest.jobs.run import IngestConfig, run_ingest

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "explorer"


@pytest.fixture(scope="module")
def runs(store: Store, embedded: StoreSettings) -> dict[str, Any]:
    """Two head-level runs of one model (EAP and EAP-IG), a neuron-level run and a large synthetic run."""
    from bench.synthetic import write_synthetic_run

    for run_id, method in (("exp-eap", "eap"), ("exp-ig", "eap-ig")):
        run_ingest(store, IngestConfig(model="induction-2l", method=method, n_prompts=4), embedded.home, run_id=run_id, progress=False)
    run_ingest(store, IngestConfig(model="induction-2l", method="eap", n_prompts=4, seed=1, per_prompt=True), embedded.home,
               run_id="exp-prompts", progress=False)
    from ingest.jobs.studies import run_lens

    run_lens(store, "induction-2l", embedded.home, n_prompts=8)
    run_ingest(store, IngestConfig(model="modadd-1l", task="default", method="eap", n_prompts=4, granularity="neuron", top_neurons=6), embedded.home,
               run_id="exp-neuron", progress=False)
    edges, nodes = write_synthetic_run(store, 400_000, "exp-large", columns=True)
    return {"large_edges": edges, "large_nodes": nodes}


@pytest.fixture(scope="module")
def client(embedded: StoreSettings, runs: dict[str, Any]) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from explorer.api import Explorer
    from explorer.app import create_app

    with Store.connect(embedded, quiet=True, read_only=True) as reader:
        test_client = TestClient(create_app(Explorer(reader), hosts=("testserver",)))
        test_client.app_state["store"] = reader
        yield test_client


def _one_line(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    return str(message)


def test_runs_overview_and_the_edge_table(client: Any, store: Store) -> None:
    runs = client.get("/api/runs").json()["runs"]
    assert {r["runId"] for r in runs} >= {"exp-eap", "exp-ig", "exp-neuron", "exp-large"}
    eap = next(r for r in runs if r["runId"] == "exp-eap")
    assert eap["method"] == "eap" and eap["metric"] == "logit" and eap["status"] == "complete" and eap["nEdges"] > 0

    over = client.get("/api/overview", params={"run": "exp-eap", "top": 20}).json()
    from queries.export import flow_matrix
    from queries.fetch import fetch_edge_columns

    edges = fetch_edge_columns(store, "exp-eap")
    flow = flow_matrix(edges)
    assert over["flow"]["rows"] == list(flow.index) and over["flow"]["cols"] == list(flow.columns)
    assert sum(map(sum, over["flow"]["share"])) == pytest.approx(1.0, abs=1e-4)  # every edge's |score| counted once
    drawn = sorted(abs(e["score"]) for e in over["graph"]["edges"])
    assert len(drawn) == 20 and drawn == sorted(edges["score"].abs().nlargest(20))
    ends = {e["source"] for e in over["graph"]["edges"]} | {e["target"] for e in over["graph"]["edges"]}
    assert {n["id"] for n in over["graph"]["nodes"]} == ends
    assert over["run"]["scale"] == pytest.approx(edges["score"].abs().max())
    blocks = over["blocks"]
    assert len(blocks["score"]) == len(blocks["nodes"]) == len(blocks["groups"])

    heads_l1 = client.get("/api/edges", params={"run": "exp-eap", "layer": "1", "kind": "Head", "channel": "v", "top": 500}).json()
    expect = edges[(edges["channel"] == "v") & (edges["componentId_pre"].str.contains("/L1.H") | edges["componentId_post"].str.contains("/L1.H"))]
    assert heads_l1["matched"] == len(expect) and all(e["channel"] == "v" for e in heads_l1["edges"])
    scores = [abs(e["score"]) for e in heads_l1["edges"]]
    assert scores == sorted(scores, reverse=True)
    band = client.get("/api/edges", params={"run": "exp-eap", "min": 0.1, "max": 1.0, "top": 2000}).json()
    assert band["matched"] == int(((edges["score"].abs() >= 0.1) & (edges["score"].abs() <= 1.0)).sum())
    assert _one_line(client.get("/api/edges", params={"run": "exp-eap", "channel": "z"}), 400).startswith("run exp-eap has no channel 'z'")
    assert "top must be an integer" in _one_line(client.get("/api/edges", params={"run": "exp-eap", "top": "many"}), 400)
    assert "known runs" in _one_line(client.get("/api/overview", params={"run": "no-such-run"}), 404)


def test_search_and_a_component_page(client: Any, store: Store) -> None:
    found = client.get("/api/search", params={"run": "exp-eap", "q": "L1.*"}).json()
    assert [c["label"] for c in found["components"]] and all(c["label"].startswith("L1.") for c in found["components"])
    assert found["matched"] == 4 and [c["strength"] for c in found["components"]] == sorted((c["strength"] for c in found["components"]), reverse=True)
    neuron = client.get("/api/search", params={"run": "exp-neuron", "q": "L0.N*"}).json()
    assert neuron["matched"] == 6 and all(c["kind"] == "Neuron" for c in neuron["components"])

    page = client.get("/api/component", params={"run": "exp-eap", "id": "L1.H0"}).json()
    assert page["component"]["id"] == "induction-2l/L1.H0" and set(page["inputs"]) == {"q", "k", "v"} and set(page["outputs"]) == {"in"}
    from queries.fetch import fetch_edge_columns

    edges = fetch_edge_columns(store, "exp-eap")
    into = edges[(edges["componentId_post"] == "induction-2l/L1.H0") & (edges["channel"] == "k")]
    assert [e["source"] for e in page["inputs"]["k"]] == list(into.loc[into["score"].abs().sort_values(ascending=False).index, "componentId_pre"])
    assert page["properties"]["inductionScore"] > 0.5  # the zoo's induction head carries its probed role
    figures = {f["property"]: f for f in page["figures"]}
    lens_runs = store.read("MATCH (r:Run {modelId: 'induction-2l', method: 'lens'}) RETURN r.runId AS id")["id"].tolist()
    lensed = [f for f in figures.values() if f["study"] == "lens"]
    assert lensed and all(f["run"] in lens_runs for f in lensed)  # each stored figure with the run it came from
    assert figures["inductionScore"]["study"] == "probe" and page["prompts"] is None
    per_prompt = client.get("/api/component", params={"run": "exp-prompts", "id": "L1.H0"}).json()
    from queries.prompts import fetch_prompt_view

    shares = fetch_prompt_view(store, "exp-prompts", component="induction-2l/L1.H0").prompts["share"].tolist()
    assert [p["share"] for p in per_prompt["prompts"]] == pytest.approx(shares) and len(shares) == 4
    assert "holds no edges (a lens study" in _one_line(client.get("/api/overview", params={"run": lens_runs[0]}), 400)
    assert "no edge at component" in _one_line(client.get("/api/component", params={"run": "exp-eap", "id": "L7.H7"}), 404)


def test_paths_compare_and_the_query_console(client: Any, store: Store) -> None:
    from queries.paths import fetch_paths

    got = client.get("/api/paths", params={"run": "exp-eap", "k": 5}).json()
    expect = fetch_paths(store, "exp-eap", top=5)
    assert [p["nodes"] for p in got["paths"]] == [list(n) for n in expect["nodes"]]
    assert [p["strength"] for p in got["paths"]] == pytest.approx(list(expect["strength"]))
    import math

    for p in got["paths"]:  # each hop's share, whose product is the path's strength
        assert len(p["shares"]) == len(p["nodes"]) - 1 and math.prod(p["shares"]) == pytest.approx(p["strength"])
    through = client.get("/api/paths", params={"run": "exp-eap", "k": 3, "through": "L0.H2"}).json()
    assert through["paths"] and all("induction-2l/L0.H2" in p["nodes"] for p in through["paths"])
    assert {n["id"] for n in through["graph"]["nodes"]} == {n for p in through["paths"] for n in p["nodes"]}

    from queries.compare import compare_runs

    cmp = client.get("/api/compare", params={"a": "exp-eap", "b": "exp-ig", "top": 10}).json()
    ref = compare_runs(store, "exp-eap", "exp-ig", top=10).figures
    assert cmp["figures"]["spearman"] == pytest.approx(ref["spearman"]) and cmp["figures"]["weightedJaccard"] == pytest.approx(ref["weightedJaccard"])
    assert cmp["figures"]["gained"] == ref["gained"] and cmp["alignment"] is None

    rows = client.post("/api/query", json={"cypher": "MATCH (r:Run {runId: $run}) RETURN r.method AS m", "params": {"run": "exp-ig"}}).json()
    assert rows["columns"] == ["m"] and rows["rows"] == [["eap-ig"]]
    before = store.read("MATCH (n) RETURN count(n) AS n")["n"].iloc[0]
    for statement in ("CREATE (:Evil {x: 1})", "MATCH (r:Run) SET r.status = 'failed'", "MATCH (n) DETACH DELETE n",
                      "CREATE INDEX evil FOR (n:Run) ON (n.task)"):
        assert "only reads" in _one_line(client.post("/api/query", json={"cypher": statement}), 403)
    assert store.read("MATCH (n) RETURN count(n) AS n")["n"].iloc[0] == before
    assert store.read("MATCH (r:Run {runId: 'exp-eap'}) RETURN r.status AS s")["s"].iloc[0] == "complete"
    from explorer.api import Explorer

    hurried = Explorer(client.app_state["store"], query_seconds=0.5)
    with pytest.raises(QueryError, match="ran past the explorer's 0.5 s limit"):  # ~6 s of work on the server
        hurried.query("UNWIND range(1, 20000000) AS x WITH x WHERE x % 7 = 0 RETURN count(x) AS n")
    assert "JSON" in _one_line(client.post("/api/query", content=b"not json"), 400)
    entries = client.get("/api/cookbook").json()["entries"]
    from queries.cookbook import cookbook

    assert [e["title"] for e in entries] == [t for t, _, _ in cookbook()] and len(entries) >= 5


def test_strict_json_and_the_host_check(client: Any, embedded: StoreSettings) -> None:
    text = client.get("/api/overview", params={"run": "exp-neuron"}).text
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 421  # a DNS-rebinding page
    head = client.get("/")
    assert head.status_code == 200 and "script-src 'self'" in head.headers["content-security-policy"]
    assert not re.search(r"""(src|href)=["']https?://""", head.text)  # every asset is vendored
    assert client.get("/static/vendor/sigma.min.js").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> list[str]:
    """The IPv4 addresses a local port listens on (Linux's /proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


class _Served:
    def __init__(self, home: Path, *args: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "atlas_cli", "serve", "--home", str(home), "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        assert match, f"no URL printed: {line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.url = match.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "the explorer did not start listening"
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def test_atlas_serve_binds_loopback_and_asks_for_a_token_when_exposed(embedded: StoreSettings, runs: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    local = _Served(embedded.home, "--run", "exp-eap")
    try:
        assert local.url == f"http://127.0.0.1:{local.port}/#/run/exp-eap"
        with urllib.request.urlopen(f"http://127.0.0.1:{local.port}/api/runs", timeout=30) as r:
            assert any(x["runId"] == "exp-eap" for x in json.load(r)["runs"])
        assert _listening(local.port) == ["127.0.0.1"]  # bound to loopback alone
    finally:
        local.close()
    exposed = _Served(embedded.home, "--host", "0.0.0.0")
    try:
        token = re.search(r"\?token=([\w-]+)", exposed.url)
        assert token, exposed.url
        assert _listening(exposed.port) == ["0.0.0.0"]
        base = f"http://127.0.0.1:{exposed.port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/runs", timeout=30)
        assert refused.value.code == 401 and "token" in json.load(refused.value)["error"]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/api/runs?token=wrong", timeout=30)
        with urllib.request.urlopen(f"{base}/api/runs?token={token.group(1)}", timeout=30) as r:
            assert r.status == 200
        req = urllib.request.Request(f"{base}/static/app.js", headers={"X-Atlas-Token": token.group(1)})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    finally:
        exposed.close()
    taken = _Served(embedded.home)
    try:
        again = subprocess.run([sys.executable, "-m", "atlas_cli", "serve", "--home", str(embedded.home), "--port", str(taken.port)],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2 and again.stderr.count("\n") == 1 and "choose another --port" in again.stderr
    finally:
        taken.close()


# -- the pages in a real browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from bench.browser import chromium

    path = chromium()
    if not path:
        pytest.fail("no headless browser found: install Debian's chromium (`apt-get install chromium`; make test does this)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(embedded: StoreSettings, runs: dict[str, Any]) -> Iterator[_Served]:
    server = _Served(embedded.home)
    yield server
    server.close()


def _open(page: Any, url: str) -> None:
    page.goto(url)
    deadline = time.monotonic() + 60
    while not page.evaluate("!!(window.atlasExplorer && window.atlasExplorer.ready)"):  # the CSP forbids eval: polled from here
        assert time.monotonic() < deadline, f"{url} did not finish loading"
        time.sleep(0.05)


_GRAPH = """() => {
  const s = window.atlasExplorer, r = s.renderer;
  if (!r) { return null; }
  const box = r.getContainer().getBoundingClientRect(), dim = r.getDimensions();
  const out = [], at = {};
  s.graph.forEachNode((id, a) => {
    const p = r.graphToViewport({x: a.x, y: a.y});
    at[id] = [box.left + p.x, box.top + p.y];
    if (p.x < 0 || p.y < 0 || p.x > dim.width || p.y > dim.height) { out.push(id); }
  });
  return {n: s.graph.order, edges: s.graph.size, outside: out, at: at, width: dim.width, height: dim.height};
}"""


def test_every_page_in_a_real_browser(browser: Any, served: _Served) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    base = f"http://127.0.0.1:{served.port}/"

    _open(page, base + "#/")
    assert page.locator("table tbody tr").count() >= 4
    page.fill("#runs-filter", "neuron")
    assert page.locator("table tbody tr").count() == 1
    page.screenshot(path=str(DOCS / "runs.png"))

    _open(page, base + "#/run/exp-eap")
    graph = page.evaluate(_GRAPH)
    assert graph and graph["n"] >= 8 and graph["outside"] == [] and graph["width"] > 0
    page.screenshot(path=str(DOCS / "overview.png"))
    # a click on a node (a real mouse click where sigma drew it) opens its page
    x, y = graph["at"]["induction-2l/L1.H0"]
    page.mouse.click(x, y)
    deadline = time.monotonic() + 30
    while "component" not in page.evaluate("location.hash") or not page.evaluate("window.atlasExplorer.ready"):
        assert time.monotonic() < deadline, "a click on a node did not open its page"
        time.sleep(0.05)
    assert "L1.H0" in page.locator("h2").first.inner_text()
    assert page.locator("#inputs table").count() == 3 and "inductionScore" in page.locator("#properties").inner_text()
    page.screenshot(path=str(DOCS / "component.png"), full_page=True)

    _open(page, base + "#/run/exp-neuron")
    page.fill("#component-search", "L0.N*")
    page.press("#component-search", "Enter")
    page.wait_for_selector("#search-results a")
    hits = page.locator("#search-results a")
    assert hits.count() == 6 and hits.first.inner_text().startswith("L0.N")
    hits.first.click()
    deadline = time.monotonic() + 30
    while "component" not in page.evaluate("location.hash") or not page.evaluate("window.atlasExplorer.ready"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "Neuron" in page.locator("main").inner_text()

    _open(page, base + "#/run/exp-eap/paths?k=5&through=L0.H2")
    assert page.locator("#paths tbody tr").count() >= 1 and "L0.H2" in page.locator("#paths").inner_text()
    assert page.evaluate(_GRAPH)["outside"] == []
    page.screenshot(path=str(DOCS / "paths.png"), full_page=True)

    _open(page, base + "#/compare?a=exp-eap&b=exp-ig&top=10")
    assert "weightedJaccard" in page.locator("#figures").inner_text()
    page.screenshot(path=str(DOCS / "compare.png"))

    assert errors == []
    _open(page, base + "#/query")
    page.fill("#q-cypher", "CREATE (:Evil {x: 1})")
    page.click("#q-run")
    page.wait_for_selector("#q-result .error")
    assert "only reads" in page.locator("#q-result .error").inner_text()
    page.locator("#cookbook a").nth(4).click()  # "Runs of a model": rows, one click away
    page.wait_for_selector("#q-result table")
    with page.expect_download() as download:
        page.click("#q-csv")
    assert download.value.suggested_filename == "atlas-query.csv"
    page.screenshot(path=str(DOCS / "query.png"))
    assert errors == ["Failed to load resource: the server responded with a status of 403 (Forbidden)"]  # the refused write, alone


def test_a_large_runs_top_500_nodes_in_the_browser(browser: Any, served: _Served, runs: dict[str, Any]) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    base = f"http://127.0.0.1:{served.port}/"
    edges = runs["large_edges"]
    order = edges["score"].abs().sort_values(ascending=False).index
    top = next(k for k in range(500, len(edges), 250)
               if len(set(edges.loc[order[:k], "componentId_pre"]) | set(edges.loc[order[:k], "componentId_post"])) >= 500)
    _open(page, base + f"#/run/exp-large?top={top}")
    graph = page.evaluate(_GRAPH)
    assert graph["n"] >= 500 and graph["edges"] == top and graph["outside"] == []
    page.fill("#component-search", "L3.H1*")
    page.press("#component-search", "Enter")
    page.wait_for_selector("#search-results a")
    assert page.locator("#search-results a").first.inner_text().startswith("L3.H1")
    page.screenshot(path=str(DOCS / "overview-large.png"))
    assert errors == []
