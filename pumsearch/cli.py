"""The ``pumsearch`` command line (typer). Heavy modules are imported inside the commands, so
``pumsearch --help`` answers fast."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pumsearch.cli_common import console, err_console, fail, quiet_transformers, user_errors
from pumsearch.cli_options import (
    DEFAULTS,
    SEARCH_DEFAULTS,
    SEARCH_FLAGS,
    Aggregate,
    Backend,
    BatchTokens,
    BeamWidth,
    Budget,
    CacheDir,
    Concurrency,
    CPuct,
    Device,
    Dtype,
    Expansions,
    FilterDuplicates,
    Launch,
    Lookahead,
    MaxConcurrency,
    MaxDepth,
    MaxStepTokens,
    MaxTokens,
    MctsParallel,
    MctsStepsPerSolution,
    Model,
    PrmFormat,
    RequestTimeout,
    ResolvedFlags,
    Retries,
    ScorerBase,
    ScorerDevice,
    ScorerDtype,
    ScorerModel,
    ScorerName,
    ScorerOptionList,
    ScorerUrl,
    ScriptedDelay,
    Seed,
    Select,
    StepDelimiter,
    Strategy,
    Temperature,
    TerminalReward,
    TimeLimit,
    Tokenizer,
    TopP,
    TrustRemote,
    Url,
    UsageError,
    options_per_scorer,
    resolve_flags,
    scorer_options,
)
from pumsearch.registry import SCORERS
from pumsearch.search.problem import require_answers

D = SEARCH_DEFAULTS
app = typer.Typer(help="Inference-time search for LLM reasoning with pluggable reward models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve.")],
    strategy: Strategy = D.strategy,
    budget: Budget = D.budget,
    scorer: ScorerName = None,
    answer: Annotated[str | None, typer.Option(help="Reference answer (needed by the verifier).")] = None,
    model: Model = None,
    device: Device = DEFAULTS.device,
    dtype: Dtype = DEFAULTS.dtype,
    cache_dir: CacheDir = None,
    temperature: Temperature = D.temperature,
    top_p: TopP = D.top_p,
    max_tokens: MaxTokens = D.max_tokens,
    max_step_tokens: MaxStepTokens = D.max_step_tokens,
    step_delimiter: StepDelimiter = D.step_delimiter,
    seed: Seed = D.seed,
    aggregate: Aggregate = D.aggregate,
    select: Select = D.select,
    concurrency: Concurrency = DEFAULTS.concurrency,
    batch_tokens: BatchTokens = None,
    tree_out: Annotated[Path | None, typer.Option(help="Where to write the search tree (JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-problem record as JSON.")] = False,
    trust_remote_code: TrustRemote = False,
    backend: Backend = DEFAULTS.backend,
    url: Url = None,
    launch: Launch = False,
    tokenizer: Tokenizer = None,
    max_concurrency: MaxConcurrency = DEFAULTS.max_concurrency,
    request_timeout: RequestTimeout = DEFAULTS.request_timeout,
    retries: Retries = DEFAULTS.retries,
    scripted_delay: ScriptedDelay = DEFAULTS.scripted_delay,
    scorer_url: ScorerUrl = None,
    scorer_model: ScorerModel = None,
    scorer_base: ScorerBase = None,
    scorer_device: ScorerDevice = None,
    scorer_dtype: ScorerDtype = None,
    prm_format: PrmFormat = None,
    scorer_option: ScorerOptionList = None,
    beam_width: BeamWidth = D.beam_width,
    max_depth: MaxDepth = D.max_depth,
    lookahead: Lookahead = D.lookahead,
    filter_duplicates: FilterDuplicates = D.filter_duplicates,
    c_puct: CPuct = D.c_puct,
    expansions: Expansions = D.expansions,
    mcts_steps_per_solution: MctsStepsPerSolution = D.mcts_steps_per_solution,
    terminal_reward: TerminalReward = D.terminal_reward,
    mcts_parallel: MctsParallel = D.mcts_parallel,
    time_limit: TimeLimit = D.time_limit,
) -> None:
    """Search one question and print the answer, the chosen path, the candidates and the counters."""
    try:
        from pumsearch.api import with_default_scorer

        if scorer is None and scorer_model is None:  # a testbed policy brings its own PUM
            scorer, scorer_model = with_default_scorer(model, scorer, scorer_model)
            if scorer is not None and not as_json:
                err_console.print(f"[yellow]note:[/] no --scorer given: using the shipped testbed PUM "
                                  f"({escape(str(scorer_model))})", highlight=False)
        flags = resolve_flags(dict(locals()))
        per_scorer = options_per_scorer([scorer] if scorer else [], flags.scorer)
        scorer_opts = per_scorer[0] if per_scorer else {}
        result, config = _solve(question, answer=answer, model=model, scorer=scorer, concurrency=concurrency,
                                batch_tokens=batch_tokens, flags=flags, scorer_opts=scorer_opts)
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


async def _search_and_close(problem: Any, generator: Any, scorer_obj: Any, config: Any, concurrency: int,
                            batch_tokens: int | None) -> Any:
    from pumsearch.api import asearch

    try:
        (outcome,) = await asearch([problem], generator=generator, scorer=scorer_obj, config=config,
                                   concurrency=concurrency, batch_tokens=batch_tokens)
    finally:  # stops a --launch'ed server, closes connections
        await generator.aclose()
        if scorer_obj is not None:
            await scorer_obj.aclose()
    return outcome


def _solve(question: str, *, answer: str | None, model: str | None, scorer: str | None, concurrency: int,
           batch_tokens: int | None, flags: ResolvedFlags, scorer_opts: dict[str, Any]) -> tuple[Any, Any]:
    import asyncio

    from pumsearch.api import make_strategy, resolve_scorer
    from pumsearch.backends import load_generator
    from pumsearch.search.config import SearchConfig
    from pumsearch.search.problem import Problem

    if not question.strip():
        raise UsageError("the question is empty: give the problem text to solve")
    config = SearchConfig(**flags.settings)
    problem = Problem("question", question, answer)
    if config.strategy == "mcts" and config.terminal_reward == "verifier" and answer is None:
        raise UsageError("--terminal-reward verifier needs the reference answer: pass --answer")
    make_strategy(config, scorer is not None)  # refuse bad settings before loading any model
    quiet_transformers()
    with console.status(f"loading the scorer ({scorer})...") if scorer else _nothing():
        scorer_obj = resolve_scorer(scorer, config, **scorer_opts)
    if scorer_obj is not None and scorer_obj.needs_reference:
        require_answers(problem, who=f"scorer {scorer!r}", fix="pass --answer", error=UsageError)
    with console.status("loading the model..."):
        generator = load_generator(model, **flags.backend)
    with console.status(f"searching ({config.strategy}, budget {config.budget})..."):
        outcome = asyncio.run(_search_and_close(problem, generator, scorer_obj, config, concurrency,
                                                batch_tokens))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome, config


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def read_steps_file(path: Path, delimiter: str) -> tuple[str, ...]:
    """Steps from a JSON list of strings (.json) or a text file split at the step delimiter."""
    if not path.exists():
        raise UsageError(f"steps file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            steps = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"steps file {path} is not valid JSON: {err}") from None
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise UsageError(f"steps file {path} must hold a JSON list of strings")
    else:
        steps = text.strip().split(delimiter)
    if not steps or not any(s.strip() for s in steps):
        raise UsageError(f"steps file {path} has no steps")
    for i, step in enumerate(steps, 1):
        if not step.strip():
            raise UsageError(f"step {i} in {path} is empty: remove it or give it text")
    return tuple(s.strip() for s in steps)


@app.command()
def score(
    scorer: Annotated[str, typer.Option("--scorer", help=f"{SCORERS.choices()}.")],
    question: Annotated[str, typer.Option(help="The problem text.")],
    steps_file: Annotated[Path, typer.Option(help="Steps: a text file split at the step delimiter, or a "
                                                  "JSON list of strings (.json).")],
    answer: Annotated[str | None, typer.Option(help="Reference answer (verifier, rollout).")] = None,
    scorer_model: ScorerModel = None,
    scorer_base: ScorerBase = None,
    scorer_device: ScorerDevice = None,
    scorer_dtype: ScorerDtype = None,
    prm_format: PrmFormat = None,
    scorer_option: ScorerOptionList = None,
    step_delimiter: Annotated[str, typer.Option(help="String that separates steps.")] = "\n\n",
    complete: Annotated[bool | None, typer.Option(
        "--complete/--partial", help="Whether the whole solution is finished (default: when it states an "
        "answer).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score every prefix of a solution with one scorer: per-step values and the prefix's value."""
    try:
        options = scorer_options(scorer_model, scorer_base, scorer_device, scorer_dtype, prm_format,
                                 scorer_option)
        rows, identity = _score_prefixes(scorer, question, steps_file, answer, complete,
                                         step_delimiter.replace("\\n", "\n"), options)
    except user_errors() as err:
        fail(str(err))
        return
    if as_json:
        sys.stdout.write(json.dumps({"scorer": identity, "prefixes": rows}, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"prefix scores: {identity}")
    for col in ("step", "text", "step value", "prefix value"):
        table.add_column(col, overflow="fold")
    for row in rows:
        step_value = "-" if row["step_value"] is None else f"{row['step_value']:.4f}"
        table.add_row(str(row["step"]), Text(row["text"][:80]), step_value, f"{row['prefix_value']:.4f}")
    console.print(table)


def _score_prefixes(scorer: str, question: str, steps_file: Path, answer: str | None, complete: bool | None,
                    delimiter: str, options: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    import asyncio

    from pumsearch.scorers import load_scorer
    from pumsearch.search.grading import extract_answer
    from pumsearch.search.problem import Problem
    from pumsearch.search.protocols import ScoreItem

    if not question.strip():
        raise UsageError("--question is empty: give the problem text")
    steps = read_steps_file(steps_file, delimiter)
    if scorer in ("pum", "prm", "orm") and "model" not in options:
        raise UsageError(f"scorer {scorer!r} needs a checkpoint: pass --scorer-model PATH")
    finished = extract_answer(delimiter.join(steps)) is not None if complete is None else complete
    problem = Problem("question", question, answer)
    scorer_obj = load_scorer(scorer, step_delimiter=delimiter, **options)
    if scorer_obj.needs_reference:
        require_answers(problem, who=f"scorer {scorer!r}", fix="pass --answer", error=UsageError)
    items = [ScoreItem(problem, steps[:i], complete=finished and i == len(steps))
             for i in range(1, len(steps) + 1)]

    async def run() -> list[Any]:
        try:
            return await scorer_obj.score(items)
        finally:
            await scorer_obj.aclose()

    scores = asyncio.run(run())
    full = scores[-1].step_values
    rows = [{"step": i + 1, "text": steps[i], "step_value": full[i] if full else None,
             "prefix_value": s.value, "extra": {k: v for k, v in s.extra.items() if k != "cache_hit"}}
            for i, s in enumerate(scores)]
    return rows, scorer_obj.identity


def print_result(result: Any, aggregate: str) -> None:
    verdict = "" if result.correct is None else (" [green](correct)[/]" if result.correct else " [red](wrong)[/]")
    answer = escape(result.answer) if result.answer is not None else "(none stated)"
    console.print(f"[bold]answer:[/] {answer}{verdict}", highlight=False)
    if result.cut_short:
        console.print("[yellow]the search was cut short; this is its best so far[/]")
    console.rule("chosen path")
    for i, step in enumerate(result.chosen_steps, 1):
        console.print(f"[bold cyan]step {i}.[/] {escape(step)}", highlight=False)
    table = Table(title=f"candidates ({aggregate} aggregation)")
    for col in ("node", "answer", "score", "correct", "tokens", "finish"):
        table.add_column(col)
    for cand in result.candidates:
        node = result.tree[cand.node]
        tokens = sum(result.tree[n]["num_tokens"] for n in result.tree.path(cand.node))
        mark = "*" if cand.node == result.chosen_node else ""
        table.add_row(f"{cand.node}{mark}", Text(str(cand.answer)), "-" if cand.score is None else f"{cand.score:.4f}",
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


def apply_config_file(ctx: typer.Context, params: dict[str, Any]) -> dict[str, Any]:
    """Values from --config FILE where the flag was not given on the command line."""
    from pumsearch.runs.session import SEARCH_FIELDS, read_config_file

    params = {k: v for k, v in params.items() if k != "ctx"}
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
                merged[name] = _config_value(name, value)
        elif name in SEARCH_FIELDS:
            extra_search[name] = value
    merged["_search_extra"] = extra_search
    return merged


def _config_value(name: str, value: Any) -> Any:
    """A TOML value as the flag would give it: lists of the grid axes joined with commas; scorer
    options as a list of KEY=VALUE or a table."""
    if name == "scorer_option":
        if isinstance(value, dict):
            return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _prepare(p: dict[str, Any], flags: ResolvedFlags) -> tuple[Any, tuple[int, int] | None, dict[str, Any]]:
    from pumsearch.runs.grid import parse_shard
    from pumsearch.runs.session import DatasetChoice, model_identity, parse_ids

    if not p.get("dataset"):
        raise UsageError("give --dataset (math500, gsm8k, a .jsonl path, or hf:NAME)")
    if p.get("out") is None:
        raise UsageError("give --out: the directory the records go to")
    dataset = DatasetChoice(p["dataset"], p["question_field"], p["answer_field"], p["id_field"], p["limit"],
                            p["offset"], parse_ids(p["ids"]))
    shard = parse_shard(p["shard"])
    backend = flags.backend
    model_id = model_identity(p["model"], backend["backend"], backend["dtype"], url=backend.get("url"),
                              tokenizer=backend.get("tokenizer"))
    return dataset, shard, model_id


def _with_scorer_options(specs: list[Any], options: dict[str, Any], scorer_flag: str) -> list[Any]:
    """The scorer specs with the --scorer-* options each takes (refusing one that none takes)."""
    from dataclasses import replace

    named = [s for s in specs if s is not None]
    per_scorer = iter(options_per_scorer([s.name for s in named], options, scorer_flag=scorer_flag))
    return [None if s is None else replace(s, options=next(per_scorer)) for s in specs]


# The search flags sweep.json's base recorded before sweep had the tree-search flags. Those join the
# base only when set to something other than their default, so sweep directories made before resume.
_SWEEP_BASE_FLAGS = ("temperature", "top_p", "max_tokens", "max_step_tokens", "step_delimiter", "aggregate",
                     "select", "beam_width", "max_depth", "time_limit")


def _sweep_base_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items()
            if k in _SWEEP_BASE_FLAGS or k not in SEARCH_FLAGS or v != getattr(D, k)}


def _check_references(plans: list[Any], problems: list[Any]) -> None:
    """MCTS valuing finished prefixes by the verifier needs every problem's reference answer."""
    if not any(pl.spec.search.strategy == "mcts" and pl.spec.search.terminal_reward == "verifier"
               for pl in plans):
        return
    missing = [pr.id for pr in problems if pr.answer is None]
    if missing:
        raise UsageError(f"--terminal-reward verifier needs reference answers, but {len(missing)} problem(s) "
                         f"have none (first: {missing[0]!r}); give --answer-field")


def _check_scorer_references(scorers: dict[str, Any], problems: list[Any]) -> None:
    for spec, scorer in scorers.items():
        if scorer.needs_reference:
            require_answers(problems, who=f"scorer {spec}", fix="give --answer-field or drop that scorer",
                            error=UsageError)


def _open_and_execute(plans: list[Any], problems: list[Any], p: dict[str, Any], flags: ResolvedFlags,
                      shard: tuple[int, int] | None, before_open: Any = None) -> None:
    """Load the scorers, open the run directories (refusing one of another configuration), load the
    policy, run. Scorers load first, so a bad checkpoint or option leaves no directory behind."""
    from pumsearch.runs.rundir import open_run_dir
    from pumsearch.runs.session import close_scorers, load_policy, load_scorers

    _check_references(plans, problems)
    quiet_transformers()
    with console.status("loading the scorers...") if any(pl.scorer for pl in plans) else _nothing():
        scorers = load_scorers([pl.scorer for pl in plans], plans[0].spec.search.step_delimiter)
    try:
        _check_scorer_references(scorers, problems)
        if before_open is not None:
            before_open()
        for plan in plans:
            open_run_dir(plan.path, plan.spec)
        with console.status("loading the model..."):
            generator = load_policy(p["model"], flags.backend)
    except BaseException:
        close_scorers(scorers)  # from here on run_plans closes them
        raise
    _execute(plans, problems, p, shard, generator, scorers)


def _execute(plans: list[Any], problems: list[Any], p: dict[str, Any], shard: tuple[int, int] | None,
             generator: Any, scorers: dict[str, Any]) -> None:
    from pumsearch.runs.session import run_plans

    progress = RichProgress()
    try:
        with progress:
            run_plans(plans, problems, generator, progress=progress, concurrency=p["concurrency"],
                      batch_tokens=p["batch_tokens"], shard=shard, scorers=scorers)
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
    strategy: Strategy = D.strategy,
    budget: Budget = D.budget,
    scorer: Annotated[str | None, typer.Option(help="Scorer: NAME, NAME=PATH or NAME:FORMAT=PATH "
                                                    "(prm:qwen=PATH).")] = None,
    seed: Seed = D.seed,
    question_field: QuestionField = None,
    answer_field: AnswerField = None,
    id_field: IdField = None,
    limit: Limit = None,
    offset: Offset = 0,
    ids: Ids = None,
    model: Model = None,
    backend: Backend = DEFAULTS.backend,
    url: Url = None,
    launch: Launch = False,
    tokenizer: Tokenizer = None,
    max_concurrency: MaxConcurrency = DEFAULTS.max_concurrency,
    request_timeout: RequestTimeout = DEFAULTS.request_timeout,
    retries: Retries = DEFAULTS.retries,
    scripted_delay: ScriptedDelay = DEFAULTS.scripted_delay,
    device: Device = DEFAULTS.device,
    dtype: Dtype = DEFAULTS.dtype,
    cache_dir: CacheDir = None,
    scorer_url: ScorerUrl = None,
    scorer_base: ScorerBase = None,
    scorer_device: ScorerDevice = None,
    scorer_dtype: ScorerDtype = None,
    scorer_option: ScorerOptionList = None,
    temperature: Temperature = D.temperature,
    top_p: TopP = D.top_p,
    max_tokens: MaxTokens = D.max_tokens,
    max_step_tokens: MaxStepTokens = D.max_step_tokens,
    step_delimiter: StepDelimiter = D.step_delimiter,
    aggregate: Aggregate = D.aggregate,
    select: Select = D.select,
    beam_width: BeamWidth = D.beam_width,
    max_depth: MaxDepth = D.max_depth,
    lookahead: Lookahead = D.lookahead,
    filter_duplicates: FilterDuplicates = D.filter_duplicates,
    c_puct: CPuct = D.c_puct,
    expansions: Expansions = D.expansions,
    mcts_steps_per_solution: MctsStepsPerSolution = D.mcts_steps_per_solution,
    terminal_reward: TerminalReward = D.terminal_reward,
    mcts_parallel: MctsParallel = D.mcts_parallel,
    time_limit: TimeLimit = D.time_limit,
    concurrency: Concurrency = DEFAULTS.concurrency,
    batch_tokens: BatchTokens = None,
    shard: Shard = None,
    config_file: ConfigFile = None,
    trust_remote_code: TrustRemote = False,
) -> None:
    """Search one configuration over a dataset: records, trees and a summary in --out (resumable)."""
    try:
        p = apply_config_file(ctx, dict(locals()))
        flags = resolve_flags(p)
        from pumsearch.api import make_strategy
        from pumsearch.runs.grid import parse_scorer_specs, single_plan
        from pumsearch.search.config import SearchConfig

        dataset_choice, shard_t, model_id = _prepare(p, flags)
        specs = parse_scorer_specs(p["scorer"]) if p["scorer"] else [None]
        if len(specs) != 1:
            raise UsageError("run takes one --scorer; use sweep --scorers for several")
        (scorer_spec,) = _with_scorer_options(specs, flags.scorer, "--scorer")
        config = SearchConfig(**flags.settings)
        make_strategy(config, scorer_spec is not None)  # refuse bad settings before loading anything
        problems = dataset_choice.load(shard_t)  # a bad dataset is reported before any directory is made
        plan = single_plan(Path(p["out"]), config, scorer_spec, dataset_choice.identity(), model_id)
        _open_and_execute([plan], problems, p, flags, shard_t)
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
                                                     "NAME:FORMAT=PATH (prm:qwen=PATH), none. The "
                                                     "--scorer-* flags go to the scorers that take "
                                                     "them.")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated run seeds.")] = "0",
    question_field: QuestionField = None,
    answer_field: AnswerField = None,
    id_field: IdField = None,
    limit: Limit = None,
    offset: Offset = 0,
    ids: Ids = None,
    model: Model = None,
    backend: Backend = DEFAULTS.backend,
    url: Url = None,
    launch: Launch = False,
    tokenizer: Tokenizer = None,
    max_concurrency: MaxConcurrency = DEFAULTS.max_concurrency,
    request_timeout: RequestTimeout = DEFAULTS.request_timeout,
    retries: Retries = DEFAULTS.retries,
    scripted_delay: ScriptedDelay = DEFAULTS.scripted_delay,
    device: Device = DEFAULTS.device,
    dtype: Dtype = DEFAULTS.dtype,
    cache_dir: CacheDir = None,
    scorer_url: ScorerUrl = None,
    scorer_base: ScorerBase = None,
    scorer_device: ScorerDevice = None,
    scorer_dtype: ScorerDtype = None,
    scorer_option: ScorerOptionList = None,
    temperature: Temperature = D.temperature,
    top_p: TopP = D.top_p,
    max_tokens: MaxTokens = D.max_tokens,
    max_step_tokens: MaxStepTokens = D.max_step_tokens,
    step_delimiter: StepDelimiter = D.step_delimiter,
    aggregate: Aggregate = D.aggregate,
    select: Select = D.select,
    beam_width: BeamWidth = D.beam_width,
    max_depth: MaxDepth = D.max_depth,
    lookahead: Lookahead = D.lookahead,
    filter_duplicates: FilterDuplicates = D.filter_duplicates,
    c_puct: CPuct = D.c_puct,
    expansions: Expansions = D.expansions,
    mcts_steps_per_solution: MctsStepsPerSolution = D.mcts_steps_per_solution,
    terminal_reward: TerminalReward = D.terminal_reward,
    mcts_parallel: MctsParallel = D.mcts_parallel,
    time_limit: TimeLimit = D.time_limit,
    concurrency: Concurrency = DEFAULTS.concurrency,
    batch_tokens: BatchTokens = None,
    shard: Shard = None,
    config_file: ConfigFile = None,
    trust_remote_code: TrustRemote = False,
) -> None:
    """Run a grid (strategies x budgets x scorers x seeds) into --out, one directory per configuration.
    Best-of-N (and DVTS) run once at the largest N; smaller budgets are read off that run."""
    try:
        p = apply_config_file(ctx, dict(locals()))
        flags = resolve_flags(p)
        from pumsearch.api import make_strategy
        from pumsearch.runs.grid import parse_int_list, parse_scorer_specs, plan_grid
        from pumsearch.runs.session import check_sweep_dir

        dataset_choice, shard_t, model_id = _prepare(p, flags)
        strategy_list = [s.strip() for s in str(p["strategies"]).split(",") if s.strip()]
        if not strategy_list:
            raise UsageError("give --strategies, e.g. bon,beam")
        budget_list = parse_int_list(p["budgets"], "--budgets", minimum=1)
        seed_list = parse_int_list(p["seeds"], "--seeds")
        scorer_list = _with_scorer_options(parse_scorer_specs(p["scorers"]), flags.scorer, "--scorers")
        plans, notes = plan_grid(Path(p["out"]), strategies=strategy_list, budgets=budget_list,
                                 scorers=scorer_list, seeds=seed_list, settings=flags.settings,
                                 dataset=dataset_choice.identity(), model=model_id)
        for plan in plans:  # refuse bad settings (e.g. N not a multiple of M) before loading anything
            make_strategy(plan.spec.search, plan.scorer is not None)
        for note in notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
        if not plans:
            raise UsageError("the grid is empty: every strategy needs a scorer that --scorers does not give")
        problems = dataset_choice.load(shard_t)  # a bad dataset is reported before any directory is made
        base = {"settings": _sweep_base_settings(flags.settings), "dataset": dataset_choice.identity(),
                "model": model_id}
        keyed = {s.spec: s.keyed_options() for s in scorer_list if s is not None and s.keyed_options()}
        if keyed:  # only when set, so sweep directories made before these flags keep their key
            base["scorer_options"] = keyed
        grid = {"strategies": strategy_list, "budgets": budget_list,
                "scorers": [s.spec if s else "none" for s in scorer_list], "seeds": seed_list}
        _open_and_execute(plans, problems, p, flags, shard_t,
                          before_open=lambda: check_sweep_dir(Path(p["out"]), base, grid))
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
