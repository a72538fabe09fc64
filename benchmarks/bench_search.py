"""Wall time of tree search relative to Best-of-N at the same N, on the same backend (issue 17).

Runs bon, beam, dvts and mcts over a few GSM8K test problems searched together (one engine, so
each round of every problem goes to the backend in one batch), on the embedded SmolLM2-135M on
CPU, with the ground-truth verifier as scorer (it needs the references; it runs no model, so the
times are generation times). Every (strategy, N) run is its own process, so each starts with an
empty prefix cache and reports its own peak RSS; the runs alternate within each repeat (the
order reverses every other repeat), so a burst of load on a shared machine hits all of them.
Ratios to bon are taken within a repeat, then the median over repeats is reported. Seconds are
wall time and the run's CPU time (with one torch thread, CPU time is what the run itself spent:
the better figure on a machine shared with other jobs).

``--kv-cache-mb 0`` turns the prefix cache off (rows of one call that share a prompt still
prefill it once); ``--compare-cache`` runs every configuration both ways. ``--dtypes
float32,bf16-matmul`` runs every configuration in each dtype (ratios are within a dtype).
``decode_steps`` and ``row_steps`` count the decode forwards and the rows they carried: a round
lasts as long as its slowest row, so these say how many forwards a strategy needs, apart from
what each costs.

    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --threads 1 --budgets 4,8,16 --problems 8 \\
        --max-tokens 128 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not any(Path(p, "pumsearch").is_dir() for p in sys.path[1:] if p):  # else: the checkout on PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / "pumsearch" / "data" / "gsm8k_test.jsonl"
RESULTS = Path(__file__).resolve().parent / "results" / "backend" / "search_vs_bon.json"
COLUMNS = ("strategy", "N", "dtype", "cache", "wall_s", "wall_vs_bon", "cpu_s", "cpu_vs_bon", "generated_tokens",
           "tokens_vs_bon", "prompt_tokens", "cached_share", "backend_calls", "mean_batch_rows",
           "decode_steps", "row_steps", "peak_rss_mb", "kv_cache_peak_mb", "correct")


def gsm8k_problems(count: int) -> list[Any]:
    from pumsearch.search.grading import reference_from_gsm8k
    from pumsearch.search.problem import Problem

    problems = []
    with DATA.open() as lines:
        for i, line in enumerate(lines):
            if i >= count:
                break
            row = json.loads(line)
            problems.append(Problem(f"gsm8k:{i}", row["question"], reference_from_gsm8k(row["answer"])))
    return problems


def settings_for(strategy: str, budget: int, args: argparse.Namespace) -> dict[str, Any]:
    common = dict(strategy=strategy, budget=budget, max_tokens=args.max_tokens, seed=args.seed,
                  temperature=0.8, beam_width=args.beam_width, step_delimiter=args.step_delimiter)
    if strategy == "mcts":  # rounds of N step expansions, like a beam round
        common.update(mcts_steps_per_solution=args.mcts_steps, expansions=2, mcts_parallel=max(budget // 2, 1))
    return common


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One (strategy, N) run in this process; returns its row."""
    import asyncio

    import torch

    torch.set_num_threads(args.threads)
    from pumsearch.api import asearch
    from pumsearch.backends import load_generator
    from pumsearch.scorers import load_scorer
    from pumsearch.search.result import SearchResult
    from pumsearch.strategies import search_config

    options = {} if args.kv_cache_mb is None else {"kv_cache_mb": args.kv_cache_mb}
    generator = load_generator(None, dtype=args.dtype, **options)
    config = search_config(**settings_for(args.strategy, args.budget, args))
    problems = gsm8k_problems(args.problems)
    wall, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(asearch(problems, generator=generator, scorer=load_scorer("verifier"), config=config))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ok = [r for r in results if isinstance(r, SearchResult)]
    if len(ok) != len(results):
        raise RuntimeError(f"{args.strategy}: {[r for r in results if not isinstance(r, SearchResult)]}")
    prompt = sum(r.counters.prompt_tokens for r in ok)
    cached = sum(r.counters.cached_prompt_tokens for r in ok)
    cache = getattr(generator, "prefix_cache", None)
    decode = getattr(generator, "decode_stats", None)
    return {
        "strategy": args.strategy, "N": args.budget, "dtype": args.dtype,
        "cache": "off" if args.kv_cache_mb == 0 else "on",
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "generated_tokens": sum(r.counters.generated_tokens for r in ok),
        "prompt_tokens": prompt, "cached_prompt_tokens": cached,
        "cached_share": round(cached / prompt, 3) if prompt else 0.0,
        "backend_calls": max(r.counters.backend_calls for r in ok),
        "mean_batch_rows": round(sum(r.counters.mean_batch_size for r in ok) / len(ok), 1),
        "tree_nodes": sum(len(r.tree) - 1 for r in ok),
        "correct": sum(bool(r.correct) for r in ok),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "kv_cache_peak_mb": round(cache.stats.peak_bytes / 2**20, 1) if cache is not None else None,
        # a round lasts as long as its slowest row: forwards needed, and the rows they carried
        "decode_steps": decode.decode_steps if decode is not None else None,
        "row_steps": decode.row_steps if decode is not None else None,
        "prefill_forwards": decode.prefill_forwards if decode is not None else None,
    }


def child_command(args: argparse.Namespace, strategy: str, budget: int, kv_cache_mb: int | None, dtype: str
                  ) -> list[str]:
    command = [sys.executable, __file__, "--child", "--strategy", strategy, "--budget", str(budget), "--dtype", dtype,
               "--problems", str(args.problems), "--max-tokens", str(args.max_tokens),
               "--beam-width", str(args.beam_width), "--mcts-steps", str(args.mcts_steps),
               "--seed", str(args.seed), "--threads", str(args.threads), "--step-delimiter", args.step_delimiter]
    return command + ([] if kv_cache_mb is None else ["--kv-cache-mb", str(kv_cache_mb)])


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over repeats; the ratios to bon (same N, dtype and cache setting, same repeat) first."""
    for run in runs:
        bon = next(r for r in runs if r["strategy"] == "bon" and r["N"] == run["N"] and r["cache"] == run["cache"]
                   and r["dtype"] == run["dtype"] and r["repeat"] == run["repeat"])
        run["wall_vs_bon"] = run["wall_s"] / bon["wall_s"]
        run["cpu_vs_bon"] = run["cpu_s"] / bon["cpu_s"]
        run["tokens_vs_bon"] = run["generated_tokens"] / max(bon["generated_tokens"], 1)
    rows = []
    keys = list(dict.fromkeys((r["strategy"], r["N"], r["dtype"], r["cache"]) for r in runs))
    for key in sorted(keys, key=lambda k: (k[1], k[2], k[3] != "on", k[0] != "bon", k[0])):
        group = [r for r in runs if (r["strategy"], r["N"], r["dtype"], r["cache"]) == key]
        row: dict[str, Any] = dict(group[0])
        for key in ("wall_s", "cpu_s", "wall_vs_bon", "cpu_vs_bon", "tokens_vs_bon", "peak_rss_mb"):
            row[key] = round(statistics.median(r[key] for r in group), 2)
        row["repeats"] = len(group)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="4,8,16")
    parser.add_argument("--strategies", default="bon,beam,dvts,mcts")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--mcts-steps", type=int, default=4, help="--mcts-steps-per-solution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-delimiter", default="\n\n",
                        help="SmolLM2 rarely writes a blank line in 128 tokens: '\\n' gives trees more steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--kv-cache-mb", type=int, default=None, help="prefix cache budget (default: automatic)")
    parser.add_argument("--compare-cache", action="store_true", help="run each configuration with the cache off too")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bf16-matmul, ...")
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.step_delimiter = args.step_delimiter.encode().decode("unicode_escape")  # '\n' typed in a shell
    if args.child:
        print(json.dumps(run_child(args)))
        return

    caches = [args.kv_cache_mb, 0] if args.compare_cache else [args.kv_cache_mb]
    plan = [(s, int(b), c, d) for b in args.budgets.split(",") for d in args.dtypes.split(",") for c in caches
            for s in args.strategies.split(",")]
    runs = []
    for repeat in range(args.repeats):
        for strategy, budget, cache, dtype in plan if repeat % 2 == 0 else plan[::-1]:
            done = subprocess.run(child_command(args, strategy, budget, cache, dtype), capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{strategy} N={budget} failed:\n{done.stderr[-3000:]}")
            row = {**json.loads(done.stdout.strip().splitlines()[-1]), "repeat": repeat}
            runs.append(row)
            print(json.dumps(row), flush=True)
    rows = summarise(runs)
    print(f"\n{args.problems} GSM8K problems, embedded SmolLM2-135M ({args.dtypes}) CPU, {args.threads} thread(s), "
          f"max {args.max_tokens} tokens, T=0.8, beam width {args.beam_width}; median of {args.repeats}:\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join(sys.argv), "threads": args.threads,
                                     "machine": platform.processor() or platform.machine(),
                                     "rows": rows, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
