"""Scorer cache during a real beam search (issue: scorer family).

Beam search re-scores prefixes it has seen (the kept beams, each round) and problems can share
prefixes. The shared scorer wrapper must send each unique prefix to the model exactly once. This
runs beam search at N=16 (width 4) with the testbed policy and its exact PRM, wrapped in the same
BatchedScorer every scorer uses, and counts items asked for, unique items, and items forwarded.

    python benchmarks/bench_scorer_cache.py --problems 20 --budget 16
"""

from __future__ import annotations

import argparse
import asyncio
import json

from pumsearch.api import asearch
from pumsearch.backends import load_generator
from pumsearch.scorers import load_scorer
from pumsearch.strategies import search_config
from pumsearch.testbed.tasks import testbed_problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--policy", default="testbed:weak")
    args = parser.parse_args()
    problems = testbed_problems(f"standard,n={args.problems}")
    generator = load_generator(args.policy)
    scorer = load_scorer("testbed-prm")
    seen: set[tuple] = set()
    inner_score = scorer.inner.score_batch

    def counting(items):  # every item that reaches the model
        for item in items:
            key = (item.problem.question, item.steps, item.complete)
            assert key not in seen, "a prefix was scored twice"
            seen.add(key)
        return inner_score(items)

    scorer.inner.score_batch = counting
    config = search_config(strategy="beam", budget=args.budget, beam_width=4, max_tokens=96, seed=0)
    results = asyncio.run(asearch(problems, generator=generator, scorer=scorer, config=config))
    stats = scorer.stats.to_dict()
    print(json.dumps({
        "problems": args.problems, "budget": args.budget, "policy": args.policy,
        "items_requested": stats["requested"], "unique_prefixes_forwarded": len(seen),
        "forwarded_items": stats["items"], "cache_hits": stats["cache_hits"],
        "hit_rate": round(stats["hit_rate"], 3),
        "accuracy": sum(bool(r.correct) for r in results) / len(results),
    }))


if __name__ == "__main__":
    main()
