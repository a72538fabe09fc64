"""One table and one plot from the testbed sweeps' `pumsearch report --json` files.

Each sweep directory gets its own `pumsearch report` (benchmarks/bench_testbed_sweeps.sh): the
report names a curve by strategy, scorer and selection, so MCTS with and without the verifier as
terminal reward (same strategy, same scorer) would share a name in one report. This script only
relabels and lays out the rows those reports computed; it computes no accuracy itself.

    python benchmarks/bench_testbed_summary.py benchmarks/results/testbed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# (label, sweep subdirectory, strategy, selection or None for the run's own answer rule)
SERIES = (
    ("BoN, majority vote", "main", "bon", "majority"),
    ("BoN, exact PRM (best)", "main", "bon", "best"),
    ("BoN, exact PRM (weighted)", "main", "bon", "weighted"),
    ("beam, exact PRM", "main", "beam", None),
    ("DVTS, exact PRM", "main", "dvts", "best"),
    ("MCTS, exact PRM", "main", "mcts", None),
    ("MCTS, exact PRM + verifier terminal reward", "mcts-verifier-terminal", "mcts", None),
    ("beam, rollout gain (k=4, weak+strong students)", "rollout", "beam", None),
)


def load_rows(results: Path) -> dict[str, list[dict[str, Any]]]:
    rows = {}
    for sub in sorted({s[1] for s in SERIES}):
        path = results / sub / "report.json"
        if path.exists():
            rows[sub] = json.loads(path.read_text())["rows"]
    return rows


def series(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for label, sub, strategy, select in SERIES:
        picked = [r for r in rows.get(sub, []) if r["strategy"] == strategy and select in (None, r["select"])]
        if select is None and len({r["select"] for r in picked}) > 1:
            raise SystemExit(f"{sub}/{strategy}: several selections {sorted({r['select'] for r in picked})}")
        if picked:
            out[label] = sorted(picked, key=lambda r: r["budget"])
    return out


def oracle(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """pass@N of the Best-of-N run: some sample is right (what the outcome verifier would pick)."""
    return sorted((r for r in rows.get("main", []) if r["strategy"] == "bon" and r["select"] == "best"),
                  key=lambda r: r["budget"])


def markdown(lines: dict[str, list[dict[str, Any]]], pass_rows: list[dict[str, Any]]) -> str:
    budgets = sorted({r["budget"] for rs in lines.values() for r in rs})
    head = "| method | chains | " + " | ".join(f"N={n}" for n in budgets) + " |"
    out = [head, "|---|---|" + "---|" * len(budgets)]

    def row(label: str, rs: list[dict[str, Any]], key: str) -> str:
        by_n = {r["budget"]: r for r in rs}
        cells = [f"{by_n[n][key]:.3f}" if n in by_n and by_n[n][key] is not None else "" for n in budgets]
        return f"| {label} | {rs[0]['n']} | " + " | ".join(cells) + " |"

    out += [row(label, rs, "accuracy") for label, rs in lines.items()]
    if pass_rows:
        out.append(row("(BoN pass@N: the verifier as oracle)", pass_rows, "pass_at_n"))
    out += ["", "Mean generated tokens per problem (read-off budgets count the kept samples or subtrees):", ""]
    out += [head, "|---|---|" + "---|" * len(budgets)]
    for label, rs in lines.items():
        by_n = {r["budget"]: r for r in rs}
        cells = [f"{by_n[n]['mean_tokens']:.0f}" if n in by_n else "" for n in budgets]
        out.append(f"| {label} | {rs[0]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(lines: dict[str, list[dict[str, Any]]], pass_rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (xkey, xlabel, base) in zip(
        axes, (("budget", "budget N", 2), ("mean_tokens", "mean generated tokens per problem", 10)), strict=True
    ):
        for label, rs in lines.items():
            xs = [r[xkey] for r in rs]
            ys = [r["accuracy"] for r in rs]
            se = [r["se"] or 0.0 for r in rs]
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            ax.fill_between(xs, [y - s for y, s in zip(ys, se, strict=True)],
                            [y + s for y, s in zip(ys, se, strict=True)], alpha=0.12, color=line.get_color())
        if pass_rows:
            ax.plot([r[xkey] for r in pass_rows], [r["pass_at_n"] for r in pass_rows], "k--",
                    label="BoN pass@N (oracle)")
        ax.set_xscale("log", base=base)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("testbed:standard, weak policy: accuracy vs N")
    axes[1].set_title("accuracy vs compute")
    axes[1].legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    rows = load_rows(args.results)
    lines, pass_rows = series(rows), oracle(rows)
    if not lines:
        raise SystemExit(f"no report.json below {args.results}: run `pumsearch report` first")
    (args.results / "summary.md").write_text(markdown(lines, pass_rows))
    summary = {"series": lines, "bon_pass_at_n": pass_rows}
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(lines, pass_rows, args.results / "summary.png")
    print((args.results / "summary.md").read_text())


if __name__ == "__main__":
    main()
