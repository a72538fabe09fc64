"""Per-row cost of large transformers batches, and PUM labelling speed (issues 14 and 17).

1. Rows: backend calls of R rows (64 and 2,000 by default; 6 rollouts per distinct prompt, as
   in labelling; the small size is called up to 10 times per measurement) on a testbed policy,
   end of sequence off so every row generates exactly --max-tokens tokens. Reports the cost per
   row (milliseconds; rows generate equal tokens, so it is also tokens per second); the goal is
   that 2,000 rows cost no more per row than 64.
2. Labelling: `pum label` on testbed chains at --chunk 3 and --chunk 15 (one backend call then
   carries ~2,000 rollout rows); student rollouts per second.

Configurations alternate within each repeat (so a burst of load on a shared machine hits all of
them) and the prefix cache is emptied before every measurement (no run profits from another).
Seconds are wall time and process CPU time (one torch thread: CPU time is what the run itself
spent, the better figure on a machine shared with other jobs). Runs against any checkout of
pumsearch: put it first on PYTHONPATH to measure the code before a change.

    OMP_NUM_THREADS=1 python benchmarks/bench_rows.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not any(Path(p, "pumsearch").is_dir() for p in sys.path[1:] if p):  # else: the checkout on PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "backend" / "rows_and_labelling.json"


def _clear_prefix_cache(generator: Any) -> None:
    cache = getattr(generator, "prefix_cache", None)  # absent before the prefix cache existed
    if cache is not None:
        cache.clear()


def _timed(call: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure_rows(generator: Any, problems: list[Any], rows: int, max_tokens: int, calls: int) -> dict[str, Any]:
    """``calls`` calls of ``rows`` rows each, on distinct problems (a small size is called several
    times, so both sizes do similar work and a burst of load weighs on both alike)."""
    from pumsearch.search.protocols import GenerationRequest, SamplingParams

    params = SamplingParams(temperature=0.8, max_tokens=max_tokens)
    per_call = max(rows // 6, 1)
    batches = []
    for call in range(calls):
        batch = []
        for i in range(call * per_call, (call + 1) * per_call):
            text, ids = generator.chat_prompt(problems[i % len(problems)].question, None)
            batch.append(GenerationRequest(text, ids, min(6, rows), params, seed=i))
        batches.append(batch)
    _clear_prefix_cache(generator)
    eos_ids, generator.eos_ids = generator.eos_ids, set()
    try:
        outputs, wall, cpu = _timed(lambda: [out for batch in batches for out in generator.generate_sync(batch)])
    finally:
        generator.eos_ids = eos_ids
    tokens = sum(c.num_tokens for out in outputs for c in out.completions)
    n = sum(len(out.completions) for out in outputs)
    return {"rows_per_call": n // calls, "calls": calls, "tokens": tokens, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "ms_per_row_cpu": round(1000 * cpu / n, 3), "ms_per_row_wall": round(1000 * wall / n, 3),
            "tok_per_s_cpu": round(tokens / cpu, 1)}


def measure_labelling(policies: list[Any], problems: list[Any], chunk: int, args: argparse.Namespace) -> dict[str, Any]:
    from pumsearch.pum.label import LabelSettings, label_to_file, read_records

    settings = LabelSettings(trajectories=args.trajectories, cuts=3, rollouts=args.rollouts, max_tokens=args.max_tokens)
    for generator in policies:
        _clear_prefix_cache(generator)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.jsonl"
        _, wall, cpu = _timed(lambda: asyncio.run(label_to_file(problems, policies, policies, settings, out,
                                                                chunk=chunk)))
        records = read_records(out)
    rollouts = sum(s["rollouts"] for r in records for s in r["cost"]["students"])
    return {"chunk": chunk, "problems": len(records), "rollouts": rollouts, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "rollouts_per_s_wall": round(rollouts / wall, 1),
            "rollouts_per_s_cpu": round(rollouts / cpu, 1)}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="testbed:weak", help="policy for the rows benchmark")
    parser.add_argument("--rows", default="64,2000")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--label-problems", type=int, default=30, help="0 skips the labelling benchmark")
    parser.add_argument("--chunks", default="3,15")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import pumsearch
    from pumsearch.backends import load_generator
    from pumsearch.datasets import load_problems

    generator = load_generator(args.model)
    problems = load_problems("testbed:ops=2-5,n=400,split=train,seed=1")
    label_problems = load_problems(f"testbed:ops=2-5,n={args.label_problems},split=train,seed=1,detours=0.1") \
        if args.label_problems else []
    policies = [generator, load_generator("testbed:strong")] if label_problems else []
    sizes, chunks = [int(r) for r in args.rows.split(",")], [int(c) for c in args.chunks.split(",")]
    rows_runs: dict[int, list[dict[str, Any]]] = {r: [] for r in sizes}
    label_runs: dict[int, list[dict[str, Any]]] = {c: [] for c in chunks}
    for repeat in range(args.repeats):
        for rows in sizes if repeat % 2 == 0 else sizes[::-1]:
            calls = max(1, min(10, max(sizes) // rows))
            rows_runs[rows].append(measure_rows(generator, problems, rows, args.max_tokens, calls))
            print(json.dumps({"repeat": repeat, **rows_runs[rows][-1]}), flush=True)
        for chunk in (chunks if repeat % 2 == 0 else chunks[::-1]) if label_problems else []:
            label_runs[chunk].append(measure_labelling(policies, label_problems, chunk, args))
            print(json.dumps({"repeat": repeat, **label_runs[chunk][-1]}), flush=True)

    small = sizes[0]
    print(f"\nRows ({args.model}, {args.max_tokens} tokens per row, end of sequence off; median of {args.repeats}):\n")
    print(f"| rows | ms per row (CPU) | vs {small} rows | tok/s (CPU) | ms per row (wall) | vs {small} rows |")
    print("|---|---|---|---|---|---|")
    for rows in sizes:
        cpu, wall = _median(rows_runs[rows], "ms_per_row_cpu"), _median(rows_runs[rows], "ms_per_row_wall")
        print(f"| {rows} | {cpu} | {cpu / _median(rows_runs[small], 'ms_per_row_cpu'):.2f} | "
              f"{_median(rows_runs[rows], 'tok_per_s_cpu')} | {wall} | "
              f"{wall / _median(rows_runs[small], 'ms_per_row_wall'):.2f} |")
    if label_problems:
        print(f"\nLabelling ({len(label_problems)} testbed chains, policies and students testbed:weak,testbed:strong, "
              f"{args.trajectories} trajectories, 3 cuts, {args.rollouts} rollouts):\n")
        print("| chunk | rollouts | rollouts/s (CPU) | rollouts/s (wall) |")
        print("|---|---|---|---|")
        for chunk in chunks:
            runs = label_runs[chunk]
            print(f"| {chunk} | {runs[0]['rollouts']} | {_median(runs, 'rollouts_per_s_cpu')} | "
                  f"{_median(runs, 'rollouts_per_s_wall')} |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mb:.0f} MiB; threads {args.threads}; pumsearch from {Path(pumsearch.__file__).parent}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": " ".join(sys.argv), "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "pumsearch": str(Path(pumsearch.__file__).parent), "peak_rss_mb": round(peak_mb),
        "rows": {str(k): v for k, v in rows_runs.items()}, "labelling": {str(k): v for k, v in label_runs.items()},
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
