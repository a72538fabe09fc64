"""The ``pumsearch`` command line (typer). Each command declares only its own parameters; the options
they share come from pumsearch.cli_options, and the work is done in pumsearch.cli_solve and
pumsearch.cli_runs, imported inside the commands, so ``pumsearch --help`` answers fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumsearch.cli_common import exit_on_user_errors
from pumsearch.cli_options import (
    RUN_GROUPS,
    SCORER,
    SCORER_CHECKPOINT,
    SCORER_NAMES_HELP,
    SOLVE_GROUPS,
    SWEEP_GROUPS,
    THREADS,
    CommandLine,
    shared_options,
)
from pumsearch.search.config import SearchConfig

DEFAULTS = SearchConfig()
app = typer.Typer(help="Inference-time search for LLM reasoning with pluggable reward models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

SPEC_HELP = "NAME, NAME=PATH or NAME:FORMAT=PATH (prm:qwen=PATH)"


@app.command()
@shared_options(*SOLVE_GROUPS)
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")],
    scorer: Annotated[str | None, typer.Option("--scorer", help=SCORER_NAMES_HELP)] = None,
    answer: Annotated[str | None, typer.Option(help="Reference answer (needed by the verifier).")] = None,
    tree_out: Annotated[Path | None, typer.Option(help="Where to write the search tree (JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-problem record as JSON.")] = False,
    *,
    opts: CommandLine,
) -> None:
    """Search one question and print the answer, the chosen path, the candidates and the counters."""
    from pumsearch.cli_solve import solve_command

    solve_command(opts)


@app.command()
@shared_options(SCORER_CHECKPOINT, SCORER, THREADS)
def score(
    scorer: Annotated[str, typer.Option("--scorer", help=SCORER_NAMES_HELP)],
    question: Annotated[str, typer.Option(help="The problem text.")],
    steps_file: Annotated[Path, typer.Option(help="Steps: a text file split at the step delimiter, or a "
                                                  "JSON list of strings (.json).")],
    answer: Annotated[str | None, typer.Option(help="Reference answer (verifier, rollout).")] = None,
    step_delimiter: Annotated[str, typer.Option(help="String that separates steps.")] = "\n\n",
    complete: Annotated[bool | None, typer.Option(
        "--complete/--partial", help="Whether the whole solution is finished (default: when it states an "
        "answer).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    *,
    opts: CommandLine,
) -> None:
    """Score every prefix of a solution with one scorer: per-step values and the prefix's value."""
    from pumsearch.cli_solve import score_command

    score_command(opts)


@app.command()
@shared_options(*RUN_GROUPS)
def run(
    scorer: Annotated[str | None, typer.Option(help=f"Scorer: {SPEC_HELP}.")] = None,
    *,
    opts: CommandLine,
) -> None:
    """Search one configuration over a dataset: records, trees and a summary in --out (resumable)."""
    from pumsearch.cli_runs import run_command

    run_command(opts)


@app.command()
@shared_options(*SWEEP_GROUPS)
def sweep(
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies, e.g. bon,beam.")] = DEFAULTS.strategy,
    budgets: Annotated[str, typer.Option(help="Comma-separated budgets N, e.g. 4,16,64.")] = "4,8",
    scorers: Annotated[str | None, typer.Option(help=f"Comma-separated scorers: {SPEC_HELP}, none. The "
                                                     "--scorer-* flags go to the scorers that take "
                                                     "them.")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated run seeds.")] = "0",
    *,
    opts: CommandLine,
) -> None:
    """Run a grid (strategies x budgets x scorers x seeds) into --out, one directory per configuration.
    Best-of-N (and DVTS) run once at the largest N; smaller budgets are read off that run."""
    from pumsearch.cli_runs import sweep_command

    sweep_command(opts)


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run or sweep directories (merged).")],
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the table as CSV.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table and breakdowns as "
                                                                  "JSON.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Directory for the PNG plots "
                                                    "(default: DIR/plots).")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the plots.")] = False,
    finished_only: Annotated[bool, typer.Option("--finished-only", help="Accuracy over finished problems only "
                                                "(default: over every problem asked for; a failed or "
                                                "missing one counts as wrong).")] = False,
) -> None:
    """Accuracy (± standard error over seeds and problems), pass@N, maj@N, tokens and wall time per
    configuration and budget; breakdowns by MATH level and subject; CSV/JSON export; PNG plots."""
    from pumsearch.cli_runs import report_command

    with exit_on_user_errors():
        report_command(dirs, csv_out, json_out, plots, no_plots, finished_only)


def _add_sub_apps() -> None:
    # typer and rich only: each sub-app loads its heavy modules inside its commands
    from pumsearch.pum.cli import pum_app
    from pumsearch.testbed.cli import testbed_app
    from pumsearch.viz.cli import tree_app

    app.add_typer(tree_app, name="tree")
    app.add_typer(testbed_app, name="testbed")
    app.add_typer(pum_app, name="pum")


_add_sub_apps()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
