"""Reports a terminal can show: `report`, `tree stats` and `tree rank` fit 80 columns without cutting
any cell short (no '…'), and stay complete at 200; plots draw every series visibly (identical ones
merged into one labelled line) and mark the budgets read off a larger run."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from rich.console import Console
from typer.testing import CliRunner

import pumsearch.cli_runs
import pumsearch.viz.cli
from pumsearch.cli import app
from pumsearch.runs.report import Report, Row, make_figures
from tests.helpers_runs import write_gsm8k_style

WIDTHS = (80, 120, 200)
LONG_SCORER = "prm:qwen=/models/checkpoints/Qwen2.5-Math-PRM-7B-final"
LONG_DATASET = "/data/evaluation/sets/math500-with-a-long-name.jsonl"


def capture(monkeypatch: pytest.MonkeyPatch, module: object, width: int) -> Console:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    monkeypatch.setattr(module, "console", console)
    return console


def check_layout(text: str, width: int, cells: list[str]) -> None:
    lines = text.splitlines()
    assert "…" not in text, text
    assert max(len(line.rstrip()) for line in lines) <= width, text
    for cell in cells:
        assert re.search(rf"(^|\s){re.escape(cell)}(\s|$)", text, re.M), (cell, text)


def _row(strategy: str, scorer: str, select: str, budget: int, accuracy: float, *, subsampled: bool = False,
         family: str = "a1b2c3d4e5f6", tokens: float = 12345.6, failed: int = 0, missing: int = 0) -> Row:
    return Row(family=family, dataset=LONG_DATASET, model="/models/Qwen2.5-Math-1.5B-Instruct", strategy=strategy,
               scorer=scorer, budget=budget, select=select, subsampled=subsampled, seeds=3, n=1500,
               accuracy=accuracy, se=0.0123, pass_at_n=0.9876, maj_at_n=0.5432, mean_tokens=tokens,
               mean_wall_time=123.45, failed=failed, missing=missing)


def sweep_report() -> Report:
    rows = [_row("bon", LONG_SCORER, select, budget, 0.5 + budget / 1000, subsampled=budget < 256,
                 failed=budget, missing=1499 if budget == 256 else 0)
            for select in ("best", "majority", "weighted") for budget in (4, 16, 64, 256)]
    rows += [_row("step-then-finish", "verifier", "best", budget, 0.7, family="ffeeddccbbaa") for budget in (4, 16)]
    return Report(rows, [], [])


@pytest.mark.parametrize("width", WIDTHS)
def test_the_report_fits_the_terminal_and_cuts_no_cell(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    console = capture(monkeypatch, pumsearch.cli_runs, width)
    report = sweep_report()
    pumsearch.cli_runs.print_report(report)
    text = console.export_text()
    cells = ["weighted", "majority", "256", "64*", "1500", "0.756", "0.012", "0.988", "0.543", "12346", "123.45",
             "1499"]
    check_layout(text, width, cells)
    flat = " ".join(text.split())
    assert "bon / " in flat and "step-then-finish / verifier" in flat
    assert LONG_SCORER in text.replace("\n", "") or LONG_SCORER in flat  # a title may wrap, never truncate


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run whose trees carry verifier scores, made by the CLI."""
    root = tmp_path_factory.mktemp("layout")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus one, asked with a long question id?",
                                        "answer": str(i + 1), "id": f"math500:test/intermediate_algebra/{i}.json"})
                            + "\n" for i in range(3)))
    out = root / "run"
    result = CliRunner().invoke(app, ["run", "--backend", "scripted", "--dataset", str(data), "--scorer", "verifier",
                                      "--budget", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_tree_stats_and_rank_fit_the_terminal(monkeypatch: pytest.MonkeyPatch, scored_run: Path, width: int) -> None:
    trees = sorted(str(p) for p in (scored_run / "trees").glob("*.tree.json"))
    for command in (["stats"], ["rank", "--scorer", "verifier"]):
        console = capture(monkeypatch, pumsearch.viz.cli, width)
        result = CliRunner().invoke(app, ["tree", command[0], *trees, *command[1:]])
        assert result.exit_code == 0, result.output
        text = console.export_text()
        check_layout(text, width, ["all"] if command == ["stats"] else ["mean"])
        # a long problem id may fold onto more lines of its column (the first), never lose characters
        first_column = "".join(line.split()[0] for line in text.splitlines() if line and not line[0].isspace())
        assert all(f"math500:test/intermediate_algebra/{i}.json" in first_column for i in range(3)), text


def test_the_report_of_a_run_with_failures_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    console = capture(monkeypatch, pumsearch.cli_runs, 80)
    pumsearch.cli_runs.print_report(sweep_report())
    flat = " ".join(console.export_text().split())
    assert "accuracy counts failed and missing problems as wrong" in flat and "--finished-only" in flat


# -- plots ----------------------------------------------------------------------------------------------
def _plotted(report: Report, name: str = "accuracy_vs_budget"):
    ax = make_figures(report)[name].axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    return ax, lines, labels


def test_identical_series_are_one_visible_line_naming_each() -> None:
    same = [_row("bon", "none", "majority", b, 0.4 + b / 100, family="aaaaaaaaaaaa") for b in (4, 8)]
    twin = [_row("bon", "verifier", "majority", b, 0.4 + b / 100, family="bbbbbbbbbbbb") for b in (4, 8)]
    other = [_row("beam", "verifier", "best", b, 0.9, family="cccccccccccc") for b in (4, 8)]
    for name in ("accuracy_vs_budget", "accuracy_vs_tokens"):
        _, lines, labels = _plotted(Report(same + twin + other, [], []), name)
        assert len(lines) == 2  # the twins share one line
        assert len(labels) == len(lines)  # every legend entry is a line one can see
        merged = next(label for label in labels if "bon / none" in label)
        assert "bon / verifier (majority)" in merged


def test_budgets_read_off_a_larger_run_are_hollow_and_the_legend_says_so() -> None:
    from pumsearch.runs.report import SUBSAMPLED_NOTE

    rows = [_row("bon", "verifier", "best", b, 0.5, subsampled=b < 16) for b in (4, 8, 16)]
    ax, _, labels = _plotted(Report(rows, [], []))
    assert SUBSAMPLED_NOTE in labels
    marks = {}
    for points in (c for c in ax.collections if isinstance(c, PathCollection)):  # the scatter marks
        faces = points.get_facecolors()
        hollow = len(faces) == 0 or all(face[3] == 0 for face in faces)
        for x, _ in points.get_offsets():
            marks[int(x)] = "hollow" if hollow else "filled"
    assert marks == {4: "hollow", 8: "hollow", 16: "filled"}


def test_a_real_sweep_reports_and_plots_without_error(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 3)
    out = tmp_path / "s"
    runner = CliRunner()
    made = runner.invoke(app, ["sweep", "--backend", "scripted", "--dataset", str(data), "--strategies", "bon",
                               "--budgets", "2,4", "--scorers", "verifier,none", "--out", str(out)])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert (out / "plots" / "accuracy_vs_budget.png").exists()
