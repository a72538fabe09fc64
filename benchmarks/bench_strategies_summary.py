"""One table and one accuracy-vs-tokens plot from the runs of benchmarks/bench_strategies_testbed.sh.

Rows come from `pumsearch.runs.report.build_report` over each sweep directory (so seeds pool and
read-off budgets are what `pumsearch report` computes); this script only labels them, adds the
adaptive runs' solutions drawn per problem (from their records), and lays them out.

    python benchmarks/bench_strategies_summary.py /tmp/strategies-testbed benchmarks/results/strategies
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pumsearch.runs.report import build_report
from pumsearch.runs.rundir import find_run_dirs, load_run_dir
from pumsearch.runs.subsample import kept_groups

# (label, sweep subdirectory, strategy, selection or None for the run's own rule)
SERIES = (
    ("BoN, majority vote", "main", "bon", "majority"),
    ("BoN, exact PRM (best)", "main", "bon", "best"),
    ("adaptive BoN, majority (beta 0.95)", "adaptive-beta", "bon", "majority"),
    ("adaptive BoN, majority (supermajority 0.8)", "adaptive-supermajority", "bon", "majority"),
    ("adaptive BoN, exact-PRM-weighted consensus 0.95 (weighted)", "adaptive-consensus-prm", "bon", "weighted"),
    ("adaptive BoN, exact-PRM-weighted consensus 0.95 (majority)", "adaptive-consensus-prm", "bon", "majority"),
    ("beam, exact PRM", "beam", "beam", None),
    ("beam, exact PRM, loop before issue 13", "beam-before-issue13", "beam", None),
    ("beam, exact PRM, loop before issue 13, distinct prefixes only", "beam-filter-duplicates", "beam", None),
    ("particles, exact PRM", "main", "particles", None),
    ("particles, systematic", "particles-systematic", "particles", None),
    ("particles, finished resampled", "particles-resample-finished", "particles", None),
    ("particles, ESS < 0.5 N", "particles-ess", "particles", None),
    ("particle Gibbs, 2 iterations", "particles-gibbs", "particles", None),
    ("particles, tempered 4 -> 1", "particles-tempered", "particles", None),
    ("REBASE, exact PRM (best)", "main", "rebase", None),
    ("REBASE, exact PRM (weighted)", "rebase-weighted", "rebase", None),
    ("REBASE, T = 1", "rebase-t1", "rebase", None),
)


def rows_by_series(runs: Path) -> dict[str, list[dict[str, Any]]]:
    reports = {sub: build_report([runs / sub]) for sub in sorted({s[1] for s in SERIES}) if (runs / sub).exists()}
    out = {}
    for label, sub, strategy, select in SERIES:
        if sub not in reports:
            continue
        picked = [r.__dict__ for r in reports[sub].rows if r.strategy == strategy and select in (None, r.select)]
        if picked:
            out[label] = sorted(picked, key=lambda r: r["budget"])
    return out


def solutions_drawn(runs: Path, sub: str) -> dict[int, float]:
    """Mean solutions drawn per problem by adaptive Best-of-N at each cap (read off the records)."""
    drawn: dict[int, list[int]] = {}
    for path in find_run_dirs(runs / sub):
        run = load_run_dir(path)
        for record in run.records().values():
            block = record.get("subsample")
            if record["status"] != "ok" or block is None:
                continue
            for cap in run.spec.subsample_budgets or []:
                groups = kept_groups(block, cap)
                if groups is not None:
                    drawn.setdefault(cap, []).append(len(groups))
    return {cap: sum(v) / len(v) for cap, v in sorted(drawn.items())}


def seeds_cell(rows: list[dict[str, Any]]) -> str:
    """'S x C' (seeds x chains per seed), naming the budgets run with fewer seeds than the most."""
    most = max(r["seeds"] for r in rows)
    chains = rows[0]["n"] // max(rows[0]["seeds"], 1)
    fewer = [f"N={r['budget']}: {r['seeds']}" for r in rows if r["seeds"] < most]
    return f"{most} x {chains}" + (f" ({', '.join(fewer)})" if fewer else "")


def markdown(lines: dict[str, list[dict[str, Any]]], drawn: dict[str, dict[int, float]]) -> str:
    budgets = sorted({r["budget"] for rs in lines.values() for r in rs})
    head = "| method | seeds x chains | " + " | ".join(f"N={n}" for n in budgets) + " |"
    rule = "|---|---|" + "---|" * len(budgets)

    def table(key: str, fmt: str) -> list[str]:
        out = [head, rule]
        for label, rs in lines.items():
            by_n = {r["budget"]: r for r in rs}
            cells = [format(by_n[n][key], fmt) if n in by_n and by_n[n][key] is not None else "" for n in budgets]
            out.append(f"| {label} | {seeds_cell(rs)} | " + " | ".join(cells) + " |")
        return out

    text = ["Accuracy (± se over seeds x chains in report.txt):", "", *table("accuracy", ".3f"), "",
            "Mean generated tokens per problem:", "", *table("mean_tokens", ".0f")]
    if drawn:
        text += ["", "Adaptive Best-of-N, mean solutions drawn per problem at each cap:", "",
                 "| stop rule | " + " | ".join(f"cap {n}" for n in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for sub, by_cap in drawn.items():
            text.append(f"| {sub} | " + " | ".join(f"{by_cap[n]:.1f}" if n in by_cap else "" for n in budgets) + " |")
    return "\n".join(text) + "\n"


MAIN = {"BoN, majority vote", "BoN, exact PRM (best)", "adaptive BoN, majority (beta 0.95)", "beam, exact PRM",
        "beam, exact PRM, loop before issue 13", "particles, exact PRM", "REBASE, exact PRM (best)"}


def plot(lines: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    for label, rs in lines.items():
        if len(rs) < 2:
            ax.plot([r["mean_tokens"] for r in rs], [r["accuracy"] for r in rs], marker="s", linestyle="none",
                    label=label)
            continue
        ax.plot([r["mean_tokens"] for r in rs], [r["accuracy"] for r in rs], marker="o", label=label)
    ax.set_xscale("log", base=10)
    ax.set_xlabel("mean generated tokens per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    lines = rows_by_series(args.runs)
    drawn = {sub: solutions_drawn(args.runs, sub) for sub in ("adaptive-beta", "adaptive-supermajority",
                                                             "adaptive-consensus-prm") if (args.runs / sub).exists()}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.md").write_text(markdown(lines, drawn))
    (args.results / "summary.json").write_text(json.dumps({"series": lines, "solutions_drawn": drawn}, indent=2) + "\n")
    plot({k: v for k, v in lines.items() if k in MAIN}, args.results / "summary.png",
         "testbed:standard, weak policy: accuracy vs generated tokens")
    plot({k: v for k, v in lines.items() if k not in MAIN or k == "particles, exact PRM"},
         args.results / "variants.png", "testbed:standard, weak policy: the options (seed 0)")
    print((args.results / "summary.md").read_text())


if __name__ == "__main__":
    main()
