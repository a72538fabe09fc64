"""``pumsearch report``: tables and plots over run directories (merged by reading them).

One row per configuration family x budget x selection. A family is a run configuration with its
seed and budget left out, so seeds pool into one row and budgets line up into one curve.

- accuracy: mean over every (seed, problem) the runs were asked for of the selected answer's
  correctness; a problem that failed or was never run (planned.json) counts as wrong, so a run
  whose backend died cannot look better than it is (``finished_only``: over finished problems, as
  before); ``se`` is the standard error of that mean, sd / sqrt(n) with the sample standard
  deviation (ddof = 1) over those same outcomes (0 when n < 2). ``failed`` and ``missing`` count
  the (seed, problem) pairs without a finished record.
- pass@N: any finished candidate correct; maj@N: the majority-vote answer correct.
- tokens: mean generated tokens per problem; wall: mean wall time per problem in seconds (blank
  for budgets read off a larger run, whose time was not measured).
- Subsampled strategies (bon, dvts) give one row per budget they were asked for and per
  selection (best, majority and weighted with a scorer; majority without); rows below the
  run's own N are marked subsampled.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pumsearch.runs.records import RunError
from pumsearch.runs.rundir import RunDir, find_run_dirs, load_run_dir
from pumsearch.runs.subsample import SELECTIONS, selections_for, subsample

BREAKDOWN_FIELDS = ("level", "subject")


@dataclass
class Row:
    family: str
    dataset: str
    model: str
    strategy: str
    scorer: str
    budget: int
    select: str
    subsampled: bool
    seeds: int
    n: int
    accuracy: float | None
    se: float | None
    pass_at_n: float | None
    maj_at_n: float | None
    mean_tokens: float | None
    mean_wall_time: float | None
    failed: int = 0
    missing: int = 0

    @property
    def series(self) -> str:
        """The plot line this row belongs to."""
        return f"{self.strategy} / {self.scorer} ({self.select})"


@dataclass
class Outcome:
    """One (seed, problem) at one budget and selection: what a row averages."""

    correct: bool | None
    pass_at_n: bool | None
    maj_at_n: bool | None
    tokens: float | None  # None: not finished
    wall_time: float | None
    seed: int
    metadata: dict[str, Any]
    status: str = "ok"  # ok, failed (its last record failed) or missing (planned, never run)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def standard_error(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    variance = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def default_select(run: RunDir) -> str:
    return run.spec.search.select or ("best" if run.spec.scorer else "majority")


def wrong_if_unanswered(verdict: bool | None, record: dict[str, Any]) -> bool | None:
    """A search that states no answer to a problem with a reference got it wrong; only a problem
    without a reference is ungraded (dropping unanswered problems would inflate accuracy)."""
    if verdict is None and record.get("reference") is not None:
        return False
    return verdict


def run_outcomes(run: RunDir, *, finished_only: bool = False) -> dict[tuple[int, str, bool], list[Outcome]]:
    """(budget, selection, subsampled) -> outcomes of the run's problems: one per finished record,
    and (unless ``finished_only``) one per failed or missing problem, counted as wrong where it has
    a reference answer."""
    out: dict[tuple[int, str, bool], list[Outcome]] = defaultdict(list)
    n_run = run.spec.search.budget
    seed = run.spec.search.seed
    records = run.records()
    for record in records.values():
        if record["status"] != "ok":
            continue
        block = record.get("subsample")
        wall = float(record["timings"]["wall_time"])
        meta = record.get("metadata") or {}
        if block is None:
            out[(n_run, default_select(run), False)].append(
                Outcome(
                    wrong_if_unanswered(record["correct"], record),
                    wrong_if_unanswered(record.get("pass_at_n"), record),
                    wrong_if_unanswered(record.get("maj_at_n"), record),
                    float(record["counters"]["generated_tokens"]),
                    wall,
                    seed,
                    meta,
                )
            )
            continue
        for budget in run.spec.subsample_budgets or [n_run]:
            for select in selections_for(block):
                sub = subsample(block, budget, select)
                if sub is None:
                    continue
                out[(budget, select, budget < n_run)].append(
                    Outcome(
                        wrong_if_unanswered(sub.correct, record),
                        wrong_if_unanswered(sub.pass_at_n, record),
                        wrong_if_unanswered(sub.maj_at_n, record),
                        float(sub.generated_tokens),
                        wall if budget == n_run else None,
                        seed,
                        meta,
                    )
                )
    if not finished_only:
        unfinished = _unfinished_outcomes(run, records)
        for key in set(out) | set(_row_keys(run)):
            out[key].extend(unfinished)
    return out


def _row_keys(run: RunDir) -> list[tuple[int, str, bool]]:
    """The rows a run gives whatever its records hold (so a run where every problem failed still
    shows up, with its failures)."""
    n_run = run.spec.search.budget
    if not run.spec.subsample:
        return [(n_run, default_select(run), False)]
    selections = SELECTIONS if run.spec.scorer else ("majority",)
    return [(b, s, b < n_run) for b in run.spec.subsample_budgets or [n_run] for s in selections]


def _unfinished_outcomes(run: RunDir, records: dict[str, dict[str, Any]]) -> list[Outcome]:
    """A wrong outcome (ungraded without a reference) per failed or missing problem of the run."""
    seed = run.spec.search.seed
    outcomes = []
    for record in records.values():
        if record["status"] != "ok":
            wrong = False if record.get("reference") is not None else None
            outcomes.append(Outcome(wrong, wrong, wrong, None, None, seed, record.get("metadata") or {}, "failed"))
    for pid, has_reference in run.planned().items():
        if pid not in records:
            wrong = False if has_reference else None
            outcomes.append(Outcome(wrong, wrong, wrong, None, None, seed, {}, "missing"))
    return outcomes


def _frac(values: list[bool | None]) -> list[float]:
    return [float(bool(v)) for v in values if v is not None]


def make_row(run: RunDir, key: tuple[int, str, bool], outcomes: list[Outcome]) -> Row:
    budget, select, subsampled = key
    spec = run.spec
    correct = _frac([o.correct for o in outcomes])
    done = [o for o in outcomes if o.status == "ok"]
    walls = [o.wall_time for o in done if o.wall_time is not None]
    return Row(
        family=spec.family,
        dataset=str(spec.dataset.get("spec")),
        model=str(spec.model.get("name")),
        strategy=spec.search.strategy,
        scorer=spec.scorer_label,
        budget=budget,
        select=select,
        subsampled=subsampled,
        seeds=len({o.seed for o in outcomes}),
        n=len(outcomes),
        accuracy=mean(correct),
        se=standard_error(correct),
        pass_at_n=mean(_frac([o.pass_at_n for o in outcomes])),
        maj_at_n=mean(_frac([o.maj_at_n for o in outcomes])),
        mean_tokens=mean([o.tokens for o in done if o.tokens is not None]),
        mean_wall_time=mean(walls) if walls and len(walls) == len(done) else None,
        failed=sum(o.status == "failed" for o in outcomes),
        missing=sum(o.status == "missing" for o in outcomes),
    )


@dataclass
class Report:
    rows: list[Row]
    breakdown: list[dict[str, Any]]
    runs: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "pumsearch-report",
            "version": 1,
            "runs": self.runs,
            "rows": [asdict(r) for r in self.rows],
            "breakdown": self.breakdown,
        }


def build_report(dirs: list[Path], *, finished_only: bool = False) -> Report:
    """Read every run below ``dirs`` and pool outcomes by (family, budget, selection); accuracy
    over every planned problem unless ``finished_only``."""
    runs: list[RunDir] = []
    seen: set[Path] = set()
    for d in dirs:
        for path in find_run_dirs(d):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                runs.append(load_run_dir(path))
    pooled: dict[tuple[str, int, str, bool], tuple[RunDir, list[Outcome]]] = {}
    for run in runs:
        for key, outcomes in run_outcomes(run, finished_only=finished_only).items():
            slot = pooled.setdefault((run.spec.family, *key), (run, []))
            slot[1].extend(outcomes)
    pooled = {key: slot for key, slot in pooled.items() if slot[1]}
    if not pooled:
        raise RunError(f"no records in {', '.join(map(str, dirs))}")
    rows, breakdown = [], []
    for (_, *key), (run, outcomes) in pooled.items():
        row = make_row(run, tuple(key), outcomes)  # type: ignore[arg-type]
        rows.append(row)
        breakdown.extend(breakdown_rows(row, outcomes))
    rows.sort(key=lambda r: (r.dataset, r.strategy, r.scorer, r.select, r.family, r.budget))
    return Report(rows, breakdown, [str(r.path) for r in runs])


def breakdown_rows(row: Row, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Accuracy per MATH level and subject (where the records carry them)."""
    out = []
    for field in BREAKDOWN_FIELDS:
        groups: dict[Any, list[float]] = defaultdict(list)
        for o in outcomes:
            if field in o.metadata and o.correct is not None:
                groups[o.metadata[field]].append(float(bool(o.correct)))
        for value in sorted(groups, key=str):
            out.append(
                {
                    "family": row.family,
                    "strategy": row.strategy,
                    "scorer": row.scorer,
                    "budget": row.budget,
                    "select": row.select,
                    "field": field,
                    "value": value,
                    "n": len(groups[value]),
                    "accuracy": mean(groups[value]),
                }
            )
    return out


def write_csv(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(asdict(report.rows[0]))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in report.rows:
            writer.writerow(asdict(row))


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")


def series_label(row: Row, ambiguous: set[str]) -> str:
    return row.series + (f" [{row.family[:6]}]" if row.series in ambiguous else "")


def plot_series(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows per plot line, sorted by budget; families with the same label get their id appended."""
    families: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        families[row.series].add(row.family)
    ambiguous = {s for s, f in families.items() if len(f) > 1}
    lines: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.accuracy is not None:
            lines[series_label(row, ambiguous)].append(row)
    return {label: sorted(rs, key=lambda r: r.budget) for label, rs in sorted(lines.items())}


SUBSAMPLED_NOTE = "hollow: read off a larger run"


def merge_identical(lines: dict[str, list[Row]], xof: Any) -> list[tuple[str, list[Row]]]:
    """Lines that would be drawn on top of each other (same points, same error) as one line whose
    label names them all, so every legend entry is a visible line."""
    merged: dict[tuple[Any, ...], list[str]] = {}
    rows_of: dict[tuple[Any, ...], list[Row]] = {}
    for label, all_rows in lines.items():
        rows = [r for r in all_rows if xof(r) is not None]  # a row with nothing finished has no tokens
        if not rows:
            continue
        key = tuple((xof(r), r.accuracy, r.se, r.subsampled) for r in rows)
        merged.setdefault(key, []).append(label)
        rows_of.setdefault(key, rows)
    return [("\n= ".join(labels), rows_of[key]) for key, labels in merged.items()]


def make_figures(report: Report) -> dict[str, Any]:
    """Accuracy against budget and against mean generated tokens; one line per strategy x scorer
    (x selection), with a band of one standard error. Identical lines are merged into one (its
    label names each); points read off a larger run (subsampled) are hollow, measured ones filled."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    lines = plot_series(report.rows)
    figures = {}
    for name, xlabel, xof in (
        ("accuracy_vs_budget", "budget N", lambda r: r.budget),
        ("accuracy_vs_tokens", "mean generated tokens per problem", lambda r: r.mean_tokens),
    ):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        for label, rows in merge_identical(lines, xof):
            xs = [float(xof(r)) for r in rows]
            ys = [float(r.accuracy) for r in rows]  # type: ignore[arg-type]
            se = [float(r.se or 0.0) for r in rows]
            (line,) = ax.plot(xs, ys, label=label)
            color = line.get_color()
            for subsampled in (False, True):
                points = [(x, y) for x, y, r in zip(xs, ys, rows, strict=True) if r.subsampled == subsampled]
                if points:
                    ax.scatter(*zip(*points, strict=True), s=30, zorder=3, edgecolors=color, linewidths=1.5,
                               facecolors="none" if subsampled else color)
            ax.fill_between(
                xs,
                [y - s for y, s in zip(ys, se, strict=True)],
                [y + s for y, s in zip(ys, se, strict=True)],
                alpha=0.15,
                color=color,
            )
        handles, labels = ax.get_legend_handles_labels()
        if any(r.subsampled for r in report.rows):
            handles.append(Line2D([], [], linestyle="", marker="o", color="gray", markerfacecolor="none"))
            labels.append(SUBSAMPLED_NOTE)
        ax.set_xscale("log", base=2 if name == "accuracy_vs_budget" else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)  # accuracy is a fraction: a fixed scale keeps plots comparable
        datasets = sorted({r.dataset for r in report.rows})
        ax.set_title(f"{', '.join(datasets)}: accuracy vs {'budget' if 'budget' in name else 'compute'}")
        ax.grid(True, alpha=0.3)
        ax.legend(handles, labels, fontsize="small")
        fig.tight_layout()
        figures[name] = fig
    return figures


def save_figures(figures: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths
