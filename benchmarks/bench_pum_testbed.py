"""The testbed PUM against the exact step-correctness PRM, the rollout gain it learned from, and
majority vote, in Best-of-N and beam search at N = 4..64 (arithmetic testbed test chains).

Best-of-N: one Best-of-64 run per policy (generation once; the transformers backend seeds each
sample by its index, so the first N samples are what a Best-of-N run draws); every candidate is
scored by each scorer, and accuracy at N averages over the 64/N disjoint blocks of the 64, with
the project's select_candidate. Beam search: one run per scorer and N (beam width 4), through
pumsearch.api.asearch. Detours: how often the policy's steps are detours (identity steps: right
but useless), and a probe of whether the PUM prefers a progress step over a detour (the exact PRM
scores both 1.0) and over a wrong step, after gold prefixes of test chains.

    nice python benchmarks/bench_pum_testbed.py --out benchmarks/results/pum

torch uses one thread (the machine is shared). Writes <out>/comparison.json, comparison.md and
accuracy_vs_budget.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from pumsearch.api import asearch, resolve_scorer
from pumsearch.backends import load_generator
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.search.selection import Candidate, select_candidate
from pumsearch.strategies import search_config
from pumsearch.testbed import PUM_DIR, testbed_problems
from pumsearch.testbed.scorers import judge_steps
from pumsearch.testbed.tasks import detour_step, parse_question

BON_METHODS = ("single", "majority", "prm-best", "pum-best", "pum-weighted", "rollout-best", "oracle")


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def scorer_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "pum":
        return {"model": str(args.pum)}
    if name == "rollout":
        return {"model": args.students, "k": args.k, "max_tokens": args.max_tokens, "seed": args.seed}
    return {}


# -- Best-of-N ----------------------------------------------------------------------------------
async def rescore(results: list, scorer: Any) -> list[list[float]]:
    """Each result's candidates scored by ``scorer`` as complete solutions."""
    items = [ScoreItem(r.problem, r.tree.steps(c.node), complete=True) for r in results for c in r.candidates]
    scores = await scorer.score(items)
    out, i = [], 0
    for r in results:
        out.append([float(s.value) for s in scores[i : i + len(r.candidates)]])
        i += len(r.candidates)
    return out


def pick(block: list[Candidate], method: str) -> float:
    if method == "single":
        return sum(bool(c.correct) for c in block) / len(block)
    if method == "oracle":
        return float(any(bool(c.correct) for c in block))
    how = "weighted" if method.endswith("weighted") else "majority" if method == "majority" else "best"
    kind = "probability" if method.startswith("prm") else "unbounded"
    chosen = select_candidate(block, how, kind)
    return float(bool(chosen and chosen.correct))


def bon_curves(results: list, scores: dict[str, list[list[float]]], budgets: list[int]) -> dict[str, dict[int, float]]:
    table: dict[str, dict[int, float]] = {m: {} for m in BON_METHODS}
    for method in BON_METHODS:
        source = method.split("-")[0]
        for n in budgets:
            total = 0.0
            for index, result in enumerate(results):
                cands = result.candidates
                if source in scores:
                    cands = [Candidate(c.node, c.answer, s, c.correct) for c, s in zip(cands, scores[source][index],
                                                                                       strict=True)]
                blocks = [cands[i : i + n] for i in range(0, len(cands) - n + 1, n)]
                total += sum(pick(b, method) for b in blocks) / len(blocks)
            table[method][n] = round(total / len(results), 4)
    return table


def detour_share(results: list) -> dict[str, float]:
    """How often the policy's steps are detours, and how many candidates carry one."""
    steps = detours = with_detour = total = 0
    for r in results:
        chain = parse_question(r.problem.question)
        for c in r.candidates:
            labels, _ = judge_steps(r.tree.steps(c.node), chain)
            steps += len(labels)
            detours += labels.count("detour")
            with_detour += "detour" in labels
            total += 1
    return {"step_share": round(detours / max(steps, 1), 4), "candidate_share": round(with_detour / max(total, 1), 4)}


async def run_bon(problems: list[Problem], generator: Any, args: argparse.Namespace) -> dict[str, Any]:
    config = SearchConfig(strategy="bon", budget=max(args.bon_budgets), temperature=0.8, max_tokens=args.max_tokens,
                          seed=args.seed)
    started = time.perf_counter()
    results = await asearch(problems, generator=generator, scorer=resolve_scorer("testbed-prm", config), config=config,
                            batch_tokens=args.batch_tokens)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    seconds = {"generate+prm": round(time.perf_counter() - started, 1)}
    scores: dict[str, list[list[float]]] = {}
    for name in ("pum", "rollout"):
        started = time.perf_counter()
        scorer = resolve_scorer(name, config, **scorer_options(name, args))
        scores[name] = await rescore(results, scorer)
        await scorer.aclose()
        seconds[name] = round(time.perf_counter() - started, 1)
    return {"table": bon_curves(results, scores, args.bon_budgets), "seconds": seconds,
            "detours": detour_share(results)}


# -- beam search ---------------------------------------------------------------------------------
async def run_beam(problems: list[Problem], generator: Any, args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, dict[int, dict[str, float]]] = {}
    plan = [("pum", args.beam_budgets), ("testbed-prm", args.beam_budgets), ("rollout", args.rollout_beam_budgets)]
    for name, budgets in plan:
        scorer = None
        for n in budgets:
            config = search_config(strategy="beam", budget=n, beam_width=args.beam_width, temperature=0.8,
                                   max_tokens=args.max_tokens, max_step_tokens=args.max_step_tokens,
                                   max_depth=args.max_depth, seed=args.seed)
            scorer = scorer or resolve_scorer(name, config, **scorer_options(name, args))
            started = time.perf_counter()
            # rollouts multiply the rows of a call: fewer problems at once keeps batches small
            results = await asearch(problems, generator=generator, scorer=scorer, config=config,
                                    concurrency=4 if name == "rollout" else 16, batch_tokens=args.batch_tokens)
            ok = [r for r in results if not isinstance(r, BaseException)]
            if len(ok) < len(results):
                raise next(r for r in results if isinstance(r, BaseException))
            table.setdefault(name, {})[n] = {
                "accuracy": round(sum(bool(r.correct) for r in ok) / len(ok), 4),
                "generated_tokens_per_problem": round(sum(r.counters.generated_tokens for r in ok) / len(ok), 1),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"beam {name} N={n}: {table[name][n]}", flush=True)
        if scorer is not None:
            await scorer.aclose()
    return table


# -- detour probe ----------------------------------------------------------------------------------
async def detour_probe(problems: list[Problem], args: argparse.Namespace) -> dict[str, Any]:
    """After a gold prefix: does the PUM score the progress step above a detour step (which the
    exact PRM scores equally) and above a wrong step (which the PRM scores 0)?"""
    rng = random.Random(args.seed)
    items, kinds = [], []
    for problem in problems:
        chain = parse_question(problem.question)
        steps = chain.gold_steps()[:-1]  # the arithmetic steps, without the answer
        cut = rng.randrange(len(steps))
        value = chain.values()[cut]
        prefix = tuple(steps[:cut])
        wrong = steps[cut].rsplit("=", 1)[0] + f"= {chain.values()[cut + 1] + rng.choice([-2, -1, 1, 2])}"
        for kind, step in (("progress", steps[cut]), ("detour", detour_step(value, rng.choice("+-*"))),
                           ("wrong", wrong)):
            items.append(ScoreItem(problem, (*prefix, step)))
            kinds.append(kind)
    config = SearchConfig()
    scorer = resolve_scorer("pum", config, **scorer_options("pum", args))
    values = [float(s.value) for s in await scorer.score(items)]
    await scorer.aclose()
    triples = [values[i : i + 3] for i in range(0, len(values), 3)]
    return {
        "probes": len(triples),
        "pum_progress_over_detour": round(sum(p > d for p, d, _ in triples) / len(triples), 4),
        "pum_progress_over_wrong": round(sum(p > w for p, _, w in triples) / len(triples), 4),
        "pum_detour_over_wrong": round(sum(d > w for _, d, w in triples) / len(triples), 4),
        "prm_progress_over_detour": 0.0,  # the exact PRM scores a detour 1.0, like progress: always a tie
    }


# -- output ----------------------------------------------------------------------------------------
def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(data["policies"])
    fig, axes = plt.subplots(len(policies), 2, figsize=(11, 4 * len(policies)), squeeze=False)
    for row, policy in enumerate(policies):
        part = data["policies"][policy]
        ax = axes[row][0]
        for method, points in part.get("bon", {}).get("table", {}).items():
            ax.plot([int(n) for n in points], list(points.values()), marker="o", label=method,
                    linestyle="--" if method in ("oracle", "rollout-best") else "-")
        ax.set_title(f"{policy} policy: Best-of-N")
        ax = axes[row][1]
        for name, points in part.get("beam", {}).items():
            ax.plot([int(n) for n in points], [p["accuracy"] for p in points.values()], marker="o", label=name)
        ax.set_title(f"{policy} policy: beam search (M={data['settings']['beam_width']})")
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("N")
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# Testbed PUM vs exact PRM, rollout gain and majority (`{data['settings']['spec']}`)", ""]
    for policy, part in data["policies"].items():
        if "bon" in part:
            table = part["bon"]["table"]
            budgets = list(next(iter(table.values())))
            lines += [f"## {policy} policy, Best-of-N (seconds: {part['bon']['seconds']})", "",
                      "| method | " + " | ".join(f"N={n}" for n in budgets) + " |", "|---|" + "---|" * len(budgets)]
            lines += [f"| {m} | " + " | ".join(f"{v:.3f}" for v in pts.values()) + " |" for m, pts in table.items()]
            lines += ["", f"Detours in the policy's samples: {part['bon']['detours']}", ""]
        if "beam" in part:
            budgets = sorted({int(n) for pts in part["beam"].values() for n in pts})
            lines += [f"## {policy} policy, beam search (accuracy; generated tokens per problem)", "",
                      "| scorer | " + " | ".join(f"N={n}" for n in budgets) + " |", "|---|" + "---|" * len(budgets)]
            for name, pts in part["beam"].items():
                cells = [f"{pts[n]['accuracy']:.3f} ({pts[n]['generated_tokens_per_problem']:.0f})" if n in pts
                         else "" for n in budgets]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    if "probe" in data:
        lines += ["## Detour probe (gold prefixes of test chains)", "", "```json",
                  json.dumps(data["probe"], indent=2), "```", ""]
    lines += ["Commands (in order; nice, one torch thread):", "", "```bash", *data["commands"], "```", ""]
    return "\n".join(lines)


def merge_ints(data: Any) -> Any:
    """JSON turns int keys into strings: turn them back so reruns of one part merge cleanly."""
    if isinstance(data, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): merge_ints(v) for k, v in data.items()}
    return data


async def main_async(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "comparison.json"
    data = merge_ints(json.loads(store.read_text())) if store.exists() else {"policies": {}}
    problems = testbed_problems(args.spec)
    data["settings"] = {"spec": args.spec, "problems": len(problems), "pum": str(args.pum), "students": args.students,
                        "k": args.k, "beam_width": args.beam_width, "max_tokens": args.max_tokens,
                        "max_step_tokens": args.max_step_tokens, "max_depth": args.max_depth, "seed": args.seed,
                        "batch_tokens": args.batch_tokens}
    command = "python benchmarks/bench_pum_testbed.py " + " ".join(sys.argv[1:])
    data["commands"] = [c for c in data.get("commands", []) if c != command] + [command]
    parts = set(args.parts.split(","))
    for policy in args.policies.split(","):
        generator = load_generator(f"testbed:{policy}")
        entry = data["policies"].setdefault(policy, {})
        if "bon" in parts:
            entry["bon"] = await run_bon(problems, generator, args)
        if "beam" in parts:  # merged per scorer and N, so a later run can add budgets
            for name, points in (await run_beam(problems, generator, args)).items():
                entry.setdefault("beam", {}).setdefault(name, {}).update(points)
                entry["beam"][name] = dict(sorted(entry["beam"][name].items()))
        store.write_text(json.dumps(data, indent=2) + "\n")
    if "probe" in parts:
        data["probe"] = await detour_probe(problems, args)
    store.write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "comparison.md").write_text(markdown(data))
    plot(data, args.out / "accuracy_vs_budget.png")
    print(markdown(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="ops=3-4,n=100,split=test,seed=0")
    parser.add_argument("--policies", default="weak")
    parser.add_argument("--parts", default="bon,beam,probe")
    parser.add_argument("--pum", type=Path, default=PUM_DIR)
    parser.add_argument("--students", default="testbed:weak,testbed:strong")
    parser.add_argument("--k", type=int, default=4, help="rollouts per prefix and student (rollout scorer)")
    parser.add_argument("--bon-budgets", type=ints, default=[4, 8, 16, 32, 64])
    parser.add_argument("--beam-budgets", type=ints, default=[4, 8, 16, 32, 64])
    parser.add_argument("--rollout-beam-budgets", type=ints, default=[4, 8])
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-step-tokens", type=int, default=16)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=8192, help="token cap of one backend batch "
                        "(large CPU batches are slower per row)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pum"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
