/* The atlas explorer: a single page over the JSON endpoints of `atlas serve` (explorer/api.py).
   Pages are hash routes: #/ runs, #/run/RUN overview, #/run/RUN/component/ID, #/run/RUN/paths,
   #/compare, #/query. Every text from the database is set as text, never as HTML. */
(function () {
  'use strict';
  var state = {colours: {}, errors: [], graph: null, renderer: null, page: null, ready: false};
  window.atlasExplorer = state;
  window.addEventListener('error', function (e) { state.errors.push(String(e.message || e)); });
  window.addEventListener('unhandledrejection', function (e) { state.errors.push(String(e.reason && e.reason.message || e.reason)); });

  // -- small helpers -------------------------------------------------------------------------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) { return; }
      if (k === 'text') { el.textContent = v; } else if (k === 'on') {
        Object.keys(v).forEach(function (ev) { el.addEventListener(ev, v[ev]); });
      } else if (k === 'style') { el.style.cssText = v; } else { el.setAttribute(k, v === true ? '' : v); }
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) { continue; }
      if (Array.isArray(c)) { c.forEach(function (x) { if (x) { el.appendChild(typeof x === 'string' ? document.createTextNode(x) : x); } }); } else {
        el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
      }
    }
    return el;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return ''; }
    if (typeof v === 'number') {
      if (Number.isInteger(v)) { return String(v); }
      var a = Math.abs(v);
      return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : v.toPrecision(4);
    }
    if (typeof v === 'object') { return JSON.stringify(v); }
    return String(v);
  }
  function qs(params) {
    return Object.keys(params).filter(function (k) { return params[k] !== undefined && params[k] !== null && params[k] !== ''; })
      .map(function (k) {
        var v = params[k];
        return Array.isArray(v) ? v.map(function (x) { return encodeURIComponent(k) + '=' + encodeURIComponent(x); }).join('&')
          : encodeURIComponent(k) + '=' + encodeURIComponent(v);
      }).filter(Boolean).join('&');
  }
  function api(path, params, body) {
    var url = 'api/' + path + (params ? '?' + qs(params) : '');
    var t0 = performance.now();
    setStatus('loading ' + path + ' ...');
    var init = body ? {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)} : {};
    init.credentials = 'same-origin';
    return fetch(url, init).then(function (r) {
      return r.json().then(function (data) {
        setStatus(path + ': ' + Math.round(performance.now() - t0) + ' ms');
        if (!r.ok) { throw new Error(data && data.error ? data.error : ('HTTP ' + r.status)); }
        return data;
      });
    });
  }
  function setStatus(text) { document.getElementById('status').textContent = text; }
  function page() { return document.getElementById('page'); }
  function showError(where, err) {
    where.appendChild(h('div', {'class': 'error', role: 'alert', text: err.message || String(err)}));
  }
  function link(text, hash) { return h('a', {href: hash, text: text}); }
  function runHash(run) { return '#/run/' + encodeURIComponent(run); }
  function componentHash(run, id) { return runHash(run) + '/component/' + encodeURIComponent(id); }
  function local(id) { var i = id.indexOf('/L'); var j = id.lastIndexOf('/'); return i >= 0 ? id.slice(i + 1) : id.slice(j + 1); }

  // one colour scale on every page: blue for positive scores, red for negative, darker = stronger
  // on a log scale over four decades below the run's largest |score|
  function strengthT(score, scale) {
    if (!scale || !score) { return 0; }
    var t = 1 + Math.log10(Math.abs(score) / scale) / 4;
    return Math.max(0, Math.min(1, t));
  }
  function hex(hue, sat, light) {  // WebGL colours are parsed from hex: HSL converted here
    var a = sat * Math.min(light, 1 - light);
    function f(n) { var k = (n + hue / 30) % 12; var c = light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)); return ('0' + Math.round(255 * c).toString(16)).slice(-2); }
    return '#' + f(0) + f(8) + f(4);
  }
  function edgeColour(score, scale) {
    var light = (88 - 58 * strengthT(score, scale)) / 100;
    return score >= 0 ? hex(214, 0.7, light) : hex(356, 0.7, light);
  }
  function scaleLegend(scale) {
    return h('span', {'class': 'legend'},
      h('span', {text: 'edge score: '}),
      h('span', {'class': 'bar', style: 'background:linear-gradient(to right,' + edgeColour(-scale, scale) + ',' + edgeColour(-scale / 1e4, scale) + ')'}),
      h('span', {text: ' negative | positive '}),
      h('span', {'class': 'bar', style: 'background:linear-gradient(to right,' + edgeColour(scale / 1e4, scale) + ',' + edgeColour(scale, scale) + ')'}),
      h('span', {'class': 'muted', text: ' (log |score|, 1e-4 to 1 of the run\'s largest ' + fmt(scale) + ')'}));
  }
  function kindLegend(kinds) {
    return h('span', {'class': 'legend'}, kinds.map(function (k) {
      return h('span', null, h('span', {'class': 'swatch', style: 'background:' + (state.colours[k] || '#888')}), k);
    }));
  }

  // a table whose headers sort it; rows are arrays of cells (strings, numbers or elements)
  function table(columns, rows, opts) {
    opts = opts || {};
    var t = h('table', {'class': opts.cls || null});
    var body = h('tbody');
    var order = {col: -1, dir: 1};
    function render() {
      body.textContent = '';
      rows.forEach(function (r) {
        body.appendChild(h('tr', null, r.map(function (c, i) {
          var num = typeof r.raw !== 'undefined' ? typeof r.raw[i] === 'number' : typeof c === 'number';
          return h('td', {'class': num ? 'num' : null}, c instanceof Node ? c : fmt(c));
        })));
      });
    }
    var head = h('tr', null, columns.map(function (name, i) {
      return h('th', {on: {click: function () {
        order.dir = order.col === i ? -order.dir : (opts.numeric && opts.numeric[i] ? -1 : 1);
        order.col = i;
        rows.sort(function (a, b) {
          var x = a.raw ? a.raw[i] : a[i], y = b.raw ? b.raw[i] : b[i];
          x = x instanceof Node ? x.textContent : x; y = y instanceof Node ? y.textContent : y;
          return (x > y ? 1 : x < y ? -1 : 0) * order.dir;
        });
        render();
      }}, text: name});
    }));
    t.appendChild(h('thead', null, head));
    t.appendChild(body);
    render();
    return t;
  }
  function withRaw(cells, raw) { cells.raw = raw; return cells; }

  function edgeTable(run, edges) {
    return table(['source', 'target', 'channel', 'score'], edges.map(function (e) {
      return withRaw([link(local(e.source), componentHash(run, e.source)), link(local(e.target), componentHash(run, e.target)), e.channel, e.score],
        [local(e.source), local(e.target), e.channel, e.score]);
    }), {numeric: [false, false, false, true]});
  }

  // -- the graph (sigma.js over graphology: WebGL, made for large graphs) ----------------------
  function drawGraph(container, data, run, scale) {
    if (state.renderer) { state.renderer.kill(); state.renderer = null; }
    var graph = new graphology.MultiDirectedGraph();
    var maxStrength = 0;
    data.nodes.forEach(function (n) { maxStrength = Math.max(maxStrength, n.strength || 0); });
    data.nodes.forEach(function (n) {
      graph.addNode(n.id, {x: n.x, y: -n.y, label: n.label, kind: n.kind, layer: n.layer, strength: n.strength,
        size: 4 + 10 * Math.sqrt((n.strength || 0) / (maxStrength || 1)), color: state.colours[n.kind] || '#888'});
    });
    data.edges.forEach(function (e) {
      if (graph.hasNode(e.source) && graph.hasNode(e.target)) {
        graph.addEdge(e.source, e.target, {score: e.score, channel: e.channel, color: edgeColour(e.score, scale),
          size: 0.5 + 3 * strengthT(e.score, scale)});
      }
    });
    var tip = document.querySelector('.tip') || document.body.appendChild(h('div', {'class': 'tip'}));
    var renderer = new Sigma.Sigma(graph, container, {settings: {renderLabels: data.nodes.length <= 40, enableEdgeEvents: true,
      labelRenderedSizeThreshold: 0, stagePadding: 30, itemSizesReference: 'screen'}});
    function place(ev) { tip.style.left = (ev.original ? ev.original.clientX : 0) + 12 + 'px'; tip.style.top = (ev.original ? ev.original.clientY : 0) + 12 + 'px'; }
    renderer.on('enterNode', function (ev) {
      var a = graph.getNodeAttributes(ev.node);
      tip.textContent = ev.node + ' (' + a.kind + ', layer ' + a.layer + '): total |score| ' + fmt(a.strength);
      tip.style.display = 'block'; place(ev.event || {});
    });
    renderer.on('leaveNode', function () { tip.style.display = 'none'; });
    renderer.on('enterEdge', function (ev) {
      var a = graph.getEdgeAttributes(ev.edge);
      tip.textContent = local(graph.source(ev.edge)) + ' -> ' + local(graph.target(ev.edge)) + ' [' + a.channel + '] score ' + fmt(a.score);
      tip.style.display = 'block'; place(ev.event || {});
    });
    renderer.on('leaveEdge', function () { tip.style.display = 'none'; });
    renderer.on('clickNode', function (ev) { tip.style.display = 'none'; location.hash = componentHash(run, ev.node); });
    state.graph = graph; state.renderer = renderer;
    return renderer;
  }

  // -- pages ---------------------------------------------------------------------------------
  function runsPage(root) {
    root.appendChild(h('h1', {text: 'Runs'}));
    var filter = h('input', {type: 'search', placeholder: 'filter: model, task, method, status ...', style: 'width:28em', id: 'runs-filter'});
    root.appendChild(h('div', {'class': 'controls'}, filter));
    var holder = h('div');
    root.appendChild(holder);
    return api('runs').then(function (data) {
      function render() {
        var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
        var rows = data.runs.filter(function (r) {
          var text = [r.runId, r.modelId, r.task, r.method, r.granularity, r.status].join(' ').toLowerCase();
          return words.every(function (w) { return text.indexOf(w) >= 0; });
        });
        holder.textContent = '';
        holder.appendChild(h('p', {'class': 'muted', text: rows.length + ' of ' + data.runs.length + ' runs (click a header to sort)'}));
        holder.appendChild(table(['run', 'model', 'task', 'method', 'metric', 'granularity', 'prompts', 'edges', 'status', 'created'], rows.map(function (r) {
          return withRaw([link(r.runId, runHash(r.runId)), r.modelId, r.task, r.method, r.metric, r.granularity, r.nPrompts, r.nEdges, r.status, r.createdAt],
            [r.runId, r.modelId, r.task, r.method, r.metric, r.granularity, r.nPrompts, r.nEdges, r.status, r.createdAt]);
        }), {numeric: [false, false, false, false, false, false, true, true, false, false]}));
      }
      filter.addEventListener('input', render);
      render();
    });
  }

  function runHeader(root, run) {
    root.appendChild(h('h1', null, 'Run ', link(run.runId, runHash(run.runId))));
    root.appendChild(h('p', {'class': 'muted', text: [run.modelId, run.task, run.method, run.metric, run.status, (run.nEdgesHeld || 0) + ' edges', (run.nComponents || 0) + ' components'].filter(Boolean).join(' · ')}));
    if (run.warning) { root.appendChild(h('div', {'class': 'warning', text: run.warning})); }
    root.appendChild(h('div', {'class': 'controls'}, link('overview', runHash(run.runId)), link('paths', runHash(run.runId) + '/paths'),
      link('compare with ...', '#/compare?a=' + encodeURIComponent(run.runId))));
  }

  function flowTable(flow) {
    var max = 0;
    flow.share.forEach(function (row) { row.forEach(function (v) { max = Math.max(max, v || 0); }); });
    return h('table', {'class': 'matrix'}, h('tr', null, h('th', {text: 'sender \\ receiver'}), flow.cols.map(function (c) { return h('th', {text: c}); })),
      flow.rows.map(function (r, i) {
        return h('tr', null, h('th', {text: r}), flow.share[i].map(function (v) {
          var t = v > 0 ? Math.max(0, 1 + Math.log10(v / max) / 3) : 0;
          return h('td', {style: 'background:hsl(214,70%,' + Math.round(97 - 55 * t) + '%);color:' + (t > 0.6 ? '#fff' : '#223'),
            title: r + ' -> ' + flow.cols[flow.share[i].indexOf(v)] + ': ' + (100 * v).toFixed(2) + '% of |score|',
            text: v > 0 ? (v >= 0.001 ? (100 * v).toFixed(1) : '<.1') : ''});
        }));
      }));
  }

  function blockCanvas(blocks, run, scale) {
    var n = blocks.nodes.length, cell = Math.max(3, Math.min(9, Math.floor(540 / Math.max(n, 1))));
    var canvas = h('canvas', {'class': 'blocks', width: n * cell, height: n * cell, id: 'blocks'});
    var ctx = canvas.getContext('2d');
    blocks.score.forEach(function (row, i) {
      row.forEach(function (v, j) {
        if (!v) { return; }
        ctx.fillStyle = edgeColour(v, scale);
        ctx.fillRect(j * cell, i * cell, cell, cell);
      });
    });
    ctx.strokeStyle = '#999'; ctx.lineWidth = 1;
    blocks.groups.forEach(function (g, i) {
      if (i > 0 && g !== blocks.groups[i - 1]) {
        ctx.beginPath(); ctx.moveTo(0, i * cell); ctx.lineTo(n * cell, i * cell); ctx.moveTo(i * cell, 0); ctx.lineTo(i * cell, n * cell); ctx.stroke();
      }
    });
    canvas.addEventListener('mousemove', function (ev) {
      var i = Math.floor(ev.offsetY / cell), j = Math.floor(ev.offsetX / cell);
      if (i < n && j < n) { canvas.title = blocks.nodes[i] + ' -> ' + blocks.nodes[j] + ': ' + fmt(blocks.score[i][j]); }
    });
    canvas.addEventListener('click', function (ev) {
      var i = Math.floor(ev.offsetY / cell);
      if (i < n) { location.hash = componentHash(run, blocks.ids[i]); }
    });
    return canvas;
  }

  function overviewPage(root, run) {
    var top = Number(new URLSearchParams(location.hash.split('?')[1] || '').get('top')) || 300;
    return api('overview', {run: run, top: top}).then(function (data) {
      runHeader(root, data.run);
      var scale = data.run.scale;
      // search by component id, with wildcards
      var search = h('input', {type: 'search', id: 'component-search', placeholder: 'find a component: L5.*, L9.H9, *.N12', style: 'width:22em'});
      var found = h('div', {id: 'search-results'});
      search.addEventListener('keydown', function (ev) {
        if (ev.key !== 'Enter') { return; }
        found.textContent = '';
        api('search', {run: run, q: search.value}).then(function (res) {
          found.appendChild(h('p', {'class': 'muted', text: res.matched + ' components match'}));
          found.appendChild(h('div', null, res.components.map(function (c) {
            return h('span', {style: 'margin-right:12px'}, link(c.label, componentHash(run, c.id)));
          })));
        }).catch(function (err) { showError(found, err); });
      });
      root.appendChild(h('div', {'class': 'controls'}, search, h('span', {'class': 'muted', text: 'Enter to search'})));
      root.appendChild(found);
      root.appendChild(h('h2', {text: 'Strongest ' + data.graph.edges.length + ' edges'}));
      var kinds = [];
      data.graph.nodes.forEach(function (n) { if (kinds.indexOf(n.kind) < 0) { kinds.push(n.kind); } });
      root.appendChild(h('div', {'class': 'controls'}, kindLegend(kinds), scaleLegend(scale)));
      var container = h('div', {'class': 'graph', id: 'graph'});
      root.appendChild(container);
      root.appendChild(h('p', {'class': 'muted', text: 'x: layer (forward order), node size: total |score|; hover for scores, click a node to open it, scroll to zoom, drag to pan. ' +
        (data.graph.nodes.length > 40 ? 'Labels show on hover at this size.' : '')}));
      drawGraph(container, data.graph, run, scale);
      root.appendChild(h('h2', {text: 'Flow between layers and kinds (% of the run\'s total |score|)'}));
      root.appendChild(flowTable(data.flow));
      root.appendChild(h('h2', {text: 'Adjacency of the ' + data.blocks.nodes.length + ' strongest components (forward order; click a row to open it)'}));
      root.appendChild(blockCanvas(data.blocks, run, scale));
      root.appendChild(h('h2', {text: 'Edges'}));
      edgeBrowser(root, run, data.run);
    });
  }

  function edgeBrowser(root, run, info) {
    var f = {layer: h('input', {type: 'text', placeholder: 'e.g. 5 or 5,6', style: 'width:7em', id: 'f-layer'}),
      kind: h('select', {id: 'f-kind'}, ['', 'Embed', 'Head', 'Mlp', 'Neuron', 'Feature', 'Error', 'Logit'].map(function (k) { return h('option', {value: k, text: k || 'any kind'}); })),
      channel: h('input', {type: 'text', placeholder: 'q, k, v, in', style: 'width:6em', id: 'f-channel'}),
      min: h('input', {type: 'number', step: 'any', placeholder: 'min |score|', id: 'f-min'}),
      max: h('input', {type: 'number', step: 'any', placeholder: 'max |score|', id: 'f-max'}),
      component: h('input', {type: 'text', placeholder: 'id glob, e.g. L5.*', style: 'width:9em', id: 'f-component'}),
      top: h('input', {type: 'number', value: '100', min: '1', max: '2000', id: 'f-top'})};
    var out = h('div', {id: 'edge-table'});
    function load() {
      out.textContent = '';
      api('edges', {run: run, layer: f.layer.value, kind: f.kind.value, channel: f.channel.value, min: f.min.value, max: f.max.value,
        component: f.component.value, top: f.top.value}).then(function (res) {
        out.appendChild(h('p', {'class': 'muted', text: res.matched + ' edges match; the strongest ' + res.edges.length + ' shown'}));
        out.appendChild(edgeTable(run, res.edges));
      }).catch(function (err) { showError(out, err); });
    }
    var go = h('button', {type: 'button', text: 'filter', on: {click: load}, id: 'f-go'});
    root.appendChild(h('div', {'class': 'controls'}, h('label', {text: 'layer'}), f.layer, f.kind, h('label', {text: 'channel'}), f.channel, f.min, f.max,
      h('label', {text: 'either end'}), f.component, h('label', {text: 'top'}), f.top, go));
    root.appendChild(out);
    load();
  }

  function renderValue(v) {
    if (v === null || v === undefined) { return h('span', {'class': 'muted', text: 'none'}); }
    if (Array.isArray(v) && v.length && typeof v[0] === 'object' && v[0] !== null && !Array.isArray(v[0])) {
      var cols = Object.keys(v[0]);
      return table(cols, v.slice(0, 50).map(function (row) {
        return cols.map(function (c) {
          var x = row[c];
          if (c === 'tokens' && Array.isArray(x)) {
            var hot = typeof row.position === 'number' ? row.position : (typeof row.pos === 'number' ? row.pos : -1);
            return h('span', null, x.map(function (tok, i) { return h('span', {'class': i === hot ? 'token-hot' : null, text: String(tok)}); }));
          }
          return x;
        });
      }));
    }
    if (typeof v === 'object') { return h('pre', {text: JSON.stringify(v, null, 1).slice(0, 4000)}); }
    return document.createTextNode(fmt(v));
  }

  function componentPage(root, run, id) {
    return api('component', {run: run, id: id}).then(function (data) {
      runHeader(root, data.run);
      var c = data.component;
      root.appendChild(h('h2', null, h('span', {'class': 'swatch', style: 'background:' + (state.colours[c.kind] || '#888')}), c.id));
      root.appendChild(h('p', {'class': 'muted', text: c.kind + ', layer ' + c.layer + ' (' + c.group + '); total |score| in and out ' + fmt(c.strength)}));
      var grid = h('div', {'class': 'grid2'});
      [['Strongest inputs', data.inputs], ['Strongest outputs', data.outputs]].forEach(function (pair) {
        var col = h('div', {id: pair[0] === 'Strongest inputs' ? 'inputs' : 'outputs'}, h('h2', {text: pair[0] + ' by channel'}));
        var channels = Object.keys(pair[1]);
        if (!channels.length) { col.appendChild(h('p', {'class': 'muted', text: 'none in this run'})); }
        channels.forEach(function (ch) { col.appendChild(h('h3', {text: 'channel ' + ch})); col.appendChild(edgeTable(run, pair[1][ch])); });
        grid.appendChild(col);
      });
      root.appendChild(grid);
      root.appendChild(h('h2', {text: 'What the toolbox stored on it'}));
      if (!data.figures.length) { root.appendChild(h('p', {'class': 'muted', text: 'nothing yet: run atlas probe, lens, decode, views, noise or sae on this model'})); }
      var kv = h('table', {'class': 'kv', id: 'properties'}, h('tr', null, h('th', {text: 'figure'}), h('th', {text: 'value'}), h('th', {text: 'from'})));
      data.figures.forEach(function (f) {
        var from = h('span', {'class': 'muted', text: f.study ? 'atlas ' + f.study + (f.run ? ', run ' + f.run : '') : ''});
        kv.appendChild(h('tr', null, h('td', {text: f.property}), h('td', null, renderValue(f.value)), h('td', null, from)));
      });
      root.appendChild(kv);
      if (data.prompts) {
        root.appendChild(h('h2', {text: 'Per prompt: its outgoing contribution and share of its mean (kept with --per-prompt)'}));
        var pc = data.prompts.length ? Object.keys(data.prompts[0]) : [];
        root.appendChild(table(pc, data.prompts.map(function (r) { return pc.map(function (c) { return r[c]; }); })));
      }
    });
  }

  function pathsPage(root, run) {
    var params = new URLSearchParams(location.hash.split('?')[1] || '');
    var form = {source: h('input', {type: 'text', value: params.get('source') || '', placeholder: 'default: the embedding', id: 'p-source'}),
      target: h('input', {type: 'text', value: params.get('target') || '', placeholder: 'default: the logits', id: 'p-target'}),
      through: h('input', {type: 'text', value: params.getAll('through').join(';'), placeholder: 'e.g. L1.H* ; Mlp', id: 'p-through'}),
      k: h('input', {type: 'number', value: params.get('k') || '10', min: '1', max: '200', id: 'p-k'})};
    var out = h('div', {id: 'paths'});
    function search() {
      location.hash = runHash(run) + '/paths?' + qs({source: form.source.value, target: form.target.value, k: form.k.value,
        through: form.through.value.split(';').map(function (s) { return s.trim(); }).filter(Boolean)});
    }
    return api('paths', {run: run, source: params.get('source'), target: params.get('target'), through: params.getAll('through'), k: params.get('k') || 10})
      .then(function (data) {
        runHeader(root, data.run);
        root.appendChild(h('h2', {text: 'Strongest paths'}));
        root.appendChild(h('div', {'class': 'controls'}, h('label', {text: 'from'}), form.source, h('label', {text: 'to'}), form.target,
          h('label', {text: 'through (; between stages)'}), form.through, h('label', {text: 'k'}), form.k,
          h('button', {type: 'button', text: 'search', id: 'p-go', on: {click: search}})));
        root.appendChild(out);
        out.appendChild(table(['rank', 'strength', 'path (each hop\'s share of its receiver\'s input)', 'channels'], data.paths.map(function (p) {
          var hops = h('span');
          p.nodes.forEach(function (n, i) {
            if (i) { hops.appendChild(h('span', {'class': 'muted', text: ' →' + (p.shares && p.shares[i - 1] !== undefined ? ' ' + (100 * p.shares[i - 1]).toFixed(1) + '% ' : ' ')})); }
            hops.appendChild(link(local(n), componentHash(run, n)));
          });
          return withRaw([p.rank, p.strength, hops, p.channels.join(' ')], [p.rank, p.strength, p.nodes.join(' '), p.channels.join(' ')]);
        }), {numeric: [false, true, false, false]}));
        root.appendChild(h('p', {'class': 'muted', text: 'strength: the product of each hop\'s share of its receiver\'s input (atlas paths)'}));
        var container = h('div', {'class': 'graph', id: 'graph'});
        root.appendChild(container);
        drawGraph(container, data.graph, run, data.run.scale);
      }).catch(function (err) {
        if (!root.firstChild) {
          root.appendChild(h('h1', null, 'Paths of ', link(run, runHash(run))));
          root.appendChild(h('div', {'class': 'controls'}, form.source, form.target, form.through, form.k, h('button', {type: 'button', text: 'search', id: 'p-go', on: {click: search}})));
        }
        showError(root, err);
      });
  }

  function comparePage(root) {
    var params = new URLSearchParams(location.hash.split('?')[1] || '');
    root.appendChild(h('h1', {text: 'Compare two runs'}));
    var a = h('select', {id: 'c-a'}), b = h('select', {id: 'c-b'});
    var top = h('input', {type: 'number', value: params.get('top') || '50', min: '1', max: '2000', id: 'c-top'});
    var out = h('div', {id: 'comparison'});
    root.appendChild(h('div', {'class': 'controls'}, h('label', {text: 'A'}), a, h('label', {text: 'B'}), b, h('label', {text: 'top'}), top,
      h('button', {type: 'button', text: 'compare', id: 'c-go', on: {click: function () {
        location.hash = '#/compare?' + qs({a: a.value, b: b.value, top: top.value});
      }}})));
    root.appendChild(out);
    return api('runs').then(function (data) {
      data.runs.forEach(function (r) {
        var label = r.runId + ' (' + r.modelId + ', ' + r.method + ')';
        a.appendChild(h('option', {value: r.runId, text: label}));
        b.appendChild(h('option', {value: r.runId, text: label}));
      });
      if (params.get('a')) { a.value = params.get('a'); }
      if (params.get('b')) { b.value = params.get('b'); }
      if (!params.get('a') || !params.get('b')) { return null; }
      return api('compare', {a: params.get('a'), b: params.get('b'), top: top.value}).then(function (res) {
        var f = res.figures;
        out.appendChild(h('h2', {text: 'Figures'}));
        var kv = h('table', {'class': 'kv', id: 'figures'});
        ['modelA', 'modelB', 'alignment', 'nShared', 'spearman', 'weightedJaccard', 'top', 'nUnalignedA', 'nUnalignedB'].forEach(function (k) {
          if (k in f) { kv.appendChild(h('tr', null, h('td', {text: k}), h('td', {text: fmt(f[k])}))); }
        });
        out.appendChild(kv);
        var scale = Math.max(res.runs[params.get('a')].scale || 0, res.runs[params.get('b')].scale || 0);
        out.appendChild(scaleLegend(scale));
        [['gained', 'Gained: in B\'s top ' + f.top + ', not in A\'s'], ['lost', 'Lost: in A\'s top ' + f.top + ', not in B\'s']].forEach(function (pair) {
          out.appendChild(h('h2', {text: pair[1]}));
          out.appendChild(h('p', null, (f[pair[0]] || []).map(function (e) { return h('span', {style: 'margin-right:14px', text: typeof e === 'string' ? e : JSON.stringify(e)}); })));
        });
        out.appendChild(h('h2', {text: 'Largest changes (B - A)'}));
        var cols = res.changes.length ? Object.keys(res.changes[0]) : [];
        out.appendChild(table(cols, res.changes.map(function (r) { return cols.map(function (c) { return r[c]; }); })));
        if (res.alignment) {
          out.appendChild(h('h2', {text: 'Alignment (' + f.alignment + '): matched components'}));
          var acols = Object.keys(res.alignment[0] || {});
          out.appendChild(table(acols, res.alignment.map(function (r) { return acols.map(function (c) { return r[c]; }); })));
        }
      });
    }).catch(function (err) { showError(out, err); });
  }

  function queryPage(root) {
    root.appendChild(h('h1', {text: 'Cypher, read-only'}));
    root.appendChild(h('p', {'class': 'muted', text: 'Runs as the database\'s read-only user with a time limit: the server refuses any write. ' +
      'Parameters as JSON, e.g. {"run": "demo-induction-2l"}.'}));
    var cypher = h('textarea', {rows: '8', id: 'q-cypher', spellcheck: 'false'});
    var params = h('textarea', {rows: '2', id: 'q-params', spellcheck: 'false'});
    params.value = '{}';
    var out = h('div', {id: 'q-result'});
    var last = null;
    function run() {
      out.textContent = '';
      var p;
      try { p = JSON.parse(params.value || '{}'); } catch (e) { showError(out, new Error('parameters are not JSON: ' + e.message)); return; }
      api('query', null, {cypher: cypher.value, params: p}).then(function (res) {
        last = res;
        out.appendChild(h('p', {'class': 'muted', text: res.nRows + ' rows' + (res.truncated ? ' (the first ' + res.rows.length + ' shown)' : '')}));
        out.appendChild(table(res.columns, res.rows.map(function (r) { return r.slice(); })));
      }).catch(function (err) { showError(out, err); });
    }
    function csv() {
      if (!last) { return; }
      var esc = function (v) { var s = v === null || v === undefined ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v)); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
      var text = [last.columns.map(esc).join(',')].concat(last.rows.map(function (r) { return r.map(esc).join(','); })).join('\n') + '\n';
      var a = h('a', {href: URL.createObjectURL(new Blob([text], {type: 'text/csv'})), download: 'atlas-query.csv'});
      document.body.appendChild(a); a.click(); a.remove();
    }
    root.appendChild(cypher);
    root.appendChild(h('div', {'class': 'controls'}, h('label', {text: 'parameters'}), params));
    root.appendChild(h('div', {'class': 'controls'}, h('button', {type: 'button', text: 'run', id: 'q-run', on: {click: run}}),
      h('button', {type: 'button', text: 'download CSV', id: 'q-csv', on: {click: csv}})));
    root.appendChild(out);
    var book = h('div', {id: 'cookbook'}, h('h2', {text: 'Cookbook'}));
    root.appendChild(book);
    return api('cookbook').then(function (data) {
      data.entries.forEach(function (e, i) {
        book.appendChild(h('div', null, h('a', {href: '#/query', 'data-entry': String(i), text: e.title, on: {click: function (ev) {
          ev.preventDefault(); cypher.value = e.cypher; params.value = JSON.stringify(e.params); run();
        }}})));
      });
    });
  }

  // -- the router ----------------------------------------------------------------------------
  function route() {
    var root = page();
    root.textContent = '';
    state.ready = false;
    if (state.renderer) { state.renderer.kill(); state.renderer = null; state.graph = null; }
    var hash = location.hash.replace(/^#/, '') || '/';
    var path = hash.split('?')[0];
    var parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    var done;
    if (!parts.length) { state.page = 'runs'; done = runsPage(root); } else if (parts[0] === 'run' && parts.length === 2) {
      state.page = 'overview'; done = overviewPage(root, parts[1]);
    } else if (parts[0] === 'run' && parts[2] === 'component' && parts.length >= 4) {
      state.page = 'component'; done = componentPage(root, parts[1], parts.slice(3).join('/'));
    } else if (parts[0] === 'run' && parts[2] === 'paths') { state.page = 'paths'; done = pathsPage(root, parts[1]); } else if (parts[0] === 'compare') {
      state.page = 'compare'; done = comparePage(root);
    } else if (parts[0] === 'query') { state.page = 'query'; done = queryPage(root); } else {
      state.page = 'unknown'; root.appendChild(h('div', {'class': 'error', text: 'no page at ' + hash})); done = Promise.resolve();
    }
    Promise.resolve(done).catch(function (err) { showError(root, err); }).then(function () { state.ready = true; });
  }

  window.addEventListener('hashchange', route);
  api('meta').then(function (meta) { state.colours = meta.colours; }).catch(function () {}).then(route);
})();
