"""What a testbed PUM ranks by among complete solutions: correctness, or length.

On the complete trajectories of held-out labelled problems (the question-hash split of
``pum train --val-fraction``), each PUM's AUC of right over wrong solutions across all of them and
within a problem, its rank correlation with the solution's length in tokens, and how often its
top-scored solution of a problem is that problem's shortest (beside how often the shortest is right).
Best-of-N with a scorer that prefers short solutions picks, as N grows, the sample that answered
early, which is usually wrong.

    python benchmarks/bench_pum_bias.py --labels labels.jsonl --pum shipped=pumsearch/testbed/pum \\
        --problems 150 --out benchmarks/results/pum/issue14/length_bias.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from pumsearch.pum.label import read_records
from pumsearch.pum.train import is_held_out
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem


def auc(pos: list[float], neg: list[float]) -> float:
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0] * len(values)
    for rank, index in enumerate(order):
        out[index] = rank
    return out


async def main_async(args: argparse.Namespace) -> None:
    from pumsearch.scorers import load_scorer

    records = [r for r in read_records(args.labels) if is_held_out(r["problem"]["question"], args.val_fraction)]
    records = records[: args.problems]
    items, right, tokens, groups = [], [], [], []
    for record in records:
        problem = Problem(str(record["problem"]["id"]), record["problem"]["question"])
        start = len(items)
        for t in record["trajectories"]:
            items.append(ScoreItem(problem, tuple(t["text"].split("\n\n")), complete=True))
            right.append(bool(t["correct"]))
            tokens.append(t["num_tokens"])
        groups.append(range(start, len(items)))
    fewest = [min(tokens[i] for i in g) for g in groups]  # a problem's shortest solutions (ties: all)
    shortest_right = [statistics.mean(right[i] for i in g if tokens[i] == m)
                      for g, m in zip(groups, fewest, strict=True)]
    out: dict = {"problems": len(records), "solutions": len(items), "right_share": round(sum(right) / len(right), 3),
                 "tokens_right": round(statistics.mean(t for t, r in zip(tokens, right, strict=True) if r), 1),
                 "tokens_wrong": round(statistics.mean(t for t, r in zip(tokens, right, strict=True) if not r), 1),
                 "shortest_is_right": round(statistics.mean(shortest_right), 3), "pums": {}}
    for spec in args.pum:
        name, _, path = spec.rpartition("=")
        scorer = load_scorer("pum", model=path)
        values = [float(s.value) for s in await scorer.score(items)]
        await scorer.aclose()
        within = [(values[a] > values[b]) + 0.5 * (values[a] == values[b])
                  for g in groups for a in g for b in g if right[a] and not right[b]]
        tops = [max(g, key=values.__getitem__) for g in groups]
        out["pums"][name or path] = {
            "auc_right_over_wrong": round(auc([v for v, r in zip(values, right, strict=True) if r],
                                              [v for v, r in zip(values, right, strict=True) if not r]), 3),
            "auc_within_problem": round(sum(within) / len(within), 3),
            "spearman_with_tokens": round(statistics.correlation(ranks(values), ranks(tokens)), 3),
            "top_is_shortest": round(sum(tokens[t] == m for t, m in zip(tops, fewest, strict=True)) / len(groups), 3),
            "top_is_right": round(sum(right[t] for t in tops) / len(groups), 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--pum", action="append", default=[], help="NAME=CHECKPOINT (repeatable)")
    parser.add_argument("--problems", type=int, default=150)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
