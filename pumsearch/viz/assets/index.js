// pumsearch run index: filters the run's problems and links each to its tree page. All record
// text goes in with textContent; links are the page paths the generator wrote.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("pumsearch-data").textContent);
  function byId(id) { return document.getElementById(id); }
  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === null || text === undefined ? "–" : String(text);
    return td;
  }
  function oneLine(text, n) {
    var t = String(text || "").replace(/\s+/g, " ").trim();
    return t.length > n ? t.slice(0, n - 1) + "…" : t;
  }
  function options(id, key) {
    var values = Array.from(new Set(DATA.rows.map(function (r) { return r[key] === null ? "" : String(r[key]); })));
    values.sort(function (a, b) { return (Number(a) - Number(b)) || a.localeCompare(b); });
    var select = byId(id), all = document.createElement("option");
    all.value = "*"; all.textContent = "all";
    var opts = [all].concat(values.map(function (v) {
      var o = document.createElement("option"); o.value = v; o.textContent = v === "" ? "(none)" : v; return o;
    }));
    select.replaceChildren.apply(select, opts);
    select.addEventListener("change", render);
  }
  function keep(r) {
    var outcome = byId("f-outcome").value, text = byId("f-text").value.trim().toLowerCase();
    var pairs = [["f-strategy", "strategy"], ["f-scorer", "scorer"], ["f-budget", "budget"]];
    if (outcome && r.outcome !== outcome) return false;
    for (var i = 0; i < pairs.length; i++) {
      var v = byId(pairs[i][0]).value, own = r[pairs[i][1]] === null ? "" : String(r[pairs[i][1]]);
      if (v !== "*" && v !== own) return false;
    }
    return !text || r.problem_id.toLowerCase().indexOf(text) >= 0 || r.question.toLowerCase().indexOf(text) >= 0;
  }
  function row(r) {
    var tr = document.createElement("tr");
    tr.className = r.outcome;
    tr.setAttribute("data-problem", r.problem_id);
    tr.appendChild(cell(r.problem_id));
    var q = cell(oneLine(r.question, 160), "question");
    q.title = r.question;
    tr.appendChild(q);
    [r.strategy, r.scorer, r.budget, r.prediction, r.reference].forEach(function (v) { tr.appendChild(cell(v)); });
    var verdict = cell(r.outcome, "verdict");
    if (r.error) verdict.title = r.error;
    tr.appendChild(verdict);
    tr.appendChild(cell(r.tokens));
    var link = document.createElement("td");
    if (r.link) {
      var a = document.createElement("a");
      a.setAttribute("href", r.link);
      a.className = "tree-link";
      a.textContent = "open tree";
      link.appendChild(a);
    } else {
      link.textContent = r.note || "–";
    }
    tr.appendChild(link);
    return tr;
  }
  function render() {
    var shown = DATA.rows.filter(keep), graded = shown.filter(function (r) {
      return r.outcome === "correct" || r.outcome === "wrong"; });
    var right = graded.filter(function (r) { return r.outcome === "correct"; }).length;
    byId("rows").replaceChildren.apply(byId("rows"), shown.map(row));
    byId("summary").textContent = shown.length + " of " + DATA.rows.length + " problems shown" +
      (graded.length ? "; accuracy " + (100 * right / graded.length).toFixed(1) + "% (" + right + "/" + graded.length + ")" : "") +
      (DATA.unreadable_lines ? "; " + DATA.unreadable_lines + " unreadable record line(s) skipped" : "");
  }
  byId("run-title").textContent = "Run " + DATA.run.split(/[\\/]/).filter(Boolean).pop();
  byId("run-title").title = DATA.run;
  options("f-strategy", "strategy");
  options("f-scorer", "scorer");
  options("f-budget", "budget");
  byId("f-outcome").addEventListener("change", render);
  byId("f-text").addEventListener("input", render);
  render();
  document.body.setAttribute("data-ready", "1");
})();
