"""Can a PUM check one step? A probe with exact labels and no rollouts, on testbed train chains.

``pairs``: for every gold prefix of k = 1..len steps of each chain, a pair of that prefix
(preferred) against the same prefix with its last result off by 1, 2 or 3 (drawn at random; kept
within 0..max_value). Train on it with ``pumsearch pum train`` (held out by question hash, as
training splits). ``score``: the held-out pairs' accuracy of a checkpoint, broken down by the
offset, the operation and the step index (what the model has learnt to see).

    python benchmarks/bench_pum_probe.py pairs --chains 6000 --out sib6k.jsonl
    pumsearch pum train sib6k.jsonl --base testbed:strong --mode full --lr 1e-3 --head-lr 1e-3 \\
        --batch-pairs 32 --epochs 3 --schedule cosine --val-fraction 0.2 --threads 1 --out PROBE
    python benchmarks/bench_pum_probe.py score --pairs sib6k.jsonl --pum PROBE --out probe.json

torch uses one thread.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from pumsearch.pum.pairs import Pair, read_pairs, write_pairs
from pumsearch.pum.train import is_held_out
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.testbed.tasks import generate, parse_spec

OFFSETS = (-3, -2, -1, 1, 2, 3)


def probe_pairs(chains: int, seed: int, max_value: int = 50) -> list[Pair]:
    spec = parse_spec(f"ops=4,n={chains},split=train,seed={seed}")
    rng = random.Random(seed)
    pairs = []
    for index, chain in enumerate(generate(spec)):
        steps = chain.gold_steps()[:-1]  # the arithmetic steps, not the boxed answer
        for k in range(1, len(steps) + 1):
            left, result = steps[k - 1].rsplit(" = ", 1)
            wrong = int(result) + rng.choice(OFFSETS)
            if not 0 <= wrong <= max_value:  # keep the wrong result a number the policy could write
                wrong = int(result) + (1 if int(result) < max_value else -1)
            right_text = "\n\n".join(steps[:k])
            wrong_text = "\n\n".join([*steps[: k - 1], f"{left} = {wrong}"])
            pairs.append(Pair(f"probe-{index}", chain.question(), right_text, wrong_text, 1.0, "horizontal",
                              False, 1.0, 0.0, [], []))
    return pairs


def breakdown(pairs: list[Pair], checkpoint: str, val_fraction: float) -> dict[str, dict[str, float]]:
    import asyncio

    import torch

    from pumsearch.scorers import load_scorer

    torch.set_num_threads(1)
    held_out = [p for p in pairs if is_held_out(p.question, val_fraction)]
    items = [ScoreItem(Problem(pair.problem_id, pair.question, None), tuple(text.split("\n\n")))
             for pair in held_out for text in (pair.a, pair.b)]
    values = [score.value for score in asyncio.run(score_all(load_scorer("pum", model=checkpoint), items))]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for j, pair in enumerate(held_out):
        right, wrong = pair.a.split("\n\n"), pair.b.split("\n\n")
        offset = int(wrong[-1].rsplit(" ", 1)[1]) - int(right[-1].rsplit(" ", 1)[1])
        for key in ("all", f"offset {offset:+d}", f"op {right[-1].split()[1]}", f"step {len(right)}"):
            counts[key][0] += values[2 * j] > values[2 * j + 1]
            counts[key][1] += 1
    return {key: {"accuracy": round(hit / n, 4), "pairs": n} for key, (hit, n) in sorted(counts.items())}


async def score_all(scorer: Any, items: list[ScoreItem]) -> list[Any]:
    """Every item through the project's batched scorer, which is closed after."""
    try:
        return await scorer.score(items)
    finally:
        await scorer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("pairs")
    make.add_argument("--chains", type=int, default=6000)
    make.add_argument("--seed", type=int, default=7)
    make.add_argument("--out", type=Path, required=True)
    score = sub.add_parser("score")
    score.add_argument("--pairs", type=Path, required=True)
    score.add_argument("--pum", required=True, help="checkpoint directory")
    score.add_argument("--val-fraction", type=float, default=0.2)
    score.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pairs":
        pairs = probe_pairs(args.chains, args.seed)
        write_pairs(pairs, args.out)
        print(f"{len(pairs)} pairs: {args.out}")
        return
    result = breakdown(read_pairs(args.pairs), args.pum, args.val_fraction)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pairs": str(args.pairs), "pum": args.pum, "breakdown": result}, indent=1) + "\n")
    for key, row in result.items():
        print(f"{key:12s} {row['accuracy']:.3f} ({row['pairs']})")


if __name__ == "__main__":
    main()
