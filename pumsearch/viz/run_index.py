"""The index page over a run directory: one row per problem record (records.jsonl, the format of
pumsearch/search/result.py make_record), filters by outcome, strategy, scorer and budget, and a
viewer page per recorded tree, linked from its row."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pumsearch.search.tree import load_tree
from pumsearch.viz.html import page_html, render_trees_html

RECORDS_FILE = "records.jsonl"
TREES_DIR = "trees"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_INDEX_BODY = """\
<div id="index">
  <h1 id="run-title"></h1>
  <div class="filters">
    <label>outcome <select id="f-outcome">
      <option value="">all</option><option value="correct">correct</option>
      <option value="wrong">wrong</option>
      <option value="ungraded">ungraded</option><option value="failed">failed</option></select></label>
    <label>strategy <select id="f-strategy"></select></label>
    <label>scorer <select id="f-scorer"></select></label>
    <label>budget <select id="f-budget"></select></label>
    <label>search <input id="f-text" type="search" placeholder="problem id or question"></label>
  </div>
  <div class="summary" id="summary"></div>
  <table id="runs"><thead><tr>
    <th>problem</th><th>question</th><th>strategy</th><th>scorer</th><th>budget</th><th>prediction</th>
    <th>reference</th><th>outcome</th><th>tokens</th><th>tree</th></tr></thead>
    <tbody id="rows"></tbody></table>
</div>"""


def read_records(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The run's records, the last one kept per (problem, strategy, scorer, budget, seed) since a
    resumed run appends; also the number of unreadable lines (a run still writing may leave half
    a line at the end)."""
    path = run_dir / RECORDS_FILE
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {run_dir}: pass a run directory that holds one")
    latest: dict[tuple, dict[str, Any]] = {}
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(record, dict) or "problem_id" not in record:
            bad += 1
            continue
        key = tuple(str(record.get(k)) for k in ("problem_id", "strategy", "scorer", "budget", "seed"))
        latest.pop(key, None)  # re-insert so the order follows the latest write
        latest[key] = record
    return list(latest.values()), bad


def resolve_tree_file(run_dir: Path, tree_file: str) -> Path | None:
    """A record's tree file: absolute, relative to the run directory, relative to where the run
    was started, or by name under the run's trees/ folder (a run directory that was moved)."""
    given = Path(tree_file)
    in_run = given if given.is_absolute() else run_dir / given
    for candidate in (in_run, given, run_dir / TREES_DIR / given.name):
        if candidate.is_file():
            return candidate
    return None


def _outcome(record: dict[str, Any]) -> str:
    if record.get("status") == "failed":
        return "failed"
    if record.get("correct") is None:
        return "ungraded"
    return "correct" if record["correct"] else "wrong"


def _row(record: dict[str, Any], link: str | None, note: str | None) -> dict[str, Any]:
    counters = record.get("counters") or {}
    return {
        "problem_id": str(record.get("problem_id")),
        "question": str(record.get("question") or ""),
        "strategy": record.get("strategy"),
        "scorer": record.get("scorer"),
        "budget": record.get("budget"),
        "prediction": record.get("prediction"),
        "reference": record.get("reference"),
        "outcome": _outcome(record),
        "error": record.get("error"),
        "tokens": counters.get("generated_tokens"),
        "link": link,
        "note": note,
    }


def write_run_index(run_dir: Path, out: Path) -> tuple[Path, dict[str, int]]:
    """Write ``out`` (the index) and one viewer page per tree under ``out``'s folder/trees/.
    Returns the index path and counts (rows, pages, missing trees, unreadable lines)."""
    records, bad = read_records(run_dir)
    if not records:
        raise ValueError(f"{run_dir / RECORDS_FILE} holds no records")
    pages_dir = out.parent / TREES_DIR
    pages_dir.mkdir(parents=True, exist_ok=True)
    rows, pages, missing = [], 0, 0
    for i, record in enumerate(records):
        link, note = None, None
        if record.get("tree_file"):
            path = resolve_tree_file(run_dir, str(record["tree_file"]))
            if path is None:
                missing += 1
                note = f"tree file not found: {record['tree_file']}"
            else:
                link, note = _tree_page(path, pages_dir, i), None
                pages += 1
        rows.append(_row(record, link, note))
    data = {"run": str(run_dir), "rows": rows, "unreadable_lines": bad}
    page = page_html(f"pumsearch run: {run_dir.name}", data, _INDEX_BODY, "index.js", "pumsearch-data")
    out.write_text(page, encoding="utf-8")
    return out, {"rows": len(rows), "pages": pages, "missing_trees": missing, "unreadable_lines": bad}


def _tree_page(tree_path: Path, pages_dir: Path, index: int) -> str:
    tree, result = load_tree(tree_path)
    stem = _UNSAFE.sub("_", tree_path.name.removesuffix(".json").removesuffix(".tree"))[:80]
    name = f"{index:05d}-{stem}.html"
    html = render_trees_html([(tree, result, tree_path.name)])
    (pages_dir / name).write_text(html, encoding="utf-8")
    return f"{TREES_DIR}/{name}"
