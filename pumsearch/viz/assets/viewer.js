// pumsearch tree viewer. Plain JS, no libraries, no network. Every piece of model text is put in
// the page with textContent (never innerHTML), so a step that contains markup shows as text.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var DX = 215;              // horizontal distance between depths (px at zoom 1)
  var DY = 24;               // vertical distance between visible rows
  var LABEL_CHARS = 27;      // step text shown next to a node
  var VISIBLE_BUDGET = 400;  // nodes shown when a tree opens; deeper levels start collapsed
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  var DATA = JSON.parse(document.getElementById("pumsearch-data").textContent);
  var st = null;  // the state of the tree on show
  var view = {x: 40, y: 40, k: 1};

  // -- small DOM helpers --------------------------------------------------------------------------
  function h(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function s(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    return e;
  }
  function byId(id) { return document.getElementById(id); }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }
  function oneLine(text, n) {
    var t = String(text || "").replace(/\s+/g, " ").trim();
    return t.length > n ? t.slice(0, n - 1) + "…" : t;
  }

  // -- state --------------------------------------------------------------------------------------
  function buildState(tree) {
    var nodes = new Map(), kids = new Map();
    tree.nodes.forEach(function (n) { nodes.set(n.id, n); kids.set(n.id, []); });
    tree.nodes.forEach(function (n) { if (n.parent !== null && kids.has(n.parent)) kids.get(n.parent).push(n.id); });
    kids.forEach(function (list) { list.sort(function (a, b) { return a - b; }); });
    var result = tree.result || {};
    var chosen = new Set(result.chosen_path || []);
    var scorers = new Set();
    tree.nodes.forEach(function (n) { Object.keys(n.scores || {}).forEach(function (k) { scorers.add(k); }); });
    var t = {
      tree: tree, nodes: nodes, kids: kids, root: tree.root, result: result, chosen: chosen,
      scorers: Array.from(scorers).sort(), scorer: null, expanded: new Set(), pos: new Map(),
      selected: result.chosen_node !== undefined && result.chosen_node !== null ? result.chosen_node : tree.root,
      hiddenBelow: new Map()
    };
    t.scorer = t.scorers.length ? t.scorers[0] : null;
    t.size = subtreeSizes(t);
    defaultExpansion(t);
    return t;
  }

  function subtreeSizes(t) {  // nodes below each node, for the "+N" badge on collapsed nodes
    var size = new Map(), order = [], stack = [t.root];
    while (stack.length) { var n = stack.pop(); order.push(n); t.kids.get(n).forEach(function (c) { stack.push(c); }); }
    for (var i = order.length - 1; i >= 0; i--) {
      var total = 0;
      t.kids.get(order[i]).forEach(function (c) { total += 1 + size.get(c); });
      size.set(order[i], total);
    }
    return size;
  }

  // Open levels breadth first while the number of visible nodes stays under the budget, so a tree
  // of thousands of nodes opens fast; the chosen path is always open.
  function defaultExpansion(t) {
    t.expanded = new Set();
    var visible = 1, queue = [t.root], head = 0;
    while (head < queue.length) {
      var n = queue[head++], children = t.kids.get(n);
      if (!children.length) continue;
      if (n !== t.root && visible + children.length > VISIBLE_BUDGET) continue;
      t.expanded.add(n);
      visible += children.length;
      children.forEach(function (c) { queue.push(c); });
    }
    openPathTo(t, t.selected);
    t.chosen.forEach(function (n) { openPathTo(t, n); });
  }

  function openPathTo(t, node) {
    var n = t.nodes.get(node);
    while (n && n.parent !== null) { t.expanded.add(n.parent); n = t.nodes.get(n.parent); }
  }

  function pathTo(t, node) {
    var out = [], n = t.nodes.get(node);
    while (n && n.id !== t.root) { out.push(n.id); n = t.nodes.get(n.parent); }
    return out.reverse();
  }

  // -- colour -------------------------------------------------------------------------------------
  function scoreRange(t) {
    var lo = Infinity, hi = -Infinity;
    t.nodes.forEach(function (n) {
      var v = (n.scores || {})[t.scorer];
      if (typeof v === "number") { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    });
    if (lo === Infinity) return null;
    if (lo >= 0 && hi <= 1) return [0, 1];  // probabilities keep their own scale
    return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi];
  }
  function viridis(f) {
    f = Math.max(0, Math.min(1, f)) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(f), VIRIDIS.length - 2), u = f - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + (b[j] - a[j]) * u); }).join(",") + ")";
  }
  function nodeColour(t, n) {
    var v = (n.scores || {})[t.scorer];
    if (typeof v !== "number" || !t.range) return "#c8c8c8";
    return viridis((v - t.range[0]) / (t.range[1] - t.range[0]));
  }

  // -- layout and drawing -------------------------------------------------------------------------
  function layout(t) {  // a leaf per row; a parent sits level with the middle of its visible children
    t.pos = new Map();
    var row = 0, stack = [[t.root, false]];
    while (stack.length) {
      var item = stack.pop(), n = item[0], children = t.expanded.has(n) ? t.kids.get(n) : [];
      var depth = t.nodes.get(n).depth;
      if (!children.length) { t.pos.set(n, {x: depth * DX, y: row++ * DY}); continue; }
      if (item[1]) {
        var first = t.pos.get(children[0]).y, last = t.pos.get(children[children.length - 1]).y;
        t.pos.set(n, {x: depth * DX, y: (first + last) / 2});
        continue;
      }
      stack.push([n, true]);
      for (var i = children.length - 1; i >= 0; i--) stack.push([children[i], false]);
    }
  }

  function draw() {
    var t = st;
    t.range = scoreRange(t);
    layout(t);
    var edges = document.createDocumentFragment(), nodes = document.createDocumentFragment();
    t.pos.forEach(function (p, id) {
      var n = t.nodes.get(id);
      if (n.parent !== null && t.pos.has(n.parent)) edges.appendChild(edgePath(t, t.pos.get(n.parent), p, id));
      nodes.appendChild(nodeGroup(t, n, p));
    });
    byId("edges").replaceChildren(edges);
    byId("nodes").replaceChildren(nodes);
    byId("status").textContent = t.pos.size + " of " + t.nodes.size + " nodes shown";
    drawLegend(t);
    applyView();
  }

  function edgePath(t, a, b, id) {
    var mid = (a.x + b.x) / 2;
    var d = "M" + a.x + "," + a.y + " C" + mid + "," + a.y + " " + mid + "," + b.y + " " + b.x + "," + b.y;
    return s("path", {d: d, "class": t.chosen.has(id) ? "edge chosen" : "edge"});
  }

  function nodeGroup(t, n, p) {
    var cls = "node";
    if (n.id === t.root) cls += " root";
    if (t.chosen.has(n.id)) cls += " chosen";
    if (n.correct === true) cls += " correct";
    if (n.correct === false) cls += " wrong";
    if (n.id === t.selected) cls += " selected";
    var g = s("g", {"class": cls, "data-node": n.id, transform: "translate(" + p.x + "," + p.y + ")"});
    var shape = n.terminal ? s("rect", {x: -6, y: -6, width: 12, height: 12, rx: 2})
                           : s("circle", {r: n.id === t.root ? 8 : 6});
    shape.setAttribute("class", "mark");
    shape.setAttribute("fill", n.id === t.root ? "#555" : nodeColour(t, n));
    g.appendChild(shape);
    var title = s("title", {});
    title.textContent = "node " + n.id + ": " + oneLine(n.text, 200);
    g.appendChild(title);
    var label = s("text", {x: 10, y: -8, "class": "label"});
    label.textContent = n.id === t.root ? "problem" : oneLine(n.text, LABEL_CHARS);
    var hidden = t.expanded.has(n.id) ? 0 : t.size.get(n.id);
    if (hidden) {
      var more = s("tspan", {"class": "hidden-count"});
      more.textContent = "  +" + hidden;
      label.appendChild(more);
    }
    g.appendChild(label);
    if (t.kids.get(n.id).length && n.id !== t.root) g.appendChild(toggleGlyph(t, n));
    return g;
  }

  function toggleGlyph(t, n) {
    var open = t.expanded.has(n.id);
    var g = s("g", {"class": "toggle", "data-node": n.id, transform: "translate(-21,-5)"});
    g.appendChild(s("rect", {width: 10, height: 10, rx: 2}));
    g.appendChild(s("path", {d: open ? "M2,5 H8" : "M2,5 H8 M5,2 V8"}));
    var tip = s("title", {});
    tip.textContent = open ? "collapse" : "expand";
    g.appendChild(tip);
    return g;
  }

  function drawLegend(t) {
    var legend = byId("legend");
    var parts = [];
    if (t.scorer && t.range) {
      var bar = h("span", "bar");
      bar.style.background = "linear-gradient(to right," + VIRIDIS.map(function (c) {
        return "rgb(" + c.join(",") + ")"; }).join(",") + ")";
      parts.push(h("span", "legend-item", fmt(t.range[0])), bar, h("span", "legend-item", fmt(t.range[1])));
    } else {
      parts.push(h("span", "legend-item", "no scores"));
    }
    var keys = [["key unscored", "unscored"], ["key chosen", "chosen path"], ["key correct", "correct"],
                ["key wrong", "wrong"], ["key terminal", "finished solution"]];
    keys.forEach(function (k) { var item = h("span", "legend-item"); item.appendChild(h("span", k[0]));
      item.appendChild(document.createTextNode(k[1])); parts.push(item); });
    legend.replaceChildren.apply(legend, parts);
  }

  // -- side panel ---------------------------------------------------------------------------------
  function kv(table, key, value) {
    var tr = h("tr");
    tr.appendChild(h("th", null, key));
    tr.appendChild(h("td", null, fmt(value)));
    table.appendChild(tr);
  }

  function panel() {
    var t = st, box = byId("panel"), n = t.nodes.get(t.selected), prob = t.tree.problem;
    var parts = [];
    parts.push(h("h2", null, "Problem " + prob.id));
    parts.push(h("pre", "question", prob.question));
    var res = h("table", "facts");
    kv(res, "reference", prob.answer);
    kv(res, "strategy", t.result.strategy);
    kv(res, "answer", t.result.answer);
    kv(res, "correct", t.result.correct);
    kv(res, "cut short", t.result.cut_short);
    kv(res, "chosen node", t.result.chosen_node);
    if (t.tree.source) kv(res, "file", t.tree.source);
    parts.push(res);

    parts.push(h("h2", null, n.id === t.root ? "Root (empty prefix)" : "Node " + n.id));
    var facts = h("table", "facts");
    facts.id = "node-facts";
    var prefixTokens = 0;
    pathTo(t, n.id).forEach(function (id) { prefixTokens += t.nodes.get(id).num_tokens || 0; });
    kv(facts, "depth", n.depth);
    kv(facts, "finish reason", n.finish_reason);
    kv(facts, "step tokens", n.num_tokens);
    kv(facts, "prefix tokens", prefixTokens);
    kv(facts, "children", t.kids.get(n.id).length);
    kv(facts, "finished solution", n.terminal);
    if (n.terminal) { kv(facts, "answer", n.answer); kv(facts, "correct", n.correct); }
    if (n.visits) { kv(facts, "visits", n.visits); kv(facts, "mean value", n.value_sum / n.visits); }
    if (n.logprob !== null && n.logprob !== undefined) kv(facts, "logprob", n.logprob);
    parts.push(facts);
    parts.push(scoresTable(n));

    parts.push(h("h2", null, "Prefix (" + pathTo(t, n.id).length + " steps)"));
    parts.push(prefixList(t, n));
    parts.push(h("h2", null, "Counters"));
    var counters = h("table", "facts");
    var c = t.result.counters || {};
    Object.keys(c).forEach(function (k) { kv(counters, k, c[k]); });
    if (!Object.keys(c).length) kv(counters, "counters", null);
    parts.push(counters);
    box.replaceChildren.apply(box, parts);
  }

  function scoresTable(n) {
    var table = h("table", "scores");
    table.id = "node-scores";
    var head = h("tr");
    ["scorer", "value", "step values"].forEach(function (c) { head.appendChild(h("th", null, c)); });
    table.appendChild(head);
    var names = Object.keys(n.scores || {}).sort();
    if (!names.length) { var empty = h("tr"); empty.appendChild(h("td", null, "not scored")); table.appendChild(empty); }
    names.forEach(function (name) {
      var tr = h("tr");
      tr.appendChild(h("td", null, name));
      tr.appendChild(h("td", null, fmt(n.scores[name])));
      var steps = (n.step_scores || {})[name];
      tr.appendChild(h("td", null, steps ? steps.map(fmt).join(", ") : "–"));
      table.appendChild(tr);
    });
    return table;
  }

  function prefixList(t, n) {
    var list = h("ol", "prefix");
    list.id = "prefix";
    pathTo(t, n.id).forEach(function (id) {
      var step = t.nodes.get(id), li = h("li", id === n.id ? "step current" : "step");
      li.setAttribute("data-node", id);
      var head = h("div", "step-head", "node " + id + " · " + fmt(step.num_tokens) + " tokens · " + fmt(step.finish_reason));
      head.addEventListener("click", function () { select(id, true); });
      li.appendChild(head);
      li.appendChild(h("pre", "step-text", step.text));
      list.appendChild(li);
    });
    if (n.id === t.root) list.appendChild(h("li", "step", "(the empty prefix)"));
    return list;
  }

  // -- interaction --------------------------------------------------------------------------------
  function select(id, reveal) {
    st.selected = id;
    if (reveal && !st.pos.has(id)) { openPathTo(st, id); draw(); } else { markSelected(); }
    panel();
  }
  function markSelected() {
    var nodes = byId("nodes").querySelectorAll("g.node");
    nodes.forEach(function (g) { g.classList.toggle("selected", Number(g.getAttribute("data-node")) === st.selected); });
  }
  function toggle(id) {
    if (st.expanded.has(id)) st.expanded.delete(id); else st.expanded.add(id);
    draw();
  }

  function applyView() {
    byId("viewport").setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")");
    byId("canvas").classList.toggle("far", view.k < 0.45);  // labels off when too small to read
  }
  function zoomAt(factor, cx, cy) {
    var k = Math.max(0.05, Math.min(4, view.k * factor));
    view.x = cx - (cx - view.x) * (k / view.k);
    view.y = cy - (cy - view.y) * (k / view.k);
    view.k = k;
    applyView();
  }
  function fit() {
    var maxX = 0, maxY = 0;
    st.pos.forEach(function (p) { maxX = Math.max(maxX, p.x); maxY = Math.max(maxY, p.y); });
    var box = byId("canvas").getBoundingClientRect();
    var k = Math.min(1.2, (box.width - 80) / (maxX + DX), (box.height - 60) / (maxY + DY));
    view.k = Math.max(0.05, k);
    view.x = 40;
    view.y = 30;
    applyView();
  }

  // A tree too big to read when fitted opens at a readable zoom, centred on the selected node.
  function openingView() {
    fit();
    if (view.k >= 0.5 || !st.pos.has(st.selected)) return;
    var p = st.pos.get(st.selected), box = byId("canvas").getBoundingClientRect();
    view.k = 0.9;
    view.x = Math.min(40, box.width * 0.6 - p.x * view.k);
    view.y = box.height / 2 - p.y * view.k;
    applyView();
  }

  function wire() {
    var canvas = byId("canvas"), drag = null;
    canvas.addEventListener("click", function (ev) {
      var tg = ev.target.closest ? ev.target.closest("g.toggle") : null;
      if (tg) { toggle(Number(tg.getAttribute("data-node"))); return; }
      var g = ev.target.closest ? ev.target.closest("g.node") : null;
      if (g) select(Number(g.getAttribute("data-node")), false);
    });
    canvas.addEventListener("dblclick", function (ev) {
      var g = ev.target.closest ? ev.target.closest("g.node") : null;
      if (g && st.kids.get(Number(g.getAttribute("data-node"))).length) toggle(Number(g.getAttribute("data-node")));
    });
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var box = canvas.getBoundingClientRect();
      zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - box.left, ev.clientY - box.top);
    }, {passive: false});
    canvas.addEventListener("pointerdown", function (ev) {
      if (ev.target.closest && ev.target.closest("g.node")) return;
      drag = {x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y};
      canvas.classList.add("dragging");
    });
    window.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      view.x = drag.vx + ev.clientX - drag.x;
      view.y = drag.vy + ev.clientY - drag.y;
      applyView();
    });
    window.addEventListener("pointerup", function () { drag = null; canvas.classList.remove("dragging"); });
    byId("zoom-in").addEventListener("click", function () { zoomAt(1.25, 200, 200); });
    byId("zoom-out").addEventListener("click", function () { zoomAt(0.8, 200, 200); });
    byId("fit").addEventListener("click", fit);
    byId("expand-all").addEventListener("click", function () {
      st.kids.forEach(function (list, id) { if (list.length) st.expanded.add(id); });
      draw();
    });
    byId("collapse-default").addEventListener("click", function () { defaultExpansion(st); draw(); });
    byId("chosen-only").addEventListener("click", function () {
      st.expanded = new Set([st.root]);
      st.chosen.forEach(function (n) { openPathTo(st, n); });
      draw();
    });
    byId("scorer-select").addEventListener("change", function (ev) { st.scorer = ev.target.value || null; draw(); });
    byId("tree-select").addEventListener("change", function (ev) { show(Number(ev.target.value)); });
  }

  function fillSelect(select, values, labels) {
    var opts = values.map(function (v, i) { var o = h("option", null, labels[i]); o.value = String(v); return o; });
    select.replaceChildren.apply(select, opts);
  }

  function show(index) {
    st = buildState(DATA.trees[index]);
    var scorerSelect = byId("scorer-select");
    fillSelect(scorerSelect, st.scorers.length ? st.scorers : [""], st.scorers.length ? st.scorers : ["(no scores)"]);
    scorerSelect.disabled = !st.scorers.length;
    draw();
    openingView();
    panel();
  }

  function start() {
    var labels = DATA.trees.map(function (t, i) { return (i + 1) + ". " + t.problem.id + (t.source ? " (" + t.source + ")" : ""); });
    fillSelect(byId("tree-select"), DATA.trees.map(function (_, i) { return i; }), labels);
    byId("tree-choice").hidden = DATA.trees.length < 2;
    wire();
    show(0);
    document.body.setAttribute("data-ready", "1");  // for tests and scripts that wait for the page
  }

  // The hooks a test or a user's console can use; they change nothing by themselves.
  window.pumsearchViewer = {
    state: function () { return st; }, select: function (id) { select(id, true); }, toggle: toggle, show: show
  };
  start();
})();
