"""How many CPU threads the README's first command should use: one thread, every core, and every
core with a passive OpenMP wait policy, run interleaved (each round runs every setting once, in a
rotated order, so a burst of load from other jobs hits all settings alike).

    python benchmarks/bench_threads.py --rounds 3 --out benchmarks/results/threads/run.json
    python benchmarks/bench_threads.py --settings one,passive,default   # without the slow spinning one

Each run is a fresh ``pumsearch solve`` process (model load included, as a user sees it) with
``--json``; the record's counters give the backend time and the generated tokens, and the answers
and token counts of the settings must agree (the thread count must not change the output). The load
average (1 minute) is read before and after each run: write it down with the figures, and say
whether other jobs were running. Writes the JSON named by --out and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMAND = ["solve", "What is 7 * 8?", "--budget", "4", "--max-tokens", "64"]


def settings(cores: int) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """key -> (name, extra flags, extra environment)."""
    return {
        "one": ("1 thread", ["--threads", "1"], {}),
        "all": (f"{cores} threads, OMP_WAIT_POLICY=ACTIVE (spinning)", ["--threads", str(cores)],
                {"OMP_WAIT_POLICY": "ACTIVE"}),
        "passive": (f"{cores} threads, OMP_WAIT_POLICY=PASSIVE", ["--threads", str(cores)],
                    {"OMP_WAIT_POLICY": "PASSIVE"}),
        "default": ("default (no --threads, no OpenMP variables)", [], {}),
    }


def clean_environment() -> dict[str, str]:
    """The caller's environment without the thread variables, so each setting decides alone."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_once(flags: list[str], env: dict[str, str], timeout: float) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pumsearch.cli", *COMMAND, "--json", *flags], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pumsearch exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    counters = record["counters"]
    return {
        "wall_s": round(wall, 2),
        "backend_s": round(counters["backend_time"], 2),
        "generated_tokens": counters["generated_tokens"],
        "answer": record.get("prediction"),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def table(results: dict[str, list[dict[str, object]]]) -> str:
    lines = ["| setting | runs | wall s (median) | backend s (median) | backend s (each run) | load avg (1 min) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, runs in results.items():
        walls = [float(r["wall_s"]) for r in runs]  # type: ignore[arg-type]
        backend = [float(r["backend_s"]) for r in runs]  # type: ignore[arg-type]
        loads = [float(r["load_before"]) for r in runs] + [float(r["load_after"]) for r in runs]  # type: ignore[arg-type]
        lines.append(f"| {name} | {len(runs)} | {statistics.median(walls):.1f} | {statistics.median(backend):.1f} | "
                     f"{', '.join(f'{b:.1f}' for b in backend)} | {min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="Runs of every setting (interleaved).")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds before one run is abandoned.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads/run.json"))
    parser.add_argument("--machine", default="", help="A note on the machine: shared or quiet, what else ran.")
    parser.add_argument("--settings", default="one,all,passive,default",
                        help="Which settings, comma-separated: one, all (spinning), passive, default.")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    env = clean_environment()
    every = settings(cores)
    named = {every[key][0]: every[key][1:] for key in args.settings.split(",")}
    results: dict[str, list[dict[str, object]]] = {name: [] for name in named}
    subprocess.run([sys.executable, "-m", "pumsearch.cli", *COMMAND, "--json", "--threads", "1"], env=env,
                   capture_output=True, check=True, timeout=args.timeout)  # converts the model, warms caches
    names = list(named)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            flags, extra_env = named[name]
            outcome = run_once(flags, {**env, **extra_env}, args.timeout)
            results[name].append(outcome)
            print(f"round {round_index + 1}: {name}: {outcome}", flush=True)
    outputs = {(r["answer"], r["generated_tokens"]) for runs in results.values() for r in runs}
    report = {
        "command": "pumsearch " + " ".join(COMMAND),
        "cores": cores,
        "rounds": args.rounds,
        "machine": args.machine,
        "same_output_everywhere": len(outputs) == 1,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    text = table(results)
    args.out.with_suffix(".md").write_text(f"`{report['command']}`, {cores} cores, {args.rounds} rounds; "
                                           f"{args.machine}\n\n{text}\n")
    print(text)
    print(f"same output in every run: {report['same_output_everywhere']}")


if __name__ == "__main__":
    main()
