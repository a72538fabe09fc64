"""What ``pumsearch run``, ``sweep`` and ``report`` do once their options are read: plan the runs,
refuse what cannot work before anything is loaded or written, run with a progress bar, print the
report (docs/evaluation.md)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from pumsearch.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS_FAILED,
    UsageError,
    compact_table,
    console,
    err_console,
    quiet_transformers,
)
from pumsearch.cli_options import CommandLine, options_per_scorer


def run_command(opts: CommandLine) -> None:
    from pumsearch.api import apply_default
    from pumsearch.runs.grid import parse_scorer_specs, single_plan
    from pumsearch.search.engine import check_work_fits
    from pumsearch.strategies import make_strategy

    dataset, shard, model_id = _prepare(opts)
    default = _search_default(opts)
    specs = parse_scorer_specs(opts["scorer"]) if opts["scorer"] else [_default_scorer_spec(default)]
    if len(specs) != 1:
        raise UsageError("run takes one --scorer; use sweep --scorers for several")
    (scorer_spec,) = _with_scorer_options(specs, opts.scorer(), "--scorer")
    config = apply_default(opts.search_config(), default)
    strategy = make_strategy(config, scorer_spec is not None)  # refuse bad settings before loading anything
    problems = dataset.load(shard)  # a bad dataset is reported before any directory is made
    check_work_fits(strategy, min(opts["concurrency"], len(problems)))
    plan = single_plan(opts["out"], config, scorer_spec, dataset.identity(), model_id)
    plan.default_note = default.note if default is not None else None
    _open_and_execute([plan], problems, opts, shard)


def sweep_command(opts: CommandLine) -> None:
    from pumsearch.runs.grid import parse_int_list, parse_scorer_specs, plan_grid
    from pumsearch.runs.session import check_sweep_dir, sweep_base_settings
    from pumsearch.search.engine import check_work_fits
    from pumsearch.strategies import make_strategy

    dataset, shard, model_id = _prepare(opts)
    strategies = [s.strip() for s in str(opts["strategies"]).split(",") if s.strip()]
    if not strategies:
        raise UsageError("give --strategies, e.g. bon,beam")
    budgets = parse_int_list(opts["budgets"], "--budgets", minimum=1)
    seeds = parse_int_list(opts["seeds"], "--seeds")
    scorers = _with_scorer_options(parse_scorer_specs(opts["scorers"]), opts.scorer(), "--scorers")
    options = opts.strategy_options(strategies)
    plans, notes = plan_grid(opts["out"], strategies=strategies, budgets=budgets, scorers=scorers, seeds=seeds,
                             settings=opts.search_settings(),
                             strategy_options=dict(zip(strategies, options, strict=True)),
                             dataset=dataset.identity(), model=model_id)
    planned_strategies = [make_strategy(plan.spec.search, plan.scorer is not None) for plan in plans]
    for note in notes:  # bad settings (e.g. N not a multiple of M) were refused before loading anything
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if not plans:
        raise UsageError("the grid is empty: every strategy needs a scorer that --scorers does not give")
    problems = dataset.load(shard)  # a bad dataset is reported before any directory is made
    for strategy in planned_strategies:
        check_work_fits(strategy, min(opts["concurrency"], len(problems)))
    base = {"settings": sweep_base_settings(opts.flat_settings(options)),
            "dataset": dataset.identity(), "model": model_id}
    keyed = {s.spec: s.keyed_options() for s in scorers if s is not None and s.keyed_options()}
    if keyed:  # only when set, so sweep directories made before these flags keep their key
        base["scorer_options"] = keyed
    grid = {"strategies": strategies, "budgets": budgets, "scorers": [s.spec if s else "none" for s in scorers],
            "seeds": seeds}
    _open_and_execute(plans, problems, opts, shard, before_open=lambda: check_sweep_dir(opts["out"], base, grid))


def _search_default(opts: CommandLine) -> Any:
    """With no --scorer, for a strategy that needs one: what pumsearch.api.search_default picks (the
    model family's scorer, the confidence scorer, or Best-of-N majority), announced in one line;
    else None (Best-of-N without a scorer stays as it is: majority vote)."""
    from pumsearch.api import search_default
    from pumsearch.strategies import get_strategy

    if opts["scorer"] or not get_strategy(opts["strategy"]).requires_scorer:
        return None
    default = search_default(opts["model"], opts["strategy"], opts["backend"])
    if default is not None:
        err_console.print(f"[yellow]note:[/] {escape(default.note)}", highlight=False, soft_wrap=True)
    return default


def _default_scorer_spec(default: Any) -> Any:
    from pumsearch.runs.grid import parse_scorer_specs

    if default is None or default.scorer is None:
        return None
    (spec,) = parse_scorer_specs(default.scorer if default.scorer_model is None
                                 else f"{default.scorer}={default.scorer_model}")
    return spec


def _prepare(opts: CommandLine) -> tuple[Any, tuple[int, int] | None, dict[str, Any]]:
    from pumsearch.runs.grid import parse_shard
    from pumsearch.runs.session import DatasetChoice, model_identity, parse_ids

    if not opts["dataset"]:
        raise UsageError("give --dataset (math500, gsm8k, a .jsonl path, or hf:NAME)")
    if opts["out"] is None:
        raise UsageError("give --out: the directory the records go to")
    dataset = DatasetChoice(opts["dataset"], opts["question_field"], opts["answer_field"], opts["id_field"],
                            opts["limit"], opts["offset"], parse_ids(opts["ids"]))
    shard = parse_shard(opts["shard"])
    backend = opts.backend()
    model_id = model_identity(opts["model"], backend["backend"], backend["dtype"], url=backend.get("url"),
                              tokenizer=backend.get("tokenizer"), extra_body=backend.get("extra_body"),
                              server_n=backend.get("server_n", "auto"))
    return dataset, shard, model_id


def _with_scorer_options(specs: list[Any], options: dict[str, Any], scorer_flag: str) -> list[Any]:
    """The scorer specs with the --scorer-* options each takes (refusing one that none takes)."""
    named = [s for s in specs if s is not None]
    per_scorer = iter(options_per_scorer([s.name for s in named], options, scorer_flag=scorer_flag))
    return [None if s is None else replace(s, options=next(per_scorer)) for s in specs]


def _check_references(plans: Sequence[Any], problems: Sequence[Any], scorers: dict[str, Any]) -> None:
    """A strategy setting or a scorer that needs reference answers refuses a dataset without them."""
    from pumsearch.search.problem import require_answers
    from pumsearch.strategies import make_strategy

    needs = {make_strategy(pl.spec.search, pl.scorer is not None).needs_reference() for pl in plans} - {None}
    for need in sorted(needs):
        require_answers(problems, who=need, fix="give --answer-field", error=UsageError)
    for spec, scorer in scorers.items():
        if scorer.needs_reference:
            require_answers(problems, who=f"scorer {spec}", fix="give --answer-field or drop that scorer",
                            error=UsageError)


def _check_backend_feeds(scorers: dict[str, Any], backend: str) -> None:
    """A scorer that reads the policy's token log-probabilities refuses a backend that returns none."""
    from pumsearch.backends import require_top_logprobs

    for spec, scorer in scorers.items():
        if getattr(scorer, "top_logprobs", 0):
            require_top_logprobs(backend, f"scorer {spec}")


def _open_and_execute(plans: list[Any], problems: list[Any], opts: CommandLine, shard: tuple[int, int] | None,
                      before_open: Callable[[], None] | None = None) -> None:
    """Load the scorers, open and lock the run directories (refusing one of another configuration,
    or one another process writes), load the policy, run, and say what failed. Scorers load first,
    so a bad checkpoint or option leaves no directory behind."""
    from pumsearch.runs.rundir import open_run_dir
    from pumsearch.runs.session import close_scorers, load_policy, load_scorers, run_plans

    _check_references(plans, problems, {})
    quiet_transformers()
    with console.status("loading the scorers...") if any(pl.scorer for pl in plans) else contextlib.nullcontext():
        scorers = load_scorers([pl.scorer for pl in plans], plans[0].spec.search.step_delimiter)
    with contextlib.ExitStack() as locks:  # held until the runs end; the OS drops them if the process dies
        try:
            _check_backend_feeds(scorers, opts.backend()["backend"])
            _check_references(plans, problems, scorers)
            if before_open is not None:
                before_open()
            for plan in plans:
                locks.enter_context(open_run_dir(plan.path, plan.spec).lock(shard))
            with console.status("loading the model..."):
                generator = load_policy(opts["model"], opts.backend())
        except BaseException:
            close_scorers(scorers)  # from here on run_plans closes them
            raise
        progress = RichProgress()
        try:
            with progress:
                tallies = run_plans(plans, problems, generator, progress=progress, concurrency=opts["concurrency"],
                                    batch_tokens=opts["batch_tokens"], shard=shard, scorers=scorers)
        except KeyboardInterrupt:
            err_console.print(f"[yellow]interrupted:[/] finished problems are saved in {escape(str(opts['out']))}; "
                              "rerun the same command to resume", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if print_outcomes(plans, tallies):
        raise typer.Exit(EXIT_PROBLEMS_FAILED)


def print_outcomes(plans: Sequence[Any], tallies: Sequence[Any]) -> bool:
    """One line per run (what finished, failed and is missing, accuracy over all its problems and
    over the finished ones), then this session's failures grouped by kind with counts and how to
    retry them. Returns whether any problem failed."""
    from pumsearch.runs.runner import group_failures

    for plan in plans:
        s = json.loads((plan.path / "summary.json").read_text())
        missing = f", {s['problems_missing']} not run" if s["problems_missing"] else ""
        over = (f" ({_fmt(s['accuracy_finished'])} over the {s['problems_finished']} finished)"
                if s["problems_finished"] != s["problems_planned"] else "")
        console.print(f"{plan.label}: {s['problems_finished']} of {s['problems_planned']} finished, "
                      f"{s['problems_failed']} failed{missing}; accuracy {_fmt(s['accuracy'])}{over} -> {plan.path}",
                      highlight=False, markup=False)
    errors = [e for tally in tallies for e in tally.errors]
    if not errors:
        return False
    err_console.print(f"[bold red]{len(errors)} problem{'s' if len(errors) != 1 else ''} failed:[/]", highlight=False)
    for count, example in group_failures(errors):
        err_console.print(f"  {count} x {escape(example)}", highlight=False, soft_wrap=True)
    err_console.print("their records say why (status \"failed\"); fix the cause and rerun the same command: "
                      "finished problems are kept and only these are run again", highlight=False, soft_wrap=True)
    return True


class RichProgress:
    """A rich progress bar per run, with live accuracy (over every finished problem of the run,
    those of earlier sessions too) and generated tokens per second (this session's)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("acc {task.fields[acc]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TimeElapsedColumn(), console=err_console)
        self.task: Any = None
        self.tally: Any = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def begin(self, label: str, total: int, already_done: int, previous: Sequence[dict[str, Any]] = ()) -> None:
        from pumsearch.runs.runner import Tally

        self.tally = Tally()
        for record in previous:
            self.tally.add(record, counts_tokens=False)
        if already_done:
            self.note(f"{label}: resuming {already_done}/{total} (finished before; {total - already_done} to run)")
        self.task = self.progress.add_task(escape(label), total=total, completed=already_done, acc=self._acc(),
                                           tps="-")

    def record(self, record: dict[str, Any]) -> None:
        self.tally.add(record)
        self.progress.update(self.task, advance=1, acc=self._acc(), tps=f"{self.tally.tokens_per_second:.1f}")

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def _acc(self) -> str:
        acc = self.tally.accuracy
        return "-" if acc is None else f"{acc:.3f}"


# -- report -----------------------------------------------------------------------------------------
def report_command(dirs: list[Path], csv_out: Path | None, json_out: Path | None, plots: Path | None,
                   no_plots: bool, finished_only: bool = False) -> None:
    from pumsearch.runs import report as rep

    result = rep.build_report(dirs, finished_only=finished_only)
    print_report(result, finished_only=finished_only)
    if csv_out:
        rep.write_csv(result, csv_out)
        console.print(f"table written to {csv_out}", highlight=False, markup=False)
    if json_out:
        rep.write_json(result, json_out)
        console.print(f"report written to {json_out}", highlight=False, markup=False)
    if not no_plots:
        for path in rep.save_figures(rep.make_figures(result), plots or dirs[0] / "plots"):
            console.print(f"plot written to {path}", highlight=False, markup=False)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


REPORT_COLUMNS = ("select", "N", "n", "accuracy", "± se", "pass@N", "maj@N", "tokens", "wall s", "failed",
                  "missing")


def print_report(result: Any, *, finished_only: bool = False) -> None:
    """One table per configuration (dataset, strategy, scorer and the rest of its settings, named
    by its id), a row per selection and budget; each fits 80 columns."""
    families: dict[str, list[Any]] = {}
    for row in result.rows:
        families.setdefault(row.family, []).append(row)
    for family, rows in families.items():
        head = rows[0]
        table = compact_table(REPORT_COLUMNS, text=("select",),
                              title=f"{head.dataset} · {head.strategy} / {head.scorer} · config {family[:8]}")
        for r in rows:
            table.add_row(r.select, f"{r.budget}{'*' if r.subsampled else ''}", str(r.n), _fmt(r.accuracy),
                          _fmt(r.se), _fmt(r.pass_at_n), _fmt(r.maj_at_n), _fmt(r.mean_tokens, 0),
                          _fmt(r.mean_wall_time, 2), str(r.failed), str(r.missing))
        console.print(table, highlight=False)
        console.print()
    notes = ["n: (seed, problem) pairs; tokens: mean generated per finished problem; wall s: mean seconds per "
             "finished problem"]
    if any(r.subsampled for r in result.rows):
        notes.append("* read off a run at a larger N (subsampled)")
    if finished_only:
        notes.append("accuracy over the finished problems only (--finished-only)")
    elif any(r.failed or r.missing for r in result.rows):
        notes.append("accuracy counts failed and missing problems as wrong (--finished-only: over the finished "
                     "ones); rerun a run's command to finish them")
    for note in notes:
        console.print(note, highlight=False, markup=False)
    if result.breakdown:
        sub = compact_table(("strategy", "scorer", "select", "N", "field", "value", "n", "accuracy"),
                            text=("strategy", "scorer", "select", "field", "value"),
                            title="accuracy by level and subject")
        for b in result.breakdown:
            sub.add_row(escape(b["strategy"]), escape(b["scorer"]), b["select"], str(b["budget"]), b["field"],
                        escape(str(b["value"])), str(b["n"]), _fmt(b["accuracy"]))
        console.print(sub)
