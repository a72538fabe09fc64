"""Tables and a plot for benchmarks/bench_confidence.sh: the confidence scorer against majority vote
and the exact PRM at equal tokens, and MCTS priors.

Best-of-N is read off the Best-of-64 trees, which keep every token's confidence (DeepConf's C_i):
for each problem and seed the first n solutions are a run at n, and each measure (mean, lowest
group, bottom 10%, tail, at several windows), each filter (keep the top fraction by confidence) and
each vote (majority, confidence-weighted, or the single most confident) is applied with the
project's own selection (pumsearch.search.selection.choose), so the numbers are what
`--strategy bon --scorer confidence --scorer-option ... --keep F --select ...` gives. The tree
strategies' rows come from their records. Also: how well each measure separates right from wrong
solutions of the same problem (AUROC within problems, averaged).

    python benchmarks/bench_confidence_analysis.py /tmp/confidence-sweeps --out benchmarks/results/confidence
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pumsearch.scorers.confidence import MEASURES, likelihood
from pumsearch.search.selection import Candidate, choose
from pumsearch.search.tree import load_tree

BUDGETS = (4, 8, 16, 32, 64)
# (label, measure, window): DeepConf's default window (2048) is longer than every testbed solution
# (~27 tokens), so there lowest_group = bottom_group = tail = mean; short windows make them differ
MEASURE_GRID = [("mean", "mean", 2048), ("lowest group w=2048 (default)", "lowest_group", 2048),
                ("lowest group w=8", "lowest_group", 8), ("lowest group w=4", "lowest_group", 4),
                ("bottom 10% w=8", "bottom_group", 8), ("tail w=8", "tail", 8),
                ("likelihood (not DeepConf)", "likelihood", 0)]
KEEPS = (1.0, 0.9, 0.5, 0.1)
TREE_SWEEPS = ("beam", "beam-lowest-group", "beam-likelihood", "tree-likelihood", "search-likelihood",
               "particles-likelihood-t0.2", "particles-likelihood-t0.05", "mcts-logprob", "mcts-uniform")


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, (run_dir / "records.jsonl").read_text().splitlines())
            if r.get("status") == "ok"]


def path_confidences(tree: Any, node: int) -> list[float]:
    return [c for n in tree.path(node) for c in (tree[n]["token_confidences"] or [])]


def path_likelihood(tree: Any, node: int) -> float:
    """The confidence scorer's ``likelihood`` of a solution: exp(its log-probability / its tokens),
    from the nodes' sums (trees from before token_logprobs were recorded hold only those)."""
    path = tree.path(node)
    tokens = sum(tree[n]["num_tokens"] for n in path)
    return likelihood([sum(tree[n]["logprob"] or 0.0 for n in path) / tokens]) if tokens else 0.0


def measure_value(cand: dict[str, Any], measure: str, window: int) -> float:
    if measure == "likelihood":
        return cand["likelihood"]
    return MEASURES[measure](cand["confidences"], window, 0.1)


def bon_solutions(run_dir: Path) -> list[dict[str, Any]]:
    """Per problem: its candidates in generation order with their token confidences and tokens."""
    out = []
    for rec in records(run_dir):
        tree, result = load_tree(run_dir / rec["tree_file"])
        cands = []
        for c, group in zip(result["candidates"], rec["subsample"]["groups"], strict=True):
            cands.append({**c, "confidences": path_confidences(tree, c["node"]), "tokens": group["tokens"],
                          "likelihood": path_likelihood(tree, c["node"])})
        out.append({"problem": rec["problem_id"], "seed": rec["seed"], "candidates": cands})
    return out


def pick(cands: list[dict[str, Any]], scores: list[float] | None, how: str, keep: float) -> bool:
    objs = [Candidate(i, c["answer"], None if scores is None else scores[i], c["correct"], c["vote_class"],
                      c["parsed"]) for i, c in enumerate(cands)]
    chosen = choose(objs, how, "positive", keep).candidate
    return bool(chosen is not None and chosen.correct)


def bon_table(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, float], dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    tokens: dict[int, list[int]] = defaultdict(list)
    for prob in problems:
        for n in BUDGETS:
            first = prob["candidates"][:n]
            tokens[n].append(sum(c["tokens"] for c in first))
            rows[("majority (no scorer)", "majority", 1.0)][n].append(pick(first, None, "majority", 1.0))
            rows[("pass@N (oracle)", "-", 1.0)][n].append(any(c["correct"] for c in first))
            for label, measure, window in MEASURE_GRID:
                scores = [measure_value(c, measure, window) for c in first]
                rows[(label, "best", 1.0)][n].append(pick(first, scores, "best", 1.0))
                for keep in KEEPS:
                    for how in ("majority", "weighted"):
                        rows[(label, how, keep)][n].append(pick(first, scores, how, keep))
    out = []
    for (label, how, keep), by_n in rows.items():
        out.append({"method": label, "vote": how, "keep": keep,
                    "accuracy": {n: float(np.mean(v)) for n, v in by_n.items()},
                    "tokens": {n: float(np.mean(tokens[n])) for n in by_n}})
    return out


def auroc_within(problems: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over problems with right and wrong answered solutions of P(score right > score wrong)."""
    out = {}
    for label, measure, window in MEASURE_GRID:
        values = []
        for prob in problems:
            scored = [(measure_value(c, measure, window), bool(c["correct"]))
                      for c in prob["candidates"] if c["answer"]]
            right = [s for s, ok in scored if ok]
            wrong = [s for s, ok in scored if not ok]
            if right and wrong:
                wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
                values.append(wins / (len(right) * len(wrong)))
        out[label] = float(np.mean(values)) if values else float("nan")
    return out


def majority_by_pair(problems: list[dict[str, Any]]) -> dict[tuple[int, str, int], bool]:
    """Whether Best-of-N's majority vote is right, by (seed, problem, N): the baseline that tree runs
    are compared with pair by pair (same problems and seeds, so their difficulty cancels)."""
    return {(prob["seed"], prob["problem"], n): pick(prob["candidates"][:n], None, "majority", 1.0)
            for prob in problems for n in BUDGETS}


def scorer_identity(run_dir: Path) -> str:
    """The scorer identity the run's trees hold (it names the measure, whatever the default was
    when the run was made), else "none"."""
    for rec in records(run_dir):
        tree, _ = load_tree(run_dir / rec["tree_file"])
        for _, attrs in tree.iter_nodes():
            if attrs["scores"]:
                return next(iter(attrs["scores"]))
    return "none"


def run_rows(sweep: Path, majority: dict[tuple[int, str, int], bool]) -> list[dict[str, Any]]:
    """Accuracy and mean generated tokens of every run of a sweep directory, by configuration and N
    (means over the seeds' problems), and its paired difference from Best-of-N majority at the same
    N (mean and se over the (seed, problem) pairs both have)."""
    groups: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in sorted(p for p in sweep.iterdir() if (p / "records.jsonl").exists()):
        config = json.loads((run_dir / "config.json").read_text())
        label = scorer_identity(run_dir)
        options = dict(config["search"].get("extra") or {})  # a strategy's own settings, where not default
        if sweep.name.startswith("mcts-"):  # the priors: named by the sweep, whatever the default is
            options["priors"] = sweep.name.removeprefix("mcts-")
        label += "".join(f" {name}={value}" for name, value in sorted(options.items()))
        key = (config["search"]["strategy"], label, config["search"]["budget"])
        for rec in records(run_dir):
            groups[key]["correct"].append(float(bool(rec["correct"])))
            groups[key]["tokens"].append(rec["counters"]["generated_tokens"])
            groups[key]["seeds"].append(rec["seed"])
            baseline = majority.get((rec["seed"], rec["problem_id"], config["search"]["budget"]))
            if baseline is not None:
                groups[key]["vs_majority"].append(float(bool(rec["correct"])) - float(baseline))
    return [{"sweep": sweep.name, "strategy": s, "scorer": label, "budget": n, "n": len(v["correct"]),
             "seeds": sorted(set(v["seeds"])), "accuracy": float(np.mean(v["correct"])),
             "se": float(np.std(v["correct"]) / np.sqrt(len(v["correct"]))),
             "tokens": float(np.mean(v["tokens"])), **paired(v["vs_majority"])}
            for (s, label, n), v in sorted(groups.items())]


def paired(differences: list[float]) -> dict[str, float | None]:
    if not differences:
        return {"vs_majority": None, "vs_majority_se": None}
    return {"vs_majority": float(np.mean(differences)),
            "vs_majority_se": float(np.std(differences) / np.sqrt(len(differences)))}


def signed(value: float | None, se: float | None) -> str:
    return "" if value is None or se is None else f"{value:+.3f} ± {se:.3f}"


def markdown(bon: list[dict[str, Any]], auroc: dict[str, float], runs: list[dict[str, Any]]) -> str:
    lines = ["## Best-of-N read off the Best-of-64 trees (accuracy; seeds pooled)", "",
             "| method | vote | keep | " + " | ".join(f"N={n}" for n in BUDGETS) + " |",
             "|---|---|---|" + "---|" * len(BUDGETS)]
    for row in bon:
        cells = " | ".join(f"{row['accuracy'][n]:.3f}" for n in BUDGETS)
        lines.append(f"| {row['method']} | {row['vote']} | {row['keep']:g} | {cells} |")
    tokens = bon[0]["tokens"]
    lines += ["", "Mean generated tokens per problem: " + ", ".join(f"N={n}: {tokens[n]:.0f}" for n in BUDGETS), "",
              "## Right vs wrong solutions of one problem: AUROC of each measure (0.5 = chance)", "",
              "| measure | AUROC |", "|---|---|"]
    lines += [f"| {label} | {value:.3f} |" for label, value in auroc.items()]
    lines += ["", "## Tree strategies (records; seeds pooled)", "",
              "| strategy | scorer | N | problems x seeds | accuracy | ± se | mean tokens | minus BoN majority "
              "(paired) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['strategy']} | {r['scorer']} | {r['budget']} | {r['n']} | {r['accuracy']:.3f} | {r['se']:.3f} | "
              f"{r['tokens']:.0f} | {signed(r['vs_majority'], r['vs_majority_se'])} |" for r in runs]
    return "\n".join(lines) + "\n"


def plot(bon: list[dict[str, Any]], runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    wanted = {("majority (no scorer)", "majority", 1.0): "BoN majority",
              ("lowest group w=2048 (default)", "weighted", 1.0): "BoN confidence-weighted",
              ("lowest group w=2048 (default)", "weighted", 0.1): "BoN top-10% confident, weighted",
              ("pass@N (oracle)", "-", 1.0): "BoN pass@N (oracle)"}
    for row in bon:
        name = wanted.get((row["method"], row["vote"], row["keep"]))
        if name:
            ax.plot([row["tokens"][n] for n in BUDGETS], [row["accuracy"][n] for n in BUDGETS], marker="o",
                    label=name, linestyle=":" if "oracle" in name else "-")
    series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        series[(r["strategy"], r["scorer"])].append(r)
    for (strategy, scorer), rows in series.items():
        rows.sort(key=lambda r: r["budget"])
        ax.plot([r["tokens"] for r in rows], [r["accuracy"] for r in rows], marker="s", linestyle="--",
                label=f"{strategy} / {scorer}")
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the sweeps' parent directory ($RUNS of bench_confidence.sh)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problems = [p for run in sorted((args.runs / "bon").glob("bon-*")) for p in bon_solutions(run)]
    bon = bon_table(problems)
    auroc = auroc_within(problems)
    majority = majority_by_pair(problems)
    runs = [r for name in TREE_SWEEPS if (args.runs / name).is_dir() for r in run_rows(args.runs / name, majority)]
    (args.out / "analysis.json").write_text(json.dumps({"bon": bon, "auroc": auroc, "runs": runs}, indent=1) + "\n")
    (args.out / "analysis.md").write_text(markdown(bon, auroc, runs))
    plot(bon, [r for r in runs if not r["sweep"].startswith("mcts-")], args.out / "accuracy_vs_tokens.png",
         "testbed:standard, weak policy: confidence scorer vs majority and the exact PRM")
    plot(bon, [r for r in runs if r["sweep"].startswith("mcts-")], args.out / "mcts_priors.png",
         "testbed:standard, weak policy: MCTS (exact PRM), log-probability vs uniform priors")
    print(markdown(bon, auroc, runs))


if __name__ == "__main__":
    main()
