"""Testbed sweep with the Monte-Carlo rollout gain as the scorer (the student policies roll out).

`pumsearch sweep --scorers` takes NAME[=PATH] items separated by commas, so it cannot name the
rollout scorer's two students ("testbed:weak,testbed:strong") or its number of rollouts k. This
script runs the same sweep machinery (pumsearch.runs.grid.plan_grid, session.run_plans) with a
scorer loader that passes both, into an ordinary sweep directory that `pumsearch report` reads.
Every setting the CLI would record (sampling, depth, beam width, dataset and model identity) is
recorded the same way, so these runs sit beside the CLI's in a report.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_testbed_rollout.py \\
        --strategies beam --budgets 4,8,16 --k 4 --limit 100 --out /tmp/testbed-sweeps/rollout
    python -m pumsearch.cli report /tmp/testbed-sweeps/rollout

Expensive: each scored prefix costs k rollouts per student (here 2 x 4 continuations of up to
--max-tokens tokens), besides the policy's own step.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pumsearch.runs.grid import ScorerSpec, parse_int_list, plan_grid
from pumsearch.runs.rundir import open_run_dir
from pumsearch.runs.runner import NoProgress
from pumsearch.runs.session import DatasetChoice, check_sweep_dir, load_policy, model_identity, run_plans
from pumsearch.search.config import SearchConfig
from pumsearch.strategies import get_strategy


def settings_like_the_cli(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings `pumsearch sweep` records in sweep.json's base, CLI defaults elsewhere."""
    return {
        "temperature": args.temperature,
        "top_p": 1.0,
        "max_tokens": args.max_tokens,
        "max_step_tokens": args.max_step_tokens,
        "step_delimiter": "\n\n",
        "aggregate": "last",
        "select": None,
        "beam_width": args.beam_width,
        "max_depth": 40,
        "time_limit": None,
    }


def rollout_loader(k: int, max_tokens: int, temperature: float) -> Any:
    def load(spec: ScorerSpec, config: SearchConfig) -> Any:
        from pumsearch.scorers import load_scorer

        return load_scorer(
            "rollout",
            model=spec.path,
            k=k,
            max_tokens=max_tokens,
            temperature=temperature,
            step_delimiter=config.step_delimiter,
        )

    return load


class PrintProgress(NoProgress):
    def begin(self, label: str, total: int, already_done: int) -> None:
        print(f"{label}: {already_done}/{total} already done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="testbed:standard")
    parser.add_argument("--model", default="testbed:weak")
    parser.add_argument("--students", default="testbed:weak,testbed:strong")
    parser.add_argument("--k", type=int, default=4, help="rollouts per student and prefix")
    parser.add_argument("--strategies", default="beam")
    parser.add_argument("--budgets", default="4,8,16")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-step-tokens", type=int, default=24)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    dataset = DatasetChoice(args.dataset, limit=args.limit)
    model = model_identity(args.model, "transformers", "float32")
    # The spec names k and the rollout length: they change the scorer's values, so they are in the key.
    scorer = ScorerSpec(
        f"rollout(k={args.k},max={args.max_tokens})={args.students}", "rollout", None, args.students
    )
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    budgets = parse_int_list(args.budgets, "--budgets", minimum=1)
    seeds = parse_int_list(args.seeds, "--seeds")
    settings = settings_like_the_cli(args)
    shared = {k: v for k, v in settings.items() if k != "beam_width"}  # beam_width is beam's and DVTS's own
    options = {s: {"beam_width": args.beam_width} if "beam_width" in get_strategy(s).Settings.types() else {}
               for s in strategies}
    plans, _ = plan_grid(args.out, strategies=strategies, budgets=budgets, scorers=[scorer], seeds=seeds,
                         settings=shared, dataset=dataset.identity(), model=model, strategy_options=options)
    problems = dataset.load(None)
    base = {"settings": settings, "dataset": dataset.identity(), "model": model}
    check_sweep_dir(args.out, base, {"strategies": strategies, "budgets": budgets, "scorers": [scorer.spec],
                                     "seeds": seeds})
    for plan in plans:
        open_run_dir(plan.path, plan.spec)
    generator = load_policy(args.model, backend="transformers", device="cpu", dtype="float32", cache_dir=None,
                            trust_remote_code=False)
    tallies = run_plans(plans, problems, generator, progress=PrintProgress(), concurrency=args.concurrency,
                        batch_tokens=None, shard=None,
                        load_scorer=rollout_loader(args.k, args.max_tokens, args.temperature))
    for plan, tally in zip(plans, tallies, strict=True):
        print(f"{plan.label}: accuracy {tally.accuracy} -> {plan.path}", flush=True)


if __name__ == "__main__":
    main()
