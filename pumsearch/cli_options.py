"""The options `solve`, `run` and `sweep` share, defined once, and the one function that turns their
values into what the library takes (SearchConfig settings, load_generator keywords, load_scorer
keywords), so the three commands cannot drift apart. Only typer and the stdlib-only SearchConfig are
imported here: `pumsearch --help` stays fast.

A command declares a shared option as ``temperature: Temperature = SEARCH_DEFAULTS.temperature``
and passes ``dict(locals())`` to :func:`resolve_flags`. tests/test_cli_options.py checks that
every shared option reads the same (name, default, help, hidden) in all three commands.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from pumsearch.registry import BACKENDS, SCORERS
from pumsearch.scorers.prm import PRM_FORMATS
from pumsearch.search.config import SearchConfig


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


SEARCH_DEFAULTS = SearchConfig()

# -- search settings (SearchConfig fields) ------------------------------------------------------
Strategy = Annotated[str, typer.Option("--strategy", "-s", help="bon|beam|dvts|mcts|package.module:ClassName.")]
Budget = Annotated[int, typer.Option("--budget", "-n", help="N: solutions for bon, beams for beam/dvts, "
                                     "N x --mcts-steps-per-solution step expansions for mcts "
                                     "(see docs/strategies.md).")]
Seed = Annotated[int, typer.Option(help="Run seed.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
MaxTokens = Annotated[int, typer.Option(help="Token cap per solution.")]
MaxStepTokens = Annotated[int, typer.Option(help="Token cap per step (tree search).")]
StepDelimiter = Annotated[str, typer.Option(help="String that ends a step.")]
Aggregate = Annotated[str, typer.Option(help="Step scores to solution score: last, min, prod, mean.")]
Select = Annotated[str | None, typer.Option(help="best, majority or weighted (default: best with a "
                                                 "scorer, majority without).")]
BeamWidth = Annotated[int, typer.Option(help="M: children per kept prefix (beam, dvts).")]
MaxDepth = Annotated[int, typer.Option(help="Depth cap in steps (tree search).")]
Lookahead = Annotated[int, typer.Option(help="Greedy steps looked ahead before ranking (beam, dvts).")]
FilterDuplicates = Annotated[bool, typer.Option(help="Drop prefixes with identical text (beam).")]
CPuct = Annotated[float, typer.Option(help="PUCT exploration constant (mcts).")]
Expansions = Annotated[int, typer.Option(help="Children per expanded leaf (mcts).")]
MctsStepsPerSolution = Annotated[int, typer.Option(help="S: step expansions per unit of budget (mcts).")]
TerminalReward = Annotated[str, typer.Option(help="Value of a finished prefix: scorer or verifier "
                                                  "(ground truth; needs the reference answer) (mcts).")]
MctsParallel = Annotated[int, typer.Option(help="Simulations selected per batched round (mcts).")]
TimeLimit = Annotated[float | None, typer.Option(help="Seconds per problem; then the best so far, "
                                                      "marked cut short.")]

# SearchConfig fields set by flags; a command passes those it has (sweep has lists instead of the
# first three).
SEARCH_FLAGS = ("strategy", "budget", "seed", "temperature", "top_p", "max_tokens", "max_step_tokens",
                "step_delimiter", "aggregate", "select", "beam_width", "max_depth", "lookahead",
                "filter_duplicates", "c_puct", "expansions", "mcts_steps_per_solution", "terminal_reward",
                "mcts_parallel", "time_limit")

# -- the policy and its backend ---------------------------------------------------------------------
Model = Annotated[str | None, typer.Option("--model", "-m", help="Policy path or hub name; default: embedded "
                                                                 "SmolLM2.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")]
CacheDir = Annotated[str | None, typer.Option(help="Where the embedded model is converted to.")]
TrustRemote = Annotated[bool, typer.Option(help="Allow the model's own code to run.")]
Backend = Annotated[str, typer.Option(help=f"{BACKENDS.choices()} (docs/backends.md).")]
Url = Annotated[str | None, typer.Option(help="Server address for sglang-server or openai, e.g. "
                                              "http://127.0.0.1:30000.")]
Launch = Annotated[bool, typer.Option(help="Start a local SGLang server for --model (sglang-server); "
                                           "stopped at exit.")]
Tokenizer = Annotated[str | None, typer.Option(help="Tokenizer path for server backends' chat prompts "
                                                    "(default: --model).")]
MaxConcurrency = Annotated[int, typer.Option(help="Requests in flight at once (server backends).")]
RequestTimeout = Annotated[float, typer.Option(help="Seconds before one server request times out.")]
Retries = Annotated[int, typer.Option(help="Retries of a failed server request (connection errors, 5xx).")]
ScriptedDelay = Annotated[float, typer.Option(hidden=True, help="Seconds per scripted backend call (tests).")]



@dataclass(frozen=True)
class Defaults:
    """Defaults of the non-search options (the search ones are SearchConfig's)."""

    backend: str = "transformers"
    device: str = "cpu"
    dtype: str = "float32"
    max_concurrency: int = 64
    request_timeout: float = 600.0
    retries: int = 3
    scripted_delay: float = 0.0
    concurrency: int = 16


DEFAULTS = Defaults()

# -- scheduling (not part of any run key) -----------------------------------------------------------
Concurrency = Annotated[int, typer.Option(help="Problems searched at once.")]
BatchTokens = Annotated[int | None, typer.Option(help="Token cap of one backend batch.")]

# -- scorers ----------------------------------------------------------------------------------------
ScorerName = Annotated[str | None, typer.Option("--scorer", help=f"{SCORERS.choices()}.")]
ScorerModel = Annotated[str | None, typer.Option(help="Scorer checkpoint directory (rollout: student models, "
                                                      "comma-separated; 'embedded' for SmolLM2).")]
PrmFormat = Annotated[str | None, typer.Option(help=f"prm scorer format: {PRM_FORMATS.choices()}.")]
ScorerBase = Annotated[str | None, typer.Option(help="PUM: base model, overriding the adapter's.")]
ScorerDevice = Annotated[str | None, typer.Option(help="Scorer device: cpu (default), cuda, cuda:1, auto.")]
ScorerDtype = Annotated[str | None, typer.Option(help="Scorer dtype: float32, bfloat16, float16 or auto.")]
ScorerOptionList = Annotated[list[str] | None, typer.Option(
    "--scorer-option", help="Extra scorer option KEY=VALUE, repeatable (k=8, activation=gelu, read_offset=1).")]
ScorerUrl = Annotated[str | None, typer.Option(help="Reward-model server (SGLang --is-embedding) for "
                                                    "scorer orm.")]

# load_scorer option -> the flag that sets it (for messages)
SCORER_FLAGS = {"model": "--scorer-model", "base": "--scorer-base", "device": "--scorer-device",
                "dtype": "--scorer-dtype", "prm_format": "--prm-format", "url": "--scorer-url"}


@dataclass
class ResolvedFlags:
    """The shared flags of one command line, as the library takes them."""

    settings: dict[str, Any]  # SearchConfig keywords
    backend: dict[str, Any]  # load_generator keywords (the model aside)
    scorer: dict[str, Any]  # load_scorer keywords from the --scorer-* flags; unset ones left out


def resolve_flags(params: dict[str, Any]) -> ResolvedFlags:
    """``params``: a command's parameters by name (its ``locals()``, after --config FILE is applied).
    run and sweep have no --scorer-model or --prm-format: their scorer specs carry path and format."""
    settings = {name: params[name] for name in SEARCH_FLAGS if name in params}
    settings.update(params.get("_search_extra") or {})  # [search] settings that have no flag
    if settings.get("time_limit") is not None and settings["time_limit"] <= 0:
        raise UsageError(f"--time-limit must be positive (got {settings['time_limit']:g})")
    backend = backend_options(params["backend"], url=params["url"], launch=params["launch"],
                              tokenizer=params["tokenizer"], max_concurrency=params["max_concurrency"],
                              request_timeout=params["request_timeout"], retries=params["retries"],
                              scripted_delay=params["scripted_delay"])
    backend.update(device=params["device"], dtype=params["dtype"], cache_dir=params["cache_dir"],
                   trust_remote_code=params["trust_remote_code"])
    scorer = scorer_options(params.get("scorer_model"), params["scorer_base"], params["scorer_device"],
                            params["scorer_dtype"], params.get("prm_format"), params["scorer_option"])
    if params["scorer_url"] is not None:
        scorer["url"] = params["scorer_url"]
    return ResolvedFlags(settings, backend, scorer)


def backend_options(backend: str, *, url: str | None, launch: bool, tokenizer: str | None,
                    max_concurrency: int, request_timeout: float, retries: int,
                    scripted_delay: float = 0.0) -> dict[str, Any]:
    """load_generator keywords for --backend and the server flags (refusing flags that do not apply):
    the flags the backend's registry entry takes. ``scripted`` (hidden) is the ScriptedGenerator,
    for tests and runs without a model."""
    from pumsearch.backends import generator_options

    try:
        return generator_options(backend, url=url, launch=launch, tokenizer=tokenizer,
                                 max_concurrency=max_concurrency, request_timeout=request_timeout,
                                 retries=retries, delay=scripted_delay)
    except ValueError as err:
        raise UsageError(str(err)) from None


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


def flag_of(option: str) -> str:
    return SCORER_FLAGS.get(option, f"--scorer-option {option}=...")


def options_per_scorer(names: Sequence[str], options: dict[str, Any], *, scorer_flag: str = "--scorer"
                       ) -> list[dict[str, Any]]:
    """The --scorer-* options each named scorer takes, checked before any model loads. With one
    scorer an option it does not take is refused (as solve always did); in a sweep each option goes
    to the scorers that take it (--scorer-dtype to prm but not to verifier), and one that none of
    them takes is refused."""
    from pumsearch.scorers import scorer_option_names

    if not names:
        if options:
            given = ", ".join(sorted(flag_of(k) for k in options))
            raise UsageError(f"{given} set options of a scorer, but no scorer is chosen: give {scorer_flag}")
        return []
    accepted = [scorer_option_names(name) for name in names]
    for key in options:
        if any(key in names_taken for names_taken in accepted):
            continue
        if len(names) == 1:
            raise UsageError(f"scorer {names[0]!r} has no option {key} ({flag_of(key)}): it takes "
                             f"{', '.join(sorted(accepted[0]))}")
        raise UsageError(f"none of the scorers {', '.join(names)} has option {key} ({flag_of(key)})")
    return [{k: v for k, v in options.items() if k in names_taken} for names_taken in accepted]
