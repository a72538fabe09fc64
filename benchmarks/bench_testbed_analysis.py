"""Where search helps on the testbed: reads the sweep directories' records and trees (no new search).

For every run (strategy, scorer, N) it labels the chosen solution's steps with the exact PRM's
labels (progress, detour, answer, wrong) and reports accuracy on 3- and 4-operation chains, the
share of chosen solutions with a detour step, and the share whose right answer follows a wrong
step ("lucky": an outcome verifier accepts them, a step-correctness PRM does not). For the
Best-of-N run it does the same over every sample, which says what the policy produces before any
selection.

    python benchmarks/bench_testbed_analysis.py /tmp/testbed-sweeps --out benchmarks/results/testbed
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pumsearch.runs.rundir import find_run_dirs, load_run_dir
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.search.tree import load_tree
from pumsearch.testbed.scorers import TestbedPRM

PRM = TestbedPRM()


def labels(problem: Problem, steps: tuple[str, ...]) -> list[str]:
    return list(PRM.score_one(ScoreItem(problem, steps, True)).extra["labels"])


def solution_facts(problem: Problem, steps: tuple[str, ...], correct: bool, answer: str | None) -> dict[str, bool]:
    marks = labels(problem, steps)
    return {"correct": correct, "detour": "detour" in marks, "lucky": correct and "wrong" in marks,
            "no_answer": answer is None}


def share(rows: list[dict[str, Any]], key: str, where: str | None = None) -> float | None:
    pool = [r for r in rows if where is None or r[where]]
    return round(sum(bool(r[key]) for r in pool) / len(pool), 3) if pool else None


def run_rows(run_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(run identity, one row per problem's chosen solution, one row per finished sample of BoN)."""
    run = load_run_dir(run_path)
    c = run.spec.search
    ident = {"sweep": run_path.parent.name, "strategy": c.strategy, "budget": c.budget,
             "scorer": run.spec.scorer_label, "terminal_reward": c.terminal_reward}
    chosen_rows, sample_rows = [], []
    for record in run.records().values():
        if record["status"] != "ok":
            continue
        tree, result = load_tree(run_path / record["tree_file"])
        problem = tree.problem
        ops = len(problem.metadata["ops"])
        node = (result or {}).get("chosen_node")
        if node is None:
            chosen_rows.append({"ops": ops, "correct": False, "detour": False, "lucky": False, "answered": False,
                                "no_answer": True})
        else:
            facts = solution_facts(problem, tree.steps(node), bool(record["correct"]), tree[node]["answer"])
            chosen_rows.append({"ops": ops, "answered": True, **facts})
        if c.strategy == "bon":
            for leaf in tree.terminals():
                facts = solution_facts(problem, tree.steps(leaf), bool(tree[leaf]["correct"]), tree[leaf]["answer"])
                sample_rows.append({"ops": ops, **facts})
    return ident, chosen_rows, sample_rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "problems": len(rows),
        "accuracy": share(rows, "correct"),
        "accuracy_3_ops": share([r for r in rows if r["ops"] == 3], "correct"),
        "accuracy_4_ops": share([r for r in rows if r["ops"] == 4], "correct"),
        "with_detour": share(rows, "detour"),
        "accuracy_with_detour": share(rows, "correct", where="detour"),
        "lucky": share(rows, "lucky"),
        "no_answer": share(rows, "no_answer"),
        "detour_and_no_answer": share([r for r in rows if r["detour"]], "no_answer"),
    }


def markdown(table: list[dict[str, Any]], samples: dict[str, Any] | None) -> str:
    cols = ("accuracy", "accuracy_3_ops", "accuracy_4_ops", "no_answer", "with_detour", "accuracy_with_detour",
            "detour_and_no_answer", "lucky")
    out = ["| sweep | strategy | scorer | N | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
    for row in table:
        cells = ["" if row[k] is None else f"{row[k]:.3f}" for k in cols]
        out.append(f"| {row['sweep']} | {row['strategy']} | {row['scorer']} | {row['budget']} | " + " | ".join(cells)
                   + " |")
    if samples:
        out += ["", "Every Best-of-N sample (before selection):", "",
                "| samples | right | right, 3 ops | right, 4 ops | no answer | with a detour | right among detour "
                "samples | no answer among detour samples | lucky (right answer after a wrong step) |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {samples['problems']} | {samples['accuracy']:.3f} | {samples['accuracy_3_ops']:.3f} | "
                f"{samples['accuracy_4_ops']:.3f} | {samples['no_answer']:.3f} | {samples['with_detour']:.3f} | "
                f"{samples['accuracy_with_detour']:.3f} | {samples['detour_and_no_answer']:.3f} | "
                f"{samples['lucky']:.3f} |"]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="directory holding the sweep directories")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/testbed"))
    args = parser.parse_args()
    table, samples = [], None
    grouped: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(find_run_dirs(args.runs)):
        ident, chosen, sampled = run_rows(path)
        grouped[tuple(ident.items())].extend(chosen)
        if sampled:
            samples = summarise(sampled)
    for ident, rows in grouped.items():
        table.append({**dict(ident), **summarise(rows)})
    table.sort(key=lambda r: (r["sweep"], r["strategy"], r["scorer"], r["budget"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analysis.json").write_text(json.dumps({"chosen": table, "bon_samples": samples}, indent=1) + "\n")
    text = markdown(table, samples)
    (args.out / "analysis.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
