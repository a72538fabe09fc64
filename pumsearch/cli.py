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
testbed_app = typer.Typer(help="The arithmetic testbed: train and evaluate its student policies.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")

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


@testbed_app.command("train")
def testbed_train(
    out: Annotated[Path, typer.Argument(help="Directory to write the policy checkpoint to.")],
    size: Annotated[str, typer.Option(help="small (~0.4M parameters) or base (~0.9M).")] = "small",
    minutes: Annotated[float, typer.Option(help="Wall-time budget for training.")] = 15.0,
    steps: Annotated[int | None, typer.Option(help="Step budget (the first budget spent stops it).")] = None,
    batch_size: Annotated[int, typer.Option(help="Chains per optimiser step.")] = 16,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 3e-3,
    min_ops: Annotated[int, typer.Option(help="Fewest operations per training chain.")] = 1,
    max_ops: Annotated[int, typer.Option(help="Most operations per training chain.")] = 5,
    detours: Annotated[float, typer.Option(help="Chance of a detour step before each operation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the data stream and the initial weights.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
) -> None:
    """Train a small Llama student policy on gold solutions of train-split chains (CPU is fine)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        from pumsearch.testbed.train import SIZES, TrainSettings, train_policy

        if size not in SIZES:
            raise UsageError(f"unknown policy size {size!r}: use {' or '.join(SIZES)}")
        if minutes <= 0 or batch_size < 1 or threads < 1:
            raise UsageError("minutes, batch-size and threads must be positive")
        settings = TrainSettings(size=size, max_seconds=minutes * 60, max_steps=steps, batch_size=batch_size,
                                 learning_rate=learning_rate, min_ops=min_ops, max_ops=max_ops,
                                 detours=detours, seed=seed, threads=threads)
        columns = (TextColumn("training"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task("train", total=1.0, info="")

            def report(fraction: float, step: int, loss: float) -> None:
                progress.update(task, completed=fraction, info=f"step {step} loss {loss:.3f}")

            info = train_policy(out, settings, on_progress=report)
    except user_errors() as err:
        fail(str(err))
        return
    console.print(f"trained {info['steps']} steps in {info['seconds']} s (loss {info['final_loss']}); "
                  f"saved to [bold]{out}[/]", highlight=False)


@testbed_app.command("evaluate")
def testbed_evaluate(
    policy: Annotated[str, typer.Argument(help="A policy directory or testbed:weak / testbed:strong.")],
    spec: Annotated[list[str], typer.Option(help="Test chains (repeatable): a named config or a "
                                                 "key=value spec like ops=3-4,n=200,seed=0.")] = ["standard"],  # noqa: B006
    samples: Annotated[int, typer.Option(help="Samples per chain for pass@k and majority@k.")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    max_tokens: Annotated[int, typer.Option(help="Token cap per solution.")] = 96,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    card: Annotated[str | None, typer.Option(help="Write DATA_CARD.md and evaluation.json into the policy "
                                                  "directory under this name.")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
) -> None:
    """Greedy accuracy, sample accuracy, pass@k and majority@k of a policy on test chains."""
    try:
        import torch

        from pumsearch.backends import load_generator
        from pumsearch.testbed import resolve_model_name
        from pumsearch.testbed.evaluate import evaluate_policy, write_card

        torch.set_num_threads(threads)
        generator = load_generator(policy)
        results = []
        for one in spec:
            with console.status(f"evaluating on {one}..."):
                results.append(evaluate_policy(generator, one, samples=samples, temperature=temperature,
                                               max_tokens=max_tokens, seed=seed))
            console.print(json.dumps(results[-1]), highlight=False)
        if card is not None:
            command = " ".join(["pumsearch testbed evaluate", *map(_quote, sys.argv[3:])])
            write_card(Path(resolve_model_name(policy)), card, results, [command])
    except user_errors() as err:
        fail(str(err))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
