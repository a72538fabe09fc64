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
from rich.text import Text

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
    from pumsearch.scorers.base import ScorerError
    from pumsearch.strategies.base import StrategyError

    return (UsageError, ModelLoadError, ScorerError, StrategyError, ValueError, FileNotFoundError)


# -- shared options ----------------------------------------------------------------------------
Strategy = Annotated[str, typer.Option("--strategy", "-s", help="bon, or package.module:ClassName.")]
Budget = Annotated[int, typer.Option("--budget", "-n", help="N: solutions for bon (see docs/budget.md).")]
ScorerOpt = Annotated[str | None, typer.Option("--scorer", help="pum, prm, orm, verifier or rollout.")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Policy path or hub name; default: embedded SmolLM2.")]
ScorerModel = Annotated[str | None, typer.Option(help="Scorer checkpoint directory (rollout: student models, "
                                                      "comma-separated; 'embedded' for SmolLM2).")]
ScorerBase = Annotated[str | None, typer.Option(help="PUM: base model, overriding the adapter's.")]
ScorerDevice = Annotated[str | None, typer.Option(help="Scorer device: cpu (default), cuda, cuda:1, auto.")]
ScorerDtype = Annotated[str | None, typer.Option(help="Scorer dtype: float32, bfloat16, float16 or auto.")]
PrmFormat = Annotated[str | None, typer.Option(help="prm scorer format: qwen, shepherd or rlhflow.")]
ScorerOptionList = Annotated[list[str] | None, typer.Option(
    "--scorer-option", help="Extra scorer option KEY=VALUE, repeatable (k=8, activation=gelu, read_offset=1).")]


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
    scorer_model: ScorerModel = None,
    scorer_base: ScorerBase = None,
    scorer_device: ScorerDevice = None,
    scorer_dtype: ScorerDtype = None,
    prm_format: PrmFormat = None,
    scorer_option: ScorerOptionList = None,
) -> None:
    """Search one question and print the answer, the chosen path, the candidates and the counters."""
    try:
        options = scorer_options(scorer_model, scorer_base, scorer_device, scorer_dtype, prm_format,
                                 scorer_option)
        result, config = _solve(
            question, answer=answer, model=model, device=device, dtype=dtype, cache_dir=cache_dir,
            scorer=scorer, concurrency=concurrency, batch_tokens=batch_tokens,
            trust_remote_code=trust_remote_code, scorer_opts=options,
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
           trust_remote_code: bool, settings: dict[str, Any],
           scorer_opts: dict[str, Any] | None = None) -> tuple[Any, Any]:
    import asyncio

    from pumsearch.api import asearch, make_strategy, resolve_scorer
    from pumsearch.backends import load_generator
    from pumsearch.search.config import SearchConfig
    from pumsearch.search.problem import Problem

    if not question.strip():
        raise UsageError("the question is empty: give the problem text to solve")
    config = SearchConfig(**settings)
    problem = Problem("question", question, answer)
    with console.status(f"loading the scorer ({scorer})...") if scorer else _nothing():
        scorer_obj = resolve_scorer(scorer, config, **(scorer_opts or {}))
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


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def parse_option_value(text: str) -> Any:
    """KEY=VALUE values: JSON where it parses (numbers, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def scorer_options(model: str | None, base: str | None, device: str | None, dtype: str | None,
                   prm_format: str | None, extra: list[str] | None) -> dict[str, Any]:
    """The scorer flags as load_scorer options (unset ones left out, so each scorer gets only
    what it takes)."""
    options: dict[str, Any] = {"model": model, "base": base, "device": device, "dtype": dtype,
                               "prm_format": prm_format}
    for entry in extra or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--scorer-option {entry!r} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = parse_option_value(value)
    return {k: v for k, v in options.items() if v is not None}


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
    scorer: Annotated[str, typer.Option("--scorer", help="pum, prm, orm, verifier or rollout.")],
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
    if scorer_obj.needs_reference and answer is None:
        raise UsageError(f"scorer {scorer!r} needs the reference answer: pass --answer")
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
