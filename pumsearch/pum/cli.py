"""``pumsearch pum label|pairs|train``: the PUM training pipeline on the command line.

Only typer is imported here; the pipeline modules (and torch, for train) load inside the commands.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pumsearch.cli_common import THREADS_HELP, fail, user_errors
from pumsearch.models import use_cpu_threads

pum_app = typer.Typer(help="Train your own Prefix Utility Model: label, pairs, train (docs/pum-training.md).",
                      no_args_is_help=True)

Delimiter = Annotated[str, typer.Option(help="String that ends a step.")]
Seed = Annotated[int, typer.Option(help="Seed.")]


def _fail(message: str) -> None:
    fail(message)


def _errors() -> tuple[type[BaseException], ...]:
    return user_errors()


def _resolve(name: str) -> str | None:
    """'embedded' is the bundled SmolLM2; a registered alias (testbed:NAME) is its model's path."""
    if name == "embedded":
        return None
    from pumsearch.models import resolve_model_name

    return resolve_model_name(name)


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _names(value or ""))
    except ValueError:
        raise ValueError(f"--cut-lengths takes comma-separated token counts, not {value!r}") from None


def _record_name(given: str, resolved: str) -> str:
    """How the adapter config names its base: aliases (testbed:NAME) and hub names as given, local
    directories as absolute paths (a relative one would break when loaded from elsewhere)."""
    from pumsearch.models import is_alias

    if is_alias(given) or not Path(resolved).exists():
        return given
    return str(Path(resolved).resolve())


@pum_app.command("label")
def label_cmd(
    dataset: Annotated[str, typer.Option(help="A data set as for `pumsearch run --dataset`: math500, gsm8k, a "
                                              "JSON-lines file (id, question, answer), testbed:SPEC, ...")],
    policy: Annotated[str, typer.Option(help="Policy model(s) to sample trajectories from, comma-separated "
                                             "(paths, hub names, testbed:NAME, embedded).")],
    students: Annotated[str, typer.Option(help="Student models, comma-separated, weak to strong.")],
    out: Annotated[Path, typer.Option(help="Labels file (JSON lines, appended; a rerun resumes).")],
    limit: Annotated[int | None, typer.Option(help="Only the first N problems.")] = None,
    trajectories: Annotated[int, typer.Option(help="Trajectories per policy and problem.")] = 4,
    cuts: Annotated[int, typer.Option(help="Cut lengths per problem, evenly spaced inside the median "
                                           "trajectory length.")] = 3,
    cut_lengths: Annotated[str | None, typer.Option(help="Explicit cut lengths in tokens (e.g. 8,16,32); "
                                                          "overrides --cuts.")] = None,
    complete: Annotated[bool, typer.Option(help="Also label each complete trajectory.")] = True,
    rollouts: Annotated[int, typer.Option(help="Rollouts per prefix and student (k).")] = 4,
    branches: Annotated[int, typer.Option(help="Sibling continuations per trajectory and cut length (the "
                                               "policy resamples from the cut; labelled at the next cut "
                                               "length and whole); 0: none.")] = 0,
    temperature: Annotated[float, typer.Option(help="Students' sampling temperature.")] = 0.8,
    policy_temperature: Annotated[float, typer.Option(help="Policies' sampling temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Token cap per trajectory and per rollout.")] = 256,
    token_cap: Annotated[str, typer.Option(help="continuation: each rollout gets --max-tokens; solution: "
                                                "prefix + rollout share it, as in a search.")] = "continuation",
    standardise: Annotated[str, typer.Option(help="problem: z-score each student's gains over the problem's "
                                                  "prefixes before the mean; none: mean raw gains.")] = "problem",
    seed: Seed = 0,
    rollout_seed: Annotated[int | None, typer.Option(help="Students' seed, if not --seed: an independent "
                                                          "second draw of the same prefixes' rollouts.")] = None,
    chunk: Annotated[int, typer.Option(help="Problems per engine run (and per append).")] = 8,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, ...")] = "float32",
    step_delimiter: Delimiter = "\n\n",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """Sample trajectories, cut prefixes, estimate each prefix's gain for every student."""
    try:
        use_cpu_threads(threads)
        from pumsearch.datasets import load_problems
        from pumsearch.pum.label import LabelSettings, label_to_file

        settings = LabelSettings(trajectories=trajectories, cuts=cuts, cut_lengths=_ints(cut_lengths),
                                 include_complete=complete, rollouts=rollouts, temperature=temperature,
                                 policy_temperature=policy_temperature, top_p=top_p, max_tokens=max_tokens,
                                 token_cap=token_cap, standardise=standardise, seed=seed, rollout_seed=rollout_seed,
                                 branches=branches,
                                 step_delimiter=step_delimiter)
        problems = load_problems(dataset, limit=limit)
        policies = _load_generators(_names(policy), device, dtype)
        student_gens = _load_generators(_names(students), device, dtype)
        counts = asyncio.run(label_to_file(problems, policies, student_gens, settings, out, chunk=chunk,
                                           on_chunk=lambda d, t: typer.echo(f"labelled {d}/{t} problems")))
    except _errors() as err:
        _fail(str(err))
        return
    typer.echo(f"{counts['labelled']} problems labelled, {counts['skipped']} already done: {out}")


def _load_generators(names: list[str], device: str, dtype: str) -> list[Any]:
    from pumsearch.backends import load_generator

    if not names:
        raise ValueError("name at least one model")
    loaded: dict[str, Any] = {}
    out = []
    for name in names:
        if name not in loaded:  # the same model as policy and student is loaded once per list
            generator = load_generator(_resolve(name), device=device, dtype=dtype)
            generator.name = name
            loaded[name] = generator
        out.append(loaded[name])
    return out


@pum_app.command("pairs")
def pairs_cmd(
    labels: Annotated[Path, typer.Argument(help="Labels file from `pumsearch pum label`.")],
    out: Annotated[Path, typer.Option(help="Pairs file (JSON lines); counts go to <out>.summary.json.")],
    margin: Annotated[float, typer.Option(help="Least utility difference for a preference.")] = 0.5,
    tie_margin: Annotated[float, typer.Option(help="Largest utility difference for a tie.")] = 0.0,
    ties: Annotated[bool, typer.Option(help="Keep ties (label 0.5).")] = True,
    vertical: Annotated[bool, typer.Option(help="Pairs within one trajectory.")] = True,
    horizontal: Annotated[bool, typer.Option(help="Pairs across trajectories at one length.")] = True,
    across_policies: Annotated[bool, typer.Option(help="Horizontal pairs across policy models.")] = True,
    conflicts: Annotated[str, typer.Option(help="duplicates, students, all or none (see docs).")] = "duplicates",
    min_confidence: Annotated[float, typer.Option(help="Keep a preference only when its pooled rollouts make it "
                                                       "this likely (two-proportion test; 0: off).")] = 0.0,
) -> None:
    """Build vertical and horizontal preference pairs (and ties) from labelled prefixes."""
    try:
        from pumsearch.pum.label import read_records
        from pumsearch.pum.pairs import PairSettings, build_pairs, write_pairs

        if not labels.is_file():
            raise ValueError(f"labels file {labels} does not exist: run `pumsearch pum label` first")
        settings = PairSettings(margin=margin, tie_margin=tie_margin, ties=ties, vertical=vertical,
                                horizontal=horizontal, across_policies=across_policies, conflicts=conflicts,
                                min_confidence=min_confidence)
        pairs, summary = build_pairs(read_records(labels), settings)
        write_pairs(pairs, out)
        summary_path = out.with_name(out.stem + ".summary.json")
        summary_path.write_text(json.dumps({"labels": str(labels), **summary}, indent=2) + "\n", encoding="utf-8")
    except _errors() as err:
        _fail(str(err))
        return
    typer.echo(json.dumps(summary, indent=2))


@pum_app.command("train")
def train_cmd(
    pairs: Annotated[Path, typer.Argument(help="Pairs file from `pumsearch pum pairs`.")],
    base: Annotated[str, typer.Option(help="Base causal LM (path, hub name or testbed:NAME).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory (the zhiqix/PUM layout).")],
    base_name: Annotated[str | None, typer.Option(help="Base model name to record in the adapter config "
                                                       "(default: --base as given).")] = None,
    mode: Annotated[str, typer.Option(help="lora: LoRA adapters and head; head: frozen base, head only; full: "
                                           "every weight of the base and the head (small bases).")] = "lora",
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 2,
    batch_pairs: Annotated[int, typer.Option(help="Pairs per optimiser step.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate of the LoRA weights (--mode full: of the base's).")] = 2e-4,
    head_lr: Annotated[float, typer.Option(help="Learning rate of the value head.")] = 1e-3,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    lora_targets: Annotated[str, typer.Option(help="all-linear or comma-separated module names.")] = "all-linear",
    head_hidden: Annotated[int, typer.Option(help="Value head's hidden width (0: the base's).")] = 0,
    activation: Annotated[str, typer.Option(help="Value head activation: relu, gelu, tanh, silu.")] = "relu",
    tie_loss: Annotated[str, typer.Option(help="bce (BT with target 1/2) or mse.")] = "bce",
    tie_weight: Annotated[float, typer.Option(help="Weight of the tie term.")] = 1.0,
    margin_scale: Annotated[float, typer.Option(help="Adaptive margin: gamma x utility gap (0: off).")] = 0.0,
    val_fraction: Annotated[float, typer.Option(help="Share of problems held out.")] = 0.1,
    max_length: Annotated[int, typer.Option(help="Skip inputs longer than this many tokens.")] = 1024,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    schedule: Annotated[str, typer.Option(help="constant, or cosine (5% linear warm-up, decay to 0).")] = "constant",
    keep: Annotated[str, typer.Option(help="last epoch, or best held-out pairwise accuracy.")] = "last",
    batch_order: Annotated[str, typer.Option(help="random, or problem: each batch holds whole problems' pairs, "
                                                  "whose shared prefixes run once (faster).")] = "random",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    seed: Seed = 0,
    step_delimiter: Delimiter = "\n\n",
) -> None:
    """Train a PUM with a pairwise Bradley-Terry loss and export it for `--scorer pum`."""
    try:
        from pumsearch.pum.pairs import read_pairs
        from pumsearch.pum.train import TrainSettings, train_pum

        settings = TrainSettings(mode=mode, epochs=epochs, batch_pairs=batch_pairs, lr=lr, head_lr=head_lr,
                                 lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets,
                                 head_hidden=head_hidden, activation=activation, tie_loss=tie_loss,
                                 tie_weight=tie_weight, margin_scale=margin_scale, val_fraction=val_fraction,
                                 max_length=max_length, max_steps=max_steps, weight_decay=weight_decay,
                                 schedule=schedule, keep=keep, batch_order=batch_order, seed=seed,
                                 step_delimiter=step_delimiter)
        use_cpu_threads(threads)
        resolved = _resolve(base)
        if resolved is None:
            raise ValueError("--base needs a model path or name")
        recorded = base_name or _record_name(base, resolved)
        report = train_pum(read_pairs(pairs), resolved, out, settings, base_name=recorded, log=typer.echo)
    except _errors() as err:
        _fail(str(err))
        return
    typer.echo(f"trained on {report.train_pairs} pairs ({report.val_pairs} held out) in {report.seconds:.0f}s, "
               f"kept epoch {report.kept_epoch}: {out}")
