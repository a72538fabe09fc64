"""What ``pumsearch solve`` and ``pumsearch score`` do once their options are read: search or score
one question and print the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pumsearch.cli_common import UsageError, console, err_console, quiet_transformers
from pumsearch.cli_options import CommandLine, options_per_scorer


def solve_command(opts: CommandLine) -> None:
    from pumsearch.api import search_default
    from pumsearch.search.result import make_record

    scorer, as_json = opts["scorer"], opts["as_json"]
    scorer_flags = opts.scorer()
    default = None
    if scorer is None and opts["scorer_model"] is None:  # a testbed policy's default; a tree search: search_default
        default = search_default(opts["model"], opts["strategy"], opts["backend"])
        if default is not None:
            scorer = default.scorer
            if default.scorer_model is not None:
                scorer_flags["model"] = default.scorer_model
            if not as_json:
                err_console.print(f"[yellow]note:[/] {escape(default.note)}", highlight=False, soft_wrap=True)
    per_scorer = options_per_scorer([scorer] if scorer else [], scorer_flags)
    result, config = _solve(opts, scorer, per_scorer[0] if per_scorer else {}, default)
    started = time.time() - result.counters.wall_time
    path = opts["tree_out"] or Path("pumsearch-trees") / f"solve-{time.strftime('%Y%m%d-%H%M%S')}.tree.json"
    result.tree.save(path, result.summary())
    record = make_record(result, tree_file=str(path), scorer=scorer, budget=config.budget, seed=config.seed,
                         started_at=started, extra={"scorer_default": default.note} if default else None)
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    print_result(result, config, scorer is not None)
    console.print(f"tree written to [bold]{path}[/]")


def _solve(opts: CommandLine, scorer: str | None, scorer_opts: dict[str, Any], default: Any) -> tuple[Any, Any]:
    from pumsearch.api import apply_default, asearch, resolve_scorer
    from pumsearch.backends import load_generator, require_top_logprobs
    from pumsearch.search.engine import check_work_fits
    from pumsearch.search.problem import Problem, require_answers
    from pumsearch.strategies import make_strategy

    question, answer = opts["question"], opts["answer"]
    if not question.strip():
        raise UsageError("the question is empty: give the problem text to solve")
    backend = opts.backend()  # bad backend flags or --device are refused before anything loads
    config = apply_default(opts.search_config(), default)
    problem = Problem("question", question, answer)
    strategy = make_strategy(config, scorer is not None)  # bad settings are refused before any model loads
    check_work_fits(strategy)
    if needs := strategy.needs_reference():
        require_answers(problem, who=needs, fix="pass --answer", error=UsageError)
    quiet_transformers()
    with console.status(f"loading the scorer ({scorer})...") if scorer else contextlib.nullcontext():
        scorer_obj = resolve_scorer(scorer, config, **scorer_opts)
    if scorer_obj is not None and scorer_obj.needs_reference:
        require_answers(problem, who=f"scorer {scorer!r}", fix="pass --answer", error=UsageError)
    if getattr(scorer_obj, "top_logprobs", 0):
        require_top_logprobs(backend["backend"], f"scorer {scorer!r}")
    with console.status("loading the model..."):
        generator = load_generator(opts["model"], **backend)

    async def search_and_close() -> Any:
        try:
            (outcome,) = await asearch([problem], generator=generator,
                                       scorer=scorer_obj, strategy=strategy, concurrency=opts["concurrency"],
                                       batch_tokens=opts["batch_tokens"])
        finally:  # stops a --launch'ed server, closes connections
            await generator.aclose()
            if scorer_obj is not None:
                await scorer_obj.aclose()
        return outcome

    with console.status(f"searching ({config.strategy}, budget {config.budget})..."):
        outcome = asyncio.run(search_and_close())
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome, config


def print_result(result: Any, config: Any, has_scorer: bool) -> None:
    verdict = "" if result.correct is None else (" [green](correct)[/]" if result.correct else " [red](wrong)[/]")
    if result.answer:
        console.print(f"[bold]answer:[/] {escape(result.answer)}{verdict}", highlight=False)
    else:
        console.print(f"[bold]answer:[/] [yellow]no answer found[/]: {escape(why_no_answer(result, config))}{verdict}",
                      highlight=False)
    if result.cut_short:
        console.print("[yellow]the search was cut short; this is its best so far[/]")
    console.rule("chosen path")
    for i, step in enumerate(result.chosen_steps, 1):
        console.print(f"[bold cyan]step {i}.[/] {escape(step)}", highlight=False)
    table = Table(title=f"candidates ({config.aggregate} aggregation)" if has_scorer else "candidates (no scorer)")
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
        counters.add_row(key, "unknown" if value is None else str(value))
    console.print(counters)


def why_no_answer(result: Any, config: Any) -> str:
    """Why a search ended without an answer: no finished solution, or solutions that state none
    (and how many of them the token cap cut off)."""
    if not result.candidates:
        reason = f" ({result.cut_reason})" if result.cut_reason else ""
        return f"the search finished no solution{reason}"
    capped = sum(1 for c in result.candidates if result.tree[c.node]["finish_reason"] == "length")
    total = len(result.candidates)
    said = (f"none of the {total} solutions states a final answer" if total > 1
            else "the solution states no final answer")
    if capped:
        said += f"; {capped} of them stopped at the token cap (--max-tokens {config.max_tokens}): raise it"
    return said


# -- score ------------------------------------------------------------------------------------------
def score_command(opts: CommandLine) -> None:
    rows, identity = _score_prefixes(opts)
    if opts["as_json"]:
        sys.stdout.write(json.dumps({"scorer": identity, "prefixes": rows}, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"prefix scores: {identity}")
    for col in ("step", "text", "step value", "prefix value"):
        table.add_column(col, overflow="fold")
    for row in rows:
        step_value = "-" if row["step_value"] is None else f"{row['step_value']:.4f}"
        table.add_row(str(row["step"]), Text(row["text"][:80]), step_value, f"{row['prefix_value']:.4f}")
    console.print(table)


def _score_prefixes(opts: CommandLine) -> tuple[list[dict[str, Any]], str]:
    from pumsearch.scorers import load_scorer
    from pumsearch.search.grading import extract_answer
    from pumsearch.search.problem import Problem, require_answers
    from pumsearch.search.protocols import ScoreItem

    scorer, question, answer = opts["scorer"], opts["question"], opts["answer"]
    delimiter = opts["step_delimiter"].replace("\\n", "\n")
    options = opts.scorer()
    if not question.strip():
        raise UsageError("--question is empty: give the problem text")
    steps = read_steps_file(opts["steps_file"], delimiter)
    if scorer in ("pum", "prm", "orm") and "model" not in options:
        raise UsageError(f"scorer {scorer!r} needs a checkpoint: pass --scorer-model PATH")
    complete = opts["complete"]
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
