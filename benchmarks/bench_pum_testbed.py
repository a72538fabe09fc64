"""Testbed PUMs against the exact step-correctness PRM and majority vote, in Best-of-N and beam
search at N = 4..64, over several run seeds (test chains; weak policy; T = 0.8).

Best-of-N: one Best-of-64 run per seed (generation once; the transformers backend seeds each sample
by its index, so the first N samples are what a Best-of-N run draws), every candidate scored by the
exact PRM and by each PUM; accuracy at N averages the 64/N disjoint blocks of the 64, with the
project's select_candidate (majority, best, weighted). Beam search: one run per scorer, N and seed
through pumsearch.api.asearch (beam width 4). The rollout gain (``--rollout-beam-budgets``) is the
PUMs' training target; it needs the reference answers and costs student rollouts per prefix.
``--rollout-token-cap solution`` gives its rollouts what the prefix leaves of --max-tokens, as the
search does. Beam scorer ``exact-progress`` is the exact PRM with detours scored wrong (a yardstick
for usefulness; ``--scorer-option detours=wrong``); ``prm>NAME`` is the exact PRM with its ties broken
by the PUM NAME (``PrmThenPum``).

The ``parting`` world (docs/testbed.md): ``--spec parting,n=100 --max-tokens 28
--rollout-token-cap solution``.

Every figure is the mean over (problem, seed) records with one standard error (sample standard
deviation / sqrt(records)), as ``pumsearch report`` computes it. Results are stored per part,
scorer, N and seed in <out>/comparison.json as they finish, so a rerun skips what is done (delete
an entry to redo it). Writes comparison.md and accuracy_vs_budget.png beside it.

    nice python benchmarks/bench_pum_testbed.py --pum new=pumsearch/testbed/pum --seeds 0,1,2 \\
        --out benchmarks/results/pum

torch uses one thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from pumsearch.api import asearch, resolve_scorer
from pumsearch.backends import load_generator
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.search.selection import Candidate, select_candidate
from pumsearch.strategies import search_config
from pumsearch.testbed import PUM_DIR, testbed_problems
from pumsearch.testbed.scorers import judge_steps
from pumsearch.testbed.tasks import parse_question


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def mean_se(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"accuracy": round(mean, 4), "se": round(math.sqrt(var / n), 4), "records": n}


def config_for(args: argparse.Namespace, strategy: str, budget: int, seed: int) -> SearchConfig:
    extra = {"beam_width": args.beam_width} if strategy == "beam" else {}
    return search_config(strategy=strategy, budget=budget, temperature=0.8, max_tokens=args.max_tokens,
                         max_step_tokens=args.max_step_tokens, max_depth=args.max_depth, seed=seed, **extra)


def scorer_for(name: str, config: SearchConfig, args: argparse.Namespace) -> Any:
    if name in args.pums:
        return resolve_scorer("pum", config, model=args.pums[name])
    if name == "rollout":
        return resolve_scorer("rollout", config, model=args.students, k=args.k, max_tokens=args.max_tokens,
                              seed=config.seed, token_cap=args.rollout_token_cap)
    if name == "exact-progress":
        return resolve_scorer("testbed-prm", config, detours="wrong")
    if name.startswith("prm>") and name[4:] in args.pums:
        pum = resolve_scorer("pum", config, model=args.pums[name[4:]])
        return PrmThenPum(resolve_scorer("testbed-prm", config), pum)
    return resolve_scorer(name, config)


class PrmThenPum:
    """Beam scorer ``prm>NAME``: the exact PRM, its ties broken by the PUM NAME (value = PRM value +
    sigmoid(PUM value) / 2, so the PRM's verdict always dominates). Whether it beats the exact PRM alone
    says whether the PUM sees, among the prefixes the PRM calls right, what the PRM misses."""

    value_kind = "unbounded"
    needs_reference = False

    def __init__(self, prm: Any, pum: Any) -> None:
        self.prm, self.pum = prm, pum
        self.identity = f"{prm.identity}>{pum.identity}"

    async def score(self, items: list[ScoreItem]) -> list[Score]:
        exact, learned = await self.prm.score(items), await self.pum.score(items)
        return [Score(float(a.value) + 0.25 * (1.0 + math.tanh(float(b.value) / 2)))
                for a, b in zip(exact, learned, strict=True)]

    async def aclose(self) -> None:
        await self.prm.aclose()
        await self.pum.aclose()


def checked(results: list) -> list:
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return results


# -- Best-of-N ----------------------------------------------------------------------------------
async def rescore(results: list, scorer: Any) -> list[list[float]]:
    """Each result's candidates scored by ``scorer`` as complete solutions."""
    items = [ScoreItem(r.problem, r.tree.steps(c.node), complete=True) for r in results for c in r.candidates]
    scores = await scorer.score(items)
    out, i = [], 0
    for r in results:
        out.append([float(s.value) for s in scores[i: i + len(r.candidates)]])
        i += len(r.candidates)
    return out


def block_value(cands: list[Candidate], n: int, how: str, kind: str) -> float:
    """Mean over the disjoint blocks of n candidates of whether ``how`` picks a right answer."""
    blocks = [cands[i: i + n] for i in range(0, len(cands) - n + 1, n)]
    if how == "single":
        return sum(bool(c.correct) for c in cands[: len(blocks) * n]) / (len(blocks) * n)
    if how == "oracle":
        return sum(any(bool(c.correct) for c in b) for b in blocks) / len(blocks)
    picks = [select_candidate(b, how, kind) for b in blocks]
    return sum(bool(p is not None and p.correct) for p in picks) / len(blocks)


def bon_records(results: list, scores: dict[str, list[list[float]]], budgets: list[int]) -> dict[str, dict]:
    """Per method and N, one value per problem (this seed)."""
    methods: dict[str, tuple[str, str, str]] = {"single": ("prm", "single", "probability"),
                                                "majority": ("prm", "majority", "probability"),
                                                "oracle": ("prm", "oracle", "probability"),
                                                "prm-best": ("prm", "best", "probability")}
    for name in scores:
        if name != "prm":
            methods[f"{name}-best"] = (name, "best", "unbounded")
            methods[f"{name}-weighted"] = (name, "weighted", "unbounded")
    out: dict[str, dict] = {}
    for method, (source, how, kind) in methods.items():
        for n in budgets:
            values = []
            for index, result in enumerate(results):
                cands = [Candidate(c.node, c.answer, s, c.correct)
                         for c, s in zip(result.candidates, scores[source][index], strict=True)]
                values.append(block_value(cands, n, how, kind))
            out.setdefault(method, {})[str(n)] = values
    return out


async def run_bon(problems: list[Problem], generator: Any, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    config = config_for(args, "bon", max(args.bon_budgets), seed)
    started = time.perf_counter()
    prm = resolve_scorer("testbed-prm", config)
    results = checked(await asearch(problems, generator=generator, scorer=prm, config=config,
                                    batch_tokens=args.batch_tokens))
    seconds = {"generate+prm": round(time.perf_counter() - started, 1)}
    scores = {"prm": [[float(c.score) for c in r.candidates] for r in results]}
    for name in args.pums:
        started = time.perf_counter()
        scorer = scorer_for(name, config, args)
        scores[name] = await rescore(results, scorer)
        await scorer.aclose()
        seconds[name] = round(time.perf_counter() - started, 1)
    return {"records": bon_records(results, scores, args.bon_budgets), "seconds": seconds}


# -- beam search ---------------------------------------------------------------------------------
async def run_beam(problems: list[Problem], generator: Any, name: str, n: int, seed: int,
                   args: argparse.Namespace) -> dict[str, Any]:
    config = config_for(args, "beam", n, seed)
    scorer = scorer_for(name, config, args)
    started = time.perf_counter()
    # rollouts multiply the rows of a call: fewer problems at once keeps batches small
    results = checked(await asearch(problems, generator=generator, scorer=scorer, config=config,
                                    concurrency=4 if name == "rollout" else 16, batch_tokens=args.batch_tokens))
    await scorer.aclose()
    return {"records": [float(bool(r.correct)) for r in results],
            "returned": [returned_beams(r) for r in results],
            "generated_tokens_per_problem": round(sum(r.counters.generated_tokens for r in results) / len(results), 1),
            "seconds": round(time.perf_counter() - started, 1)}


def returned_beams(result: Any) -> dict[str, float]:
    """Of the beams a search returned: the share with a detour on their path and the share cut by
    --max-tokens before an answer (how a detour costs the answer under a tight cap)."""
    chain = parse_question(result.problem.question)
    paths = [result.tree.steps(c.node) for c in result.candidates]
    detoured = sum("detour" in judge_steps(steps, chain)[0] for steps in paths)
    cut = sum(c.answer is None and result.tree[c.node].get("finish_reason") == "length" for c in result.candidates)
    count = max(len(paths), 1)
    return {"detour": round(detoured / count, 4), "cut": round(cut / count, 4)}


# -- tables --------------------------------------------------------------------------------------
def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """Pooled mean ± SE per method and N over every finished seed."""
    out: dict[str, Any] = {"bon": {}, "beam": {}}
    bon_seeds = data.get("bon", {})
    for seed_part in bon_seeds.values():
        for method, points in seed_part["records"].items():
            for n, values in points.items():
                out["bon"].setdefault(method, {}).setdefault(n, []).extend(values)
    out["bon"] = {m: {n: {**mean_se(v), "seeds": len(bon_seeds)} for n, v in sorted(p.items(), key=lambda x: int(x[0]))}
                  for m, p in out["bon"].items()}
    for name, by_n in data.get("beam", {}).items():
        for n, seeds in sorted(by_n.items(), key=lambda x: int(x[0])):
            values = [v for part in seeds.values() for v in part["records"]]
            tokens = [part["generated_tokens_per_problem"] for part in seeds.values()]
            out["beam"].setdefault(name, {})[n] = {**mean_se(values), "seeds": len(seeds),
                                                   "tokens_per_problem": round(sum(tokens) / len(tokens))}
            returned = [r for part in seeds.values() for r in part.get("returned", [])]
            for key in ("detour", "cut"):
                if returned:
                    out.setdefault(f"beam_returned_{key}", {}).setdefault(name, {})[n] = {
                        **mean_se([r[key] for r in returned]), "seeds": len(seeds)}
    out["beam_minus_prm"] = paired_with_prm(data.get("beam", {}))
    return out


def paired_with_prm(beam: dict[str, Any], reference: str = "testbed-prm") -> dict[str, Any]:
    """Each beam scorer's accuracy minus the exact PRM's, paired by (problem, seed) over the seeds
    both have at that N: mean difference ± one standard error of the differences."""
    out: dict[str, Any] = {}
    for name, by_n in beam.items():
        if name == reference:
            continue
        for n, seeds in sorted(by_n.items(), key=lambda x: int(x[0])):
            ref = beam.get(reference, {}).get(n, {})
            shared = [seed for seed in seeds if seed in ref]
            diffs = [a - b for seed in shared
                     for a, b in zip(seeds[seed]["records"], ref[seed]["records"], strict=True)]
            if diffs:
                out.setdefault(name, {})[n] = {**mean_se(diffs), "seeds": len(shared)}
    return out


def markdown(data: dict[str, Any], summary: dict[str, Any]) -> str:
    s = data["settings"]
    lines = [f"# Testbed PUMs vs exact PRM and majority (`{s['spec']}`, weak policy, T = 0.8, "
             f"at most {s['max_tokens']} tokens per solution)", "",
             f"Seeds {s['seeds']}; mean over (problem, seed) records ± one standard error. PUMs: "
             + ", ".join(f"`{k}` = {v}" for k, v in s["pums"].items()) + ".", ""]
    parts = (("bon", "Best-of-N"), ("beam", "Beam search (width 4)"),
             ("beam_minus_prm", "Beam search: accuracy minus the exact PRM's, paired by problem and seed"),
             ("beam_returned_detour", "Beam search: share of the returned beams with a detour"),
             ("beam_returned_cut", "Beam search: share of the returned beams cut by --max-tokens before an answer"))
    for part, title in parts:
        table = summary.get(part)
        if not table:
            continue
        budgets = sorted({int(n) for pts in table.values() for n in pts})
        lines += [f"## {title}", "", "| method | " + " | ".join(f"N={n}" for n in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for method, pts in table.items():
            sign = "+" if part == "beam_minus_prm" else ""
            cells = [f"{pts[str(n)]['accuracy']:{sign}.3f} ± {pts[str(n)]['se']:.3f}" if str(n) in pts else ""
                     for n in budgets]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Commands (nice, one torch thread):", "", "```bash", *data["commands"], "```", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, part, title in ((axes[0], "bon", "Best-of-N"), (axes[1], "beam", "beam search (M = 4)")):
        for method, pts in summary[part].items():
            ns = [int(n) for n in pts]
            ys = [p["accuracy"] for p in pts.values()]
            ax.errorbar(ns, ys, yerr=[p["se"] for p in pts.values()], marker="o", capsize=3, label=method,
                        linestyle="--" if method in ("oracle", "single") else "-")
        ax.set_title(f"weak policy: {title}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "comparison.json"
    data = json.loads(store.read_text()) if store.exists() else {}
    problems = testbed_problems(args.spec)
    data["settings"] = {"spec": args.spec, "problems": len(problems), "pums": args.pums, "seeds": args.seeds,
                        "students": args.students, "k": args.k, "rollout_token_cap": args.rollout_token_cap,
                        "beam_width": args.beam_width,
                        "max_tokens": args.max_tokens, "max_step_tokens": args.max_step_tokens,
                        "max_depth": args.max_depth, "batch_tokens": args.batch_tokens}
    command = "python benchmarks/bench_pum_testbed.py " + " ".join(sys.argv[1:])
    data["commands"] = [c for c in data.get("commands", []) if c != command] + [command]
    generator = load_generator("testbed:weak")

    def save() -> None:
        store.write_text(json.dumps(data) + "\n")

    parts = set(args.parts.split(","))
    for seed in args.seeds:
        if "bon" in parts and str(seed) not in data.setdefault("bon", {}):
            data["bon"][str(seed)] = await run_bon(problems, generator, seed, args)
            print(f"bon seed {seed}: {data['bon'][str(seed)]['seconds']}", flush=True)
            save()
    if "beam" in parts:
        plan = [(name, n) for name in args.beam_scorers for n in args.beam_budgets]
        plan += [("rollout", n) for n in args.rollout_beam_budgets]
        for seed in args.seeds:
            for name, n in plan:
                done = data.setdefault("beam", {}).setdefault(name, {}).setdefault(str(n), {})
                if str(seed) in done:
                    continue
                done[str(seed)] = await run_beam(problems, generator, name, n, seed, args)
                print(f"beam {name} N={n} seed {seed}: {mean_se(done[str(seed)]['records'])}", flush=True)
                save()
    summary = summarise(data)
    data["summary"] = summary
    save()
    (args.out / "comparison.md").write_text(markdown(data, summary))
    plot(summary, args.out / "accuracy_vs_budget.png")
    print(markdown(data, summary))


def parse_pums(values: list[str]) -> dict[str, str]:
    pums = {}
    shipped = os.path.relpath(PUM_DIR) if PUM_DIR.is_relative_to(Path.cwd()) else str(PUM_DIR)
    for value in values or [f"pum={shipped}"]:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"--pum takes NAME=CHECKPOINT, not {value!r}")
        pums[name] = path
    return pums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="standard,n=100")
    parser.add_argument("--seeds", type=ints, default=[0, 1, 2])
    parser.add_argument("--parts", default="bon,beam")
    parser.add_argument("--pum", action="append", default=[], help="NAME=CHECKPOINT (repeatable)")
    parser.add_argument("--students", default="testbed:weak,testbed:strong")
    parser.add_argument("--k", type=int, default=4, help="rollouts per prefix and student (rollout scorer)")
    parser.add_argument("--bon-budgets", type=ints, default=[4, 8, 16, 32, 64])
    parser.add_argument("--beam-budgets", type=ints, default=[4, 8, 16, 64])
    parser.add_argument("--beam-scorers", default=None, help="comma-separated: PUM names, testbed-prm, "
                        "exact-progress and prm>NAME (default: every PUM and testbed-prm)")
    parser.add_argument("--rollout-beam-budgets", type=ints, default=[])
    parser.add_argument("--rollout-token-cap", choices=["continuation", "solution"], default="continuation",
                        help="solution: a rollout gets what its prefix leaves of --max-tokens")
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-step-tokens", type=int, default=24)
    parser.add_argument("--max-depth", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=8192, help="token cap of one backend batch "
                        "(large CPU batches are slower per row)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pum"))
    args = parser.parse_args()
    args.pums = parse_pums(args.pum)
    args.beam_scorers = [s for s in (args.beam_scorers or ",".join([*args.pums, "testbed-prm"])).split(",") if s]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
