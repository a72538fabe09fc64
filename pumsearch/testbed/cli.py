"""``pumsearch testbed train|evaluate``: the arithmetic testbed's student policies (docs/testbed.md).

Only typer and rich are imported here; torch and the testbed load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pumsearch.cli_common import console, err_console, fail, user_errors
from pumsearch.cli_options import UsageError
from pumsearch.models import use_cpu_threads

testbed_app = typer.Typer(help="The arithmetic testbed: train and evaluate its student policies.",
                          no_args_is_help=True)


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
        use_cpu_threads(threads)
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
        from pumsearch.backends import load_generator
        from pumsearch.testbed import resolve_model_name
        from pumsearch.testbed.evaluate import evaluate_policy, write_card

        use_cpu_threads(threads)
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

