"""Compare two sweep (or run) directories made by two builds of pumsearch from the same command:
records, run configurations (and so run keys), summaries, sweep.json and trees, with what varies
between identical runs left out (wall times, timestamps, the environment block).

    python scripts/compare_runs.py OLD_DIR NEW_DIR [--tree-attrs-dropped visits,value_sum]

Run directories are matched by name without the key (``<strategy>-<scorer>-n<N>-s<seed>``), so a
changed key is reported as a difference rather than as a missing run. ``--tree-attrs-dropped``
names node attributes the new build no longer writes on some nodes: held at their zero value they
count as absent, in both builds. Exit code 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

VOLATILE_COUNTERS = ("wall_time", "backend_time", "scorer_time")
VOLATILE_SUMMARY = ("updated_at", "session_wall_time", "problem_wall_time")


def run_dirs(root: Path) -> dict[str, Path]:
    if (root / "config.json").exists():
        return {".": root}
    return {p.parent.name.rsplit("-", 1)[0]: p.parent for p in sorted(root.glob("*/config.json"))}


def records(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(run_dir.glob("records*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            record.pop("timings", None)
            for key in VOLATILE_COUNTERS:
                record["counters"].pop(key, None)
            out[record["problem_id"]] = record
    return out


def config(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "config.json").read_text())
    data.pop("environment", None)
    return data


def summary(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE_SUMMARY}


def tree_nodes(path: Path, dropped: tuple[str, ...]) -> dict[int, dict[str, Any]]:
    """Node attributes by node id; a ``dropped`` attribute at its zero value counts as absent."""
    nodes = {n["id"]: dict(n) for n in json.loads(path.read_text())["graph"]["nodes"]}
    for attrs in nodes.values():
        for key in dropped:
            if key in attrs and not attrs[key]:
                del attrs[key]
    return nodes


def tree_result(path: Path) -> dict[str, Any]:
    result = json.loads(path.read_text())["result"] or {}
    result.get("counters", {}).update({k: None for k in VOLATILE_COUNTERS})
    return result


def compare(old_root: Path, new_root: Path, dropped: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    if (old_root / "sweep.json").exists() or (new_root / "sweep.json").exists():
        a, b = (json.loads((r / "sweep.json").read_text()) for r in (old_root, new_root))
        if a != b:
            problems.append(f"sweep.json differs: {a} != {b}")
    old_runs, new_runs = run_dirs(old_root), run_dirs(new_root)
    if set(old_runs) != set(new_runs):
        problems.append(f"run directories differ: {sorted(set(old_runs) ^ set(new_runs))}")
    counted = {"runs": 0, "records": 0, "trees": 0}
    for name in sorted(set(old_runs) & set(new_runs)):
        old, new = old_runs[name], new_runs[name]
        counted["runs"] += 1
        if config(old) != config(new):
            problems.append(f"{name}: config.json differs (key {config(old)['key']} -> {config(new)['key']})")
        if summary(old) != summary(new):
            problems.append(f"{name}: summary.json differs")
        old_records, new_records = records(old), records(new)
        if old_records != new_records:
            diff = [pid for pid in old_records.keys() | new_records.keys()
                    if old_records.get(pid) != new_records.get(pid)]
            problems.append(f"{name}: {len(diff)} record(s) differ, e.g. {sorted(diff)[:3]}")
        counted["records"] += len(new_records)
        for record in new_records.values():
            if not record.get("tree_file"):
                continue
            old_tree, new_tree = old / record["tree_file"], new / record["tree_file"]
            counted["trees"] += 1
            if tree_nodes(old_tree, dropped) != tree_nodes(new_tree, dropped) or \
                    tree_result(old_tree) != tree_result(new_tree):
                problems.append(f"{name}: tree {record['tree_file']} differs")
    print(f"compared {counted['runs']} runs, {counted['records']} records, {counted['trees']} trees")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--tree-attrs-dropped", default="", help="comma-separated node attributes")
    args = parser.parse_args()
    dropped = tuple(a for a in args.tree_attrs_dropped.split(",") if a)
    problems = compare(args.old, args.new, dropped)
    for problem in problems:
        print(problem)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
