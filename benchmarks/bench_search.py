"""Wall time of tree search relative to Best-of-N at the same N, on the same backend.

Runs bon, beam, dvts and mcts over a few GSM8K test problems searched together (one engine, so
each round of every problem goes to the backend in one batch), on the embedded SmolLM2-135M on
CPU, with the ground-truth verifier as scorer (it needs the references; it runs no model, so the
times are generation times). Prints one table row per (strategy, N) and the ratios to bon; with
--json, writes the rows to a file.

    python benchmarks/bench_search.py --budgets 8,16 --problems 3 --max-tokens 96
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's pumsearch

from pumsearch.api import asearch
from pumsearch.search.config import SearchConfig
from pumsearch.search.grading import reference_from_gsm8k
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.strategies import search_config

DATA = Path(__file__).resolve().parents[1] / "pumsearch" / "data" / "gsm8k_test.jsonl"


def gsm8k_problems(count: int) -> list[Problem]:
    problems = []
    with DATA.open() as lines:
        for i, line in enumerate(lines):
            if i >= count:
                break
            row = json.loads(line)
            problems.append(Problem(f"gsm8k:{i}", row["question"], reference_from_gsm8k(row["answer"])))
    return problems


def settings_for(strategy: str, budget: int, args: argparse.Namespace) -> dict:
    common = dict(strategy=strategy, budget=budget, max_tokens=args.max_tokens, seed=args.seed,
                  temperature=0.8, beam_width=args.beam_width)
    if strategy == "mcts":  # rounds of N step expansions, like a beam round
        common.update(mcts_steps_per_solution=args.mcts_steps, expansions=2,
                      mcts_parallel=max(budget // 2, 1))
    return common


def run_one(generator: object, scorer: object, problems: list[Problem], config: SearchConfig) -> dict:
    started = time.perf_counter()
    results = asyncio.run(asearch(problems, generator=generator, scorer=scorer, config=config))  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    ok = [r for r in results if isinstance(r, SearchResult)]
    if len(ok) != len(results):
        raise RuntimeError(f"{config.strategy}: {[r for r in results if not isinstance(r, SearchResult)]}")
    return {
        "strategy": config.strategy,
        "budget": config.budget,
        "wall_s": round(wall, 2),
        "generated_tokens": sum(r.counters.generated_tokens for r in ok),
        "prompt_tokens": sum(r.counters.prompt_tokens for r in ok),
        "backend_calls": max(r.counters.backend_calls for r in ok),
        "mean_batch_rows": round(sum(r.counters.mean_batch_size for r in ok) / len(ok), 1),
        "tree_nodes": sum(len(r.tree) - 1 for r in ok),
        "correct": sum(bool(r.correct) for r in ok),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="8,16")
    parser.add_argument("--strategies", default="bon,beam,dvts,mcts")
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--mcts-steps", type=int, default=4, help="--mcts-steps-per-solution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from pumsearch.backends import load_generator
    from pumsearch.scorers import load_scorer

    generator = load_generator(None)
    problems = gsm8k_problems(args.problems)
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        for strategy in args.strategies.split(","):
            scorer = load_scorer("verifier")  # fresh cache per run: no run profits from another
            row = run_one(generator, scorer, problems, search_config(**settings_for(strategy, budget, args)))
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:
        bon = next(r for r in rows if r["strategy"] == "bon" and r["budget"] == row["budget"])
        row["wall_vs_bon"] = round(row["wall_s"] / bon["wall_s"], 2)
        row["tokens_vs_bon"] = round(row["generated_tokens"] / max(bon["generated_tokens"], 1), 2)
    header = ("strategy", "budget", "wall_s", "wall_vs_bon", "generated_tokens", "tokens_vs_bon",
              "backend_calls", "mean_batch_rows", "tree_nodes", "correct")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
