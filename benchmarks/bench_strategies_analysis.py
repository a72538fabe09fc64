"""Where the step searches of benchmarks/bench_strategies_testbed.sh spend their expansions (reads
the saved trees; no new search).

For each run directory: the share of step expansions below depth 1 made under a prefix that holds
a step the exact PRM (`testbed-prm`) calls wrong (budget that cannot lead to a right solution on
the testbed, where one wrong step makes the answer wrong), and the share of problems whose tree
holds a right finished solution (the search's own pass@N).

    python benchmarks/bench_strategies_analysis.py /tmp/strategies-testbed benchmarks/results/strategies
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pumsearch.runs.rundir import find_run_dirs, load_run_dir

STRATEGIES = ("beam", "particles", "rebase")


def tree_counts(graph: dict[str, Any]) -> tuple[int, int, bool]:
    """(expansions below depth 1, of them under a prefix with a wrong step, a right leaf exists)."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    expansions = wrong = 0
    for edge in graph["edges"]:
        parent = nodes[edge["source"]]
        if parent["depth"] == 0:
            continue
        expansions += 1
        steps = parent["step_scores"].get("testbed-prm") or []
        wrong += bool(steps) and min(steps) < 1
    right = any(n["terminal"] and n.get("correct") for n in graph["nodes"])
    return expansions, wrong, right


def analyse(run_dir: Path) -> dict[str, Any]:
    expansions = wrong = right = problems = 0
    for path in sorted((run_dir / "trees").glob("*.tree.json")):
        e, w, r = tree_counts(json.loads(path.read_text())["graph"])
        expansions, wrong, right, problems = expansions + e, wrong + w, right + r, problems + 1
    return {"expansions": expansions, "under_wrong_prefix": wrong / max(expansions, 1),
            "right_solution_in_tree": right / max(problems, 1), "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    rows = []
    for sub in ("main", "beam", "beam-before-issue13", "beam-filter-duplicates"):
        for path in find_run_dirs(args.runs / sub):
            spec = load_run_dir(path).spec
            if spec.search.strategy in STRATEGIES:
                rows.append({"sweep": sub, "strategy": spec.search.strategy, "budget": spec.search.budget,
                             "seed": spec.search.seed, **analyse(path)})
    rows.sort(key=lambda r: (r["sweep"], r["strategy"], r["budget"], r["seed"]))
    lines = ["| sweep | strategy | N | seed | expansions under a wrong prefix | right solution in tree |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['sweep']} | {r['strategy']} | {r['budget']} | {r['seed']} | {r['under_wrong_prefix']:.3f} "
              f"| {r['right_solution_in_tree']:.3f} |" for r in rows]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "analysis.md").write_text("\n".join(lines) + "\n")
    (args.results / "analysis.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
