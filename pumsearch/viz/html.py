"""Self-contained HTML pages for search trees: one tree viewer (one or several trees) and an
index over a run directory. No network: the JS and CSS (pumsearch/viz/assets) are inlined.

Safety: the data travels as JSON inside ``<script type="application/json">`` with ``<``, ``>``
and ``&`` written as \\u escapes, so no model text can close the script element; the viewer
inserts every string with ``textContent``, never as markup.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

from pumsearch.search.tree import ROOT, SearchTree

VIEWER_FORMAT = "pumsearch-viewer"
# Node attributes the viewer shows; token ids are left out (large, and unreadable as numbers).
NODE_FIELDS = ("text", "depth", "finish_reason", "num_tokens", "terminal", "answer", "correct", "scores",
               "step_scores", "visits", "value_sum", "logprob")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_safe_json(data: Any) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' survives literally."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text)


def tree_payload(tree: SearchTree, result: dict[str, Any] | None, source: str = "") -> dict[str, Any]:
    """What the viewer needs of one tree: the problem, the result summary and a flat node list."""
    nodes = []
    for node, attrs in tree.iter_nodes():
        entry = {key: _finite(attrs.get(key)) for key in NODE_FIELDS}
        entry["id"] = node
        entry["parent"] = tree.parent(node) if node != ROOT else None
        nodes.append(entry)
    nodes.sort(key=lambda n: n["id"])
    return {"source": source, "problem": tree.problem.to_dict(), "result": _finite(result), "root": ROOT,
            "nodes": nodes}


def _finite(value: Any) -> Any:
    """NaN and infinities (a scorer that failed on one item) become null: JSON has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _asset(name: str) -> str:
    return resources.files("pumsearch.viz").joinpath("assets", name).read_text(encoding="utf-8")


def page_html(title: str, data: dict[str, Any], body: str, script: str, data_id: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        # nothing may be fetched from anywhere: the page is one file, and this says so to the browser
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; connect-src 'none'\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_asset('viewer.css')}\n</style>\n</head>\n<body>\n"
        f"{body}\n<script type=\"application/json\" id=\"{data_id}\">{script_safe_json(data)}</script>\n"
        f"<script>\n{_asset(script)}\n</script>\n</body>\n</html>\n"
    )


_VIEWER_BODY = """\
<div id="app">
  <header id="toolbar">
    <span class="brand">pumsearch tree</span>
    <label id="tree-choice">tree <select id="tree-select"></select></label>
    <label>colour by <select id="scorer-select"></select></label>
    <button type="button" id="zoom-in" title="zoom in">+</button>
    <button type="button" id="zoom-out" title="zoom out">&minus;</button>
    <button type="button" id="fit">fit</button>
    <button type="button" id="expand-all">expand all</button>
    <button type="button" id="collapse-default">default view</button>
    <button type="button" id="chosen-only">chosen path</button>
    <span id="legend"></span>
    <span id="status"></span>
  </header>
  <main id="main">
    <svg id="canvas" xmlns="http://www.w3.org/2000/svg">
      <g id="viewport"><g id="edges"></g><g id="nodes"></g></g></svg>
    <aside id="panel"></aside>
  </main>
</div>"""


def render_trees_html(trees: list[tuple[SearchTree, dict[str, Any] | None, str]],
                      title: str | None = None) -> str:
    """One page showing the given (tree, result, source name) triples, with a selector if several."""
    if not trees:
        raise ValueError("no trees to show")
    payload = {"format": VIEWER_FORMAT, "trees": [tree_payload(t, r, s) for t, r, s in trees]}
    if title is None:
        single = len(trees) == 1
        title = f"pumsearch tree: {trees[0][0].problem.id}" if single else f"pumsearch: {len(trees)} trees"
    return page_html(title, payload, _VIEWER_BODY, "viewer.js", "pumsearch-data")
