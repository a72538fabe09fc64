"""The ``pumsearch`` command line (typer). Heavy modules are imported inside the commands, so
``pumsearch --help`` answers fast."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inference-time search for LLM reasoning with pluggable reward models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
tree_app = typer.Typer(help="Inspect saved search trees.", no_args_is_help=True)
app.add_typer(tree_app, name="tree")

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user must change something (never shown as a traceback)."""
    from pumsearch.backends.transformers_backend import ModelLoadError
    from pumsearch.datasets import DatasetError
    from pumsearch.runs.records import RunError
    from pumsearch.scorers.base import ScorerError
    from pumsearch.strategies.base import StrategyError

    return (UsageError, ModelLoadError, ScorerError, StrategyError, DatasetError, RunError, ValueError,
            FileNotFoundError)


# -- shared options ----------------------------------------------------------------------------
Strategy = Annotated[str, typer.Option("--strategy", "-s", help="bon, or package.module:ClassName.")]
Budget = Annotated[int, typer.Option("--budget", "-n", help="N: solutions for bon (see docs/budget.md).")]
ScorerOpt = Annotated[str | None, typer.Option("--scorer", help="Scorer name (e.g. verifier).")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Policy path or hub name; default: embedded SmolLM2.")]


@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")],
    strategy: Strategy = "bon",
    budget: Budget = 8,
    scorer: ScorerOpt = None,
    answer: Annotated[str | None, typer.Option(help="Reference answer (needed by the verifier).")] = None,
    model: Model = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")] = "float32",
    cache_dir: Annotated[str | None, typer.Option(help="Where the embedded model is converted to.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Token cap per solution.")] = 512,
    max_step_tokens: Annotated[int, typer.Option(help="Token cap per step (tree search).")] = 256,
    step_delimiter: Annotated[str, typer.Option(help="String that ends a step.")] = "\n\n",
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    aggregate: Annotated[str, typer.Option(help="Step scores to solution score: last, min, prod, mean.")] = "last",
    select: Annotated[str | None, typer.Option(help="best, majority or weighted (default: best with a "
                                                    "scorer, majority without).")] = None,
    concurrency: Annotated[int, typer.Option(help="Problems searched at once.")] = 16,
    batch_tokens: Annotated[int | None, typer.Option(help="Token cap of one backend batch.")] = None,
    tree_out: Annotated[Path | None, typer.Option(help="Where to write the search tree (JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-problem record as JSON.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code to run.")] = False,
) -> None:
    """Search one question and print the answer, the chosen path, the candidates and the counters."""
    try:
        result, config = _solve(
            question, answer=answer, model=model, device=device, dtype=dtype, cache_dir=cache_dir,
            scorer=scorer, concurrency=concurrency, batch_tokens=batch_tokens,
            trust_remote_code=trust_remote_code,
            settings=dict(strategy=strategy, budget=budget, temperature=temperature, top_p=top_p,
                          max_tokens=max_tokens, max_step_tokens=max_step_tokens, step_delimiter=step_delimiter,
                          seed=seed, aggregate=aggregate, select=select),
        )
    except user_errors() as err:
        fail(str(err))
        return
    from pumsearch.search.result import make_record

    started = time.time() - result.counters.wall_time
    path = tree_out or Path("pumsearch-trees") / f"solve-{time.strftime('%Y%m%d-%H%M%S')}.tree.json"
    result.tree.save(path, result.summary())
    record = make_record(result, tree_file=str(path), scorer=scorer, budget=budget, seed=seed, started_at=started)
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    print_result(result, config.aggregate)
    console.print(f"tree written to [bold]{path}[/]")


def _solve(question: str, *, answer: str | None, model: str | None, device: str, dtype: str,
           cache_dir: str | None, scorer: str | None, concurrency: int, batch_tokens: int | None,
           trust_remote_code: bool, settings: dict[str, Any]) -> tuple[Any, Any]:
    import asyncio

    from pumsearch.api import asearch, make_strategy, resolve_scorer
    from pumsearch.backends import load_generator
    from pumsearch.search.config import SearchConfig
    from pumsearch.search.problem import Problem

    if not question.strip():
        raise UsageError("the question is empty: give the problem text to solve")
    config = SearchConfig(**settings)
    problem = Problem("question", question, answer)
    scorer_obj = resolve_scorer(scorer, config)
    if scorer_obj is not None and scorer_obj.needs_reference and answer is None:
        raise UsageError(f"scorer {scorer!r} needs the reference answer: pass --answer")
    make_strategy(config, scorer_obj is not None)  # refuse bad settings before loading a model
    with console.status("loading the model..."):
        generator = load_generator(model, device=device, dtype=dtype, cache_dir=cache_dir,
                                   trust_remote_code=trust_remote_code)
    with console.status(f"searching ({config.strategy}, budget {config.budget})..."):
        (outcome,) = asyncio.run(asearch([problem], generator=generator, scorer=scorer_obj, config=config,
                                         concurrency=concurrency, batch_tokens=batch_tokens))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome, config


def print_result(result: Any, aggregate: str) -> None:
    verdict = "" if result.correct is None else (" [green](correct)[/]" if result.correct else " [red](wrong)[/]")
    console.print(f"[bold]answer:[/] {result.answer if result.answer is not None else '(none stated)'}{verdict}",
                  highlight=False)
    if result.cut_short:
        console.print("[yellow]the search was cut short; this is its best so far[/]")
    console.rule("chosen path")
    for i, step in enumerate(result.chosen_steps, 1):
        console.print(f"[bold cyan]step {i}.[/] {step}", highlight=False, markup=True)
    table = Table(title=f"candidates ({aggregate} aggregation)")
    for col in ("node", "answer", "score", "correct", "tokens", "finish"):
        table.add_column(col)
    for cand in result.candidates:
        node = result.tree[cand.node]
        tokens = sum(result.tree[n]["num_tokens"] for n in result.tree.path(cand.node))
        mark = "*" if cand.node == result.chosen_node else ""
        table.add_row(f"{cand.node}{mark}", str(cand.answer), "-" if cand.score is None else f"{cand.score:.4f}",
                      "-" if cand.correct is None else str(cand.correct), str(tokens), str(node["finish_reason"]))
    console.print(table)
    counters = Table(title="compute")
    counters.add_column("counter")
    counters.add_column("value", justify="right")
    for key, value in result.counters.to_dict().items():
        counters.add_row(key, str(value))
    console.print(counters)


# -- evaluation at scale: run, sweep, report (docs/evaluation.md) ----------------------------------
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="math500, gsm8k, a .jsonl path, "
                                                "hf:NAME[:SPLIT], or a registered PREFIX:CONFIG.")]
QuestionField = Annotated[str | None, typer.Option(help="JSON field of the question "
                                                       "(default: problem or question).")]
AnswerField = Annotated[str | None, typer.Option(help="JSON field of the reference answer "
                                                     "(default: answer).")]
IdField = Annotated[str | None, typer.Option(help="JSON field of the problem id (default: unique_id or id; "
                                                  "else <dataset>:<line>).")]
Limit = Annotated[int | None, typer.Option(help="At most this many problems.")]
Offset = Annotated[int, typer.Option(help="Skip this many problems first.")]
Ids = Annotated[str | None, typer.Option(help="Only these problem ids: a,b,c or @FILE (one per line).")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="The run (or sweep) directory.")]
Shard = Annotated[str | None, typer.Option(help="i/n: run the i-th of n disjoint shards (0-based).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML file of option values; "
                                                                 "flags override it.")]
BackendOpt = Annotated[str, typer.Option(hidden=True, help="transformers, or scripted (tests).")]
ScriptedDelay = Annotated[float, typer.Option(hidden=True, help="Seconds per scripted backend call (tests).")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")]
CacheDir = Annotated[str | None, typer.Option(help="Where the embedded model is converted to.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
MaxTokens = Annotated[int, typer.Option(help="Token cap per solution.")]
MaxStepTokens = Annotated[int, typer.Option(help="Token cap per step (tree search).")]
StepDelimiter = Annotated[str, typer.Option(help="String that ends a step.")]
AggregateOpt = Annotated[str, typer.Option(help="Step scores to solution score: last, min, prod, mean.")]
SelectOpt = Annotated[str | None, typer.Option(help="best, majority or weighted (default: best with a "
                                                    "scorer, majority without).")]
BeamWidth = Annotated[int, typer.Option(help="M: beam width (beam, dvts).")]
MaxDepth = Annotated[int, typer.Option(help="Most steps per solution (tree search).")]
TimeLimit = Annotated[float | None, typer.Option(help="Seconds per problem before the search is cut short.")]
Concurrency = Annotated[int, typer.Option(help="Problems searched at once.")]
BatchTokens = Annotated[int | None, typer.Option(help="Token cap of one backend batch.")]
TrustRemote = Annotated[bool, typer.Option(help="Allow the model's own code to run.")]

SEARCH_FLAGS = ("temperature", "top_p", "max_tokens", "max_step_tokens", "step_delimiter", "aggregate",
                "select", "beam_width", "max_depth", "time_limit")


def apply_config_file(ctx: typer.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Values from --config FILE where the flag was not given on the command line."""
    from pumsearch.runs.session import SEARCH_FIELDS, read_config_file

    path = params.get("config_file")
    if path is None:
        return params
    values = read_config_file(path, set(params) - {"config_file"})
    merged = dict(params)
    extra_search: dict[str, Any] = {}
    for name, value in values.items():
        if name in params:
            source = ctx.get_parameter_source(name)
            if source is None or source.name != "COMMANDLINE":  # typer may vendor its own click
                merged[name] = ",".join(map(str, value)) if isinstance(value, list) else value
        elif name in SEARCH_FIELDS:
            extra_search[name] = value
    merged["_search_extra"] = extra_search
    return merged


def _search_settings(p: dict[str, Any]) -> dict[str, Any]:
    settings = {name: p[name] for name in SEARCH_FLAGS}
    settings.update(p.get("_search_extra") or {})
    return settings


def _prepare(p: dict[str, Any]) -> tuple[Any, tuple[int, int] | None, dict[str, Any]]:
    from pumsearch.runs.grid import parse_shard
    from pumsearch.runs.session import DatasetChoice, model_identity, parse_ids

    if not p.get("dataset"):
        raise UsageError("give --dataset (math500, gsm8k, a .jsonl path, or hf:NAME)")
    if p.get("out") is None:
        raise UsageError("give --out: the directory the records go to")
    dataset = DatasetChoice(p["dataset"], p["question_field"], p["answer_field"], p["id_field"], p["limit"],
                            p["offset"], parse_ids(p["ids"]))
    shard = parse_shard(p["shard"])
    return dataset, shard, model_identity(p["model"], p["backend"], p["dtype"])


def _execute(plans: list[Any], problems: list[Any], p: dict[str, Any], shard: tuple[int, int] | None) -> None:
    from pumsearch.runs.session import load_policy, run_plans

    with console.status("loading the model..."):
        generator = load_policy(p["model"], backend=p["backend"], device=p["device"], dtype=p["dtype"],
                                cache_dir=p["cache_dir"], trust_remote_code=p["trust_remote_code"],
                                scripted_delay=p["scripted_delay"])
    progress = RichProgress()
    try:
        with progress:
            run_plans(plans, problems, generator, progress=progress, concurrency=p["concurrency"],
                      batch_tokens=p["batch_tokens"], shard=shard)
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted:[/] finished problems are saved in {p['out']}; "
                          "rerun the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    for plan in plans:
        summary = json.loads((plan.path / "summary.json").read_text())
        acc = summary["accuracy"]
        console.print(f"{plan.label}: {summary['problems_finished']} finished, "
                      f"{summary['problems_failed']} failed, accuracy {_fmt(acc)} -> {plan.path}",
                      highlight=False,
                      markup=False)


class RichProgress:
    """A rich progress bar per run, with live accuracy and generated tokens per second."""

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

    def begin(self, label: str, total: int, already_done: int) -> None:
        from rich.markup import escape

        from pumsearch.runs.runner import Tally

        self.tally = Tally()
        self.task = self.progress.add_task(escape(label), total=total, completed=already_done, acc="-",
                                           tps="-")

    def record(self, record: dict[str, Any]) -> None:
        self.tally.add(record)
        acc = self.tally.accuracy
        self.progress.update(self.task, advance=1, acc="-" if acc is None else f"{acc:.3f}",
                             tps=f"{self.tally.tokens_per_second:.1f}")

    def end(self) -> None:
        pass


@app.command()
def run(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    out: Out = None,
    strategy: Strategy = "bon",
    budget: Budget = 8,
    scorer: Annotated[str | None, typer.Option(help="Scorer: NAME, NAME=PATH or NAME:FORMAT=PATH.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    question_field: QuestionField = None,
    answer_field: AnswerField = None,
    id_field: IdField = None,
    limit: Limit = None,
    offset: Offset = 0,
    ids: Ids = None,
    model: Model = None,
    backend: BackendOpt = "transformers",
    scripted_delay: ScriptedDelay = 0.0,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    cache_dir: CacheDir = None,
    temperature: Temperature = 0.8,
    top_p: TopP = 1.0,
    max_tokens: MaxTokens = 512,
    max_step_tokens: MaxStepTokens = 256,
    step_delimiter: StepDelimiter = "\n\n",
    aggregate: AggregateOpt = "last",
    select: SelectOpt = None,
    beam_width: BeamWidth = 4,
    max_depth: MaxDepth = 40,
    time_limit: TimeLimit = None,
    concurrency: Concurrency = 16,
    batch_tokens: BatchTokens = None,
    shard: Shard = None,
    config_file: ConfigFile = None,
    trust_remote_code: TrustRemote = False,
) -> None:
    """Search one configuration over a dataset: records, trees and a summary in --out (resumable)."""
    try:
        p = apply_config_file(ctx, dict(locals()))
        from pumsearch.runs.grid import parse_scorer_specs, single_plan
        from pumsearch.search.config import SearchConfig

        dataset_choice, shard_t, model_id = _prepare(p)
        (scorer_spec,) = parse_scorer_specs(p["scorer"]) if p["scorer"] else [None]
        config = SearchConfig(strategy=p["strategy"], budget=p["budget"], seed=p["seed"],
                              **_search_settings(p))
        from pumsearch.api import make_strategy

        make_strategy(config, scorer_spec is not None)  # refuse bad settings before loading anything
        problems = dataset_choice.load(shard_t)  # a bad dataset is reported before any directory is made
        plan = single_plan(Path(p["out"]), config, scorer_spec, dataset_choice.identity(), model_id)
        from pumsearch.runs.rundir import open_run_dir

        open_run_dir(plan.path, plan.spec)  # a directory of another configuration is refused now
        _execute([plan], problems, p, shard_t)
    except user_errors() as err:
        fail(str(err))


@app.command()
def sweep(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    out: Out = None,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies, e.g. bon,beam,mcts.")] = "bon",
    budgets: Annotated[str, typer.Option(help="Comma-separated budgets N, e.g. 4,16,64.")] = "4,8",
    scorers: Annotated[str | None, typer.Option(help="Comma-separated scorers: NAME, NAME=PATH, "
                                                     "NAME:FORMAT=PATH, none.")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated run seeds.")] = "0",
    question_field: QuestionField = None,
    answer_field: AnswerField = None,
    id_field: IdField = None,
    limit: Limit = None,
    offset: Offset = 0,
    ids: Ids = None,
    model: Model = None,
    backend: BackendOpt = "transformers",
    scripted_delay: ScriptedDelay = 0.0,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    cache_dir: CacheDir = None,
    temperature: Temperature = 0.8,
    top_p: TopP = 1.0,
    max_tokens: MaxTokens = 512,
    max_step_tokens: MaxStepTokens = 256,
    step_delimiter: StepDelimiter = "\n\n",
    aggregate: AggregateOpt = "last",
    select: SelectOpt = None,
    beam_width: BeamWidth = 4,
    max_depth: MaxDepth = 40,
    time_limit: TimeLimit = None,
    concurrency: Concurrency = 16,
    batch_tokens: BatchTokens = None,
    shard: Shard = None,
    config_file: ConfigFile = None,
    trust_remote_code: TrustRemote = False,
) -> None:
    """Run a grid (strategies x budgets x scorers x seeds) into --out, one directory per configuration.
    Best-of-N (and DVTS) run once at the largest N; smaller budgets are read off that run."""
    try:
        p = apply_config_file(ctx, dict(locals()))
        from pumsearch.runs.grid import parse_int_list, parse_scorer_specs, plan_grid
        from pumsearch.runs.rundir import open_run_dir
        from pumsearch.runs.session import check_sweep_dir

        dataset_choice, shard_t, model_id = _prepare(p)
        strategy_list = [s.strip() for s in str(p["strategies"]).split(",") if s.strip()]
        if not strategy_list:
            raise UsageError("give --strategies, e.g. bon,beam")
        budget_list = parse_int_list(p["budgets"], "--budgets", minimum=1)
        seed_list = parse_int_list(p["seeds"], "--seeds")
        scorer_list = parse_scorer_specs(p["scorers"])
        settings = _search_settings(p)
        plans, notes = plan_grid(Path(p["out"]), strategies=strategy_list, budgets=budget_list,
                                 scorers=scorer_list, seeds=seed_list, settings=settings,
                                 dataset=dataset_choice.identity(), model=model_id)
        from pumsearch.api import make_strategy

        for plan in plans:  # refuse bad settings (e.g. N not a multiple of M) before loading anything
            make_strategy(plan.spec.search, plan.scorer is not None)
        for note in notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
        if not plans:
            raise UsageError("the grid is empty: every strategy needs a scorer that --scorers does not give")
        problems = dataset_choice.load(shard_t)  # a bad dataset is reported before any directory is made
        base = {"settings": settings, "dataset": dataset_choice.identity(), "model": model_id}
        check_sweep_dir(Path(p["out"]), base, {"strategies": strategy_list, "budgets": budget_list,
                                               "scorers": [s.spec if s else "none" for s in scorer_list],
                                               "seeds": seed_list})
        for plan in plans:
            open_run_dir(plan.path, plan.spec)
        _execute(plans, problems, p, shard_t)
    except user_errors() as err:
        fail(str(err))


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run or sweep directories (merged).")],
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the table as CSV.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table and breakdowns as "
                                                                  "JSON.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Directory for the PNG plots "
                                                    "(default: DIR/plots).")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the plots.")] = False,
) -> None:
    """Accuracy (± standard error over seeds and problems), pass@N, maj@N, tokens and wall time per
    configuration and budget; breakdowns by MATH level and subject; CSV/JSON export; PNG plots."""
    from pumsearch.runs import report as rep

    try:
        result = rep.build_report(dirs)
    except user_errors() as err:
        fail(str(err))
        return
    print_report(result)
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


def print_report(result: Any) -> None:
    from rich.markup import escape

    table = Table(title="accuracy by configuration and budget")
    for col in ("dataset", "strategy", "scorer", "select", "N", "seeds", "n", "accuracy", "± se", "pass@N",
                "maj@N", "tokens", "wall s", "config"):
        left = col in ("dataset", "strategy", "scorer", "select")
        table.add_column(col, justify="left" if left else "right")
    for r in result.rows:
        table.add_row(escape(r.dataset), escape(r.strategy), escape(r.scorer), r.select,
                      f"{r.budget}{'*' if r.subsampled else ''}", str(r.seeds), str(r.n), _fmt(r.accuracy),
                      _fmt(r.se),
                      _fmt(r.pass_at_n), _fmt(r.maj_at_n), _fmt(r.mean_tokens, 1), _fmt(r.mean_wall_time, 2),
                      r.family[:8])
    console.print(table)
    if any(r.subsampled for r in result.rows):
        console.print("* read off a run at a larger N (subsampled)", highlight=False, markup=False)
    if result.breakdown:
        sub = Table(title="accuracy by level and subject")
        for col in ("strategy", "scorer", "select", "N", "field", "value", "n", "accuracy"):
            sub.add_column(col)
        for b in result.breakdown:
            sub.add_row(escape(b["strategy"]), escape(b["scorer"]), b["select"], str(b["budget"]), b["field"],
                        escape(str(b["value"])), str(b["n"]), _fmt(b["accuracy"]))
        console.print(sub)


@tree_app.command("show")
def tree_show(
    file: Annotated[Path, typer.Argument(help="A saved tree (.tree.json).")],
    width: Annotated[int, typer.Option(help="Characters of step text per line.")] = 80,
) -> None:
    """Print a saved tree as an indented outline: step text, scores, finish reasons."""
    from pumsearch.search.tree import load_tree

    try:
        tree, result = load_tree(file)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
        return
    console.print(f"[bold]problem:[/] {tree.problem.question}", highlight=False)
    chosen = set(result.get("chosen_path", [])) if result else set()
    for line in tree_outline(tree, width, chosen):
        console.print(line, highlight=False, markup=False)


def tree_outline(tree: Any, width: int, chosen: set[int]) -> list[str]:
    from pumsearch.search.tree import ROOT

    lines: list[str] = []
    stack = [(child, 1) for child in reversed(tree.children(ROOT))]
    while stack:
        node, depth = stack.pop()
        attrs = tree[node]
        text = " ".join(attrs["text"].split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        scores = " ".join(f"{k}={v:.3f}" for k, v in attrs["scores"].items())
        tags = [attrs["finish_reason"] or ""]
        if attrs["terminal"]:
            tags.append(f"answer={attrs['answer']}")
        if attrs["correct"] is not None:
            tags.append("correct" if attrs["correct"] else "wrong")
        if attrs["visits"]:
            tags.append(f"visits={attrs['visits']}")
        mark = "*" if node in chosen else "-"
        lines.append(f"{'  ' * (depth - 1)}{mark} [{node}] {text}  ({' '.join(t for t in tags if t)}) {scores}".rstrip())
        stack.extend((child, depth + 1) for child in reversed(tree.children(node)))
    return lines


def main() -> None:
    app()


if __name__ == "__main__":
    main()
