"""Accuracy versus N on the arithmetic testbed: Best-of-N with majority vote, the exact step PRM
(best and weighted), and the outcome verifier (oracle), for the shipped weak and strong policies.

One Best-of-64 run per policy through pumsearch.api.asearch (exact PRM scores on every
candidate); the curves for N = 1, 2, 4, ..., 64 average over the 64/N disjoint blocks of the 64
samples (the transformers backend seeds each sample by its index, so the first N samples of a
Best-of-64 run are the samples a Best-of-N run draws). Selection uses the project's own
select_candidate.

    python benchmarks/bench_testbed.py --spec standard --out benchmarks/results/testbed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from pumsearch.api import asearch, resolve_scorer
from pumsearch.backends import load_generator
from pumsearch.search.config import SearchConfig
from pumsearch.search.selection import select_candidate
from pumsearch.testbed import testbed_problems

METHODS = ("single", "majority", "prm-best", "prm-weighted", "verifier-best")


def pick(block: list, method: str) -> float:
    """1.0 when ``method`` picks a right answer from ``block`` (``single``: the share of right ones)."""
    if method == "single":
        return sum(bool(c.correct) for c in block) / len(block)  # expected accuracy of one sample
    if method == "verifier-best":
        return float(any(bool(c.correct) for c in block))  # the oracle: some candidate is right
    how = {"majority": "majority", "prm-best": "best", "prm-weighted": "weighted"}[method]
    chosen = select_candidate(block, how)
    return float(bool(chosen and chosen.correct))


def curves(results: list, budgets: list[int]) -> dict[str, dict[int, float]]:
    table: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    for method in METHODS:
        for n in budgets:
            total = 0.0
            for result in results:
                blocks = [result.candidates[i : i + n] for i in range(0, len(result.candidates) - n + 1, n)]
                total += sum(pick(b, method) for b in blocks) / len(blocks)
            table[method][n] = round(total / len(results), 4)
    return table


async def run_policy(policy: str, spec: str, max_n: int, seed: int, threads: int) -> tuple[list, float]:
    import torch

    torch.set_num_threads(threads)
    config = SearchConfig(strategy="bon", budget=max_n, temperature=0.8, max_tokens=64, seed=seed)
    started = time.perf_counter()
    results = await asearch(
        testbed_problems(spec),
        generator=load_generator(f"testbed:{policy}"),
        scorer=resolve_scorer("testbed-prm", config),
        config=config,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return results, time.perf_counter() - started


def plot(tables: dict[str, dict[str, dict[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4), sharey=True)
    for ax, (policy, table) in zip(list(getattr(axes, "flat", [axes])), tables.items(), strict=True):
        for method, points in table.items():
            ax.plot(list(points), list(points.values()), marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{policy} policy, Best-of-N")
        ax.set_xlabel("N (solutions)")
        ax.grid(alpha=0.3)
    axes_list = list(getattr(axes, "flat", [axes]))
    axes_list[0].set_ylabel("accuracy")
    axes_list[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(tables: dict[str, dict[str, dict[int, float]]], meta: dict) -> str:
    lines = [
        f"# Testbed Best-of-N curves (`{meta['spec']}`, {meta['problems']} chains, seed {meta['seed']})",
        "",
    ]
    for policy, table in tables.items():
        budgets = list(next(iter(table.values())))
        lines += [
            f"## {policy} policy ({meta['seconds'][policy]:.0f} s for the Best-of-{meta['max_n']} run)",
            "",
            "| method | " + " | ".join(f"N={n}" for n in budgets) + " |",
            "|---|" + "---|" * len(budgets),
        ]
        lines += [
            f"| {m} | " + " | ".join(f"{v:.3f}" for v in points.values()) + " |"
            for m, points in table.items()
        ]
        lines.append("")
    lines += ["Command:", "", "```bash", meta["command"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="standard")
    parser.add_argument("--policies", default="weak,strong")
    parser.add_argument("--max-n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/testbed"))
    args = parser.parse_args()
    budgets = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256) if n <= args.max_n]
    tables, seconds = {}, {}
    for policy in args.policies.split(","):
        results, seconds[policy] = asyncio.run(
            run_policy(policy, args.spec, args.max_n, args.seed, args.threads)
        )
        tables[policy] = curves(results, budgets)
        print(policy, json.dumps(tables[policy]), f"{seconds[policy]:.0f}s", flush=True)
    command = (
        f"python benchmarks/bench_testbed.py --spec {args.spec} --policies {args.policies} "
        f"--max-n {args.max_n} --seed {args.seed} --out {args.out}"
    )
    meta = {
        "spec": args.spec,
        "problems": len(testbed_problems(args.spec)),
        "seed": args.seed,
        "max_n": args.max_n,
        "seconds": seconds,
        "command": command,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bon_" + "-".join(tables)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "tables": tables}, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(tables, meta))
    plot(tables, args.out / f"{stem}.png")


if __name__ == "__main__":
    main()
