"""Every option `solve`, `run` and `sweep` share, declared once, and what turns their values into what
the library takes (a SearchConfig, load_generator keywords, load_scorer keywords), so the commands
cannot drift apart.

The search options are generated: one per SearchConfig field (its help is the field's) and one per
setting of a built-in strategy (``--beam-width``: the field of the strategy's Settings, with the
strategies that take it); ``--strategy-option KEY=VALUE`` reaches any strategy's settings. A command
takes option groups with :func:`shared_options` and gets their values, after ``--config FILE``, as
one :class:`CommandLine`. tests/test_cli_options.py checks that every shared option reads the same
(name, default, help, hidden) in all three commands.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import typer

from pumsearch.cli_common import THREADS_HELP, UsageError, exit_on_user_errors
from pumsearch.models import check_device_name, use_cpu_threads
from pumsearch.registry import BACKENDS, SCORERS
from pumsearch.scorers.prm import PRM_FORMATS
from pumsearch.search.config import SearchConfig
from pumsearch.strategies import STRATEGIES, builtin_settings, get_strategy

__all__ = ["UsageError"]  # re-exported: the sub-apps import it from here


@dataclass(frozen=True)
class Opt:
    """One command-line option: its parameter name, type, default, help and flag names."""

    name: str
    type: Any
    default: Any
    help: str
    decls: tuple[str, ...] = ()
    hidden: bool = False

    def parameter(self) -> inspect.Parameter:
        info = typer.Option(*self.decls, help=self.help, hidden=self.hidden)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default,
                                 annotation=Annotated[self.type, info])


def _flag_type(annotation: Any) -> Any:
    """The type a flag parses to: a Literal of strings is read as text (the library names the
    allowed values in its own message)."""
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [_flag_type(a) for a in get_args(annotation) if a is not type(None)]
        return members[0] | None
    return annotation


# -- search settings: one option per SearchConfig field ---------------------------------------------
_SEARCH_DECLS = {"strategy": ("--strategy", "-s"), "budget": ("--budget", "-n")}
_SEARCH_HELP = {"strategy": f"{'|'.join(STRATEGIES)}|package.module:ClassName."}


def _search_options() -> tuple[Opt, ...]:
    hints = get_type_hints(SearchConfig)
    defaults = SearchConfig()
    return tuple(
        Opt(f.name, _flag_type(hints[f.name]), getattr(defaults, f.name),
            _SEARCH_HELP.get(f.name, f.metadata.get("help", "")), _SEARCH_DECLS.get(f.name, ()))
        for f in fields(SearchConfig) if f.name != "strategy_options"
    )


SEARCH = _search_options()
PER_RUN = ("strategy", "budget", "seed")  # a sweep has lists of these instead (--strategies ...)
SEARCH_PER_RUN = tuple(o for o in SEARCH if o.name in PER_RUN)
SEARCH_SHARED = tuple(o for o in SEARCH if o.name not in PER_RUN)

# -- strategy settings: a named flag per built-in setting, --strategy-option for any ---------------
NAMED_SETTINGS = builtin_settings()
STRATEGY = (
    *(Opt(s.name, _flag_type(s.type), s.default, f"{s.help.rstrip('.')} ({', '.join(s.strategies)}).")
      for s in NAMED_SETTINGS),
    Opt("strategy_option", list[str] | None, None,
        "A setting of the strategy, KEY=VALUE, repeatable; typed by the strategy's settings (any "
        "strategy, package.module:ClassName ones too; docs/strategies.md).", ("--strategy-option",)),
)

# -- the policy and its backend ---------------------------------------------------------------------
POLICY = (
    Opt("model", str | None, None, "Policy path or hub name; default: embedded SmolLM2.", ("--model", "-m")),
    Opt("device", str, "cpu", "cpu, cuda, cuda:1 or auto."),
    Opt("dtype", str, "float32", "float32, bfloat16, float16, bf16-matmul (float32 but for the linear layers: "
        "faster on CPUs with AVX-512 BF16) or auto."),
    Opt("cache_dir", str | None, None, "Where the embedded model is converted to."),
    Opt("trust_remote_code", bool, False, "Allow the model's own code to run."),
    Opt("backend", str, "transformers", f"{BACKENDS.choices()} (docs/backends.md)."),
    Opt("url", str | None, None, "Server address for sglang-server or openai, e.g. http://127.0.0.1:30000."),
    Opt("launch", bool, False, "Start a local SGLang server for --model (sglang-server); stopped at exit."),
    Opt("tokenizer", str | None, None, "Tokenizer path for server backends' chat prompts (default: --model)."),
    Opt("max_concurrency", int | None, None, "Requests in flight at once (server backends; default: 1 for "
        "llama-cpp-python, llama.cpp's slot count, else 64)."),
    Opt("request_timeout", float, 600.0, "Seconds before one server request times out."),
    Opt("retries", int, 3, "Retries of a failed server request (connection errors, 5xx)."),
    Opt("kv_cache_mb", int | None, None, "Prefix KV cache budget in MiB (transformers backend); 0 keeps "
        "nothing across calls; default: a fifth of free memory, at most 4096."),
    Opt("extra_body", str | None, None, "JSON object merged into every server request body, e.g. "
        "'{\"top_k\": 20}' (openai, sglang-server; docs/backends.md)."),
    Opt("server_n", str, "auto", "openai: auto (by server), request (n in one request) or split (one request "
        "per sample)."),
    Opt("scripted_delay", float, 0.0, "Seconds per scripted backend call (tests).", hidden=True),
)

# -- scheduling (not part of any run key) -----------------------------------------------------------
THREADS = (Opt("threads", int | None, None, THREADS_HELP),)
SCHEDULING = (
    Opt("concurrency", int, 16, "Problems searched at once."),
    Opt("batch_tokens", int | None, None, "Token cap of one backend batch."),
    *THREADS,
)

# -- scorers ----------------------------------------------------------------------------------------
SCORER_NAMES_HELP = f"{SCORERS.choices()}."
SCORER_CHECKPOINT = (  # solve and score; run and sweep name checkpoint and format in the scorer spec
    Opt("scorer_model", str | None, None, "Scorer checkpoint directory (rollout: student models, "
        "comma-separated; 'embedded' for SmolLM2)."),
    Opt("prm_format", str | None, None, f"prm scorer format: {PRM_FORMATS.choices()}."),
)
SCORER = (
    Opt("scorer_base", str | None, None, "PUM: base model, overriding the adapter's."),
    Opt("scorer_device", str | None, None, "Scorer device: cpu (default), cuda, cuda:1, auto."),
    Opt("scorer_dtype", str | None, None, "Scorer dtype: float32, bfloat16, float16, bf16-matmul or auto."),
    Opt("scorer_option", list[str] | None, None, "Extra scorer option KEY=VALUE, repeatable (k=8, "
        "activation=gelu, read_offset=1).", ("--scorer-option",)),
    Opt("scorer_url", str | None, None, "Reward-model server (SGLang --is-embedding) for scorer orm."),
)
# load_scorer option -> the flag that sets it (for messages)
SCORER_FLAGS = {"model": "--scorer-model", "base": "--scorer-base", "device": "--scorer-device",
                "dtype": "--scorer-dtype", "prm_format": "--prm-format", "url": "--scorer-url"}

# -- datasets and run directories (run, sweep) ------------------------------------------------------
DATASET = (
    Opt("dataset", str | None, None, "math500, gsm8k, a .jsonl path, hf:NAME[:SPLIT], or a registered "
        "PREFIX:CONFIG.", ("--dataset", "-d")),
    Opt("out", Path | None, None, "The run (or sweep) directory.", ("--out", "-o")),
    Opt("question_field", str | None, None, "JSON field of the question (default: problem or question)."),
    Opt("answer_field", str | None, None, "JSON field of the reference answer (default: answer)."),
    Opt("id_field", str | None, None, "JSON field of the problem id (default: unique_id or id; else "
        "<dataset>:<line>)."),
    Opt("limit", int | None, None, "At most this many problems."),
    Opt("offset", int, 0, "Skip this many problems first."),
    Opt("ids", str | None, None, "Only these problem ids: a,b,c or @FILE (one per line)."),
    Opt("shard", str | None, None, "i/n: run the i-th of n disjoint shards (0-based)."),
)
CONFIG = (Opt("config_file", Path | None, None, "TOML file of option values; flags override it.", ("--config",)),)

# the groups each command takes (solve also has --config, so a file can hold any setting there too)
SOLVE_GROUPS = (SEARCH_PER_RUN, SEARCH_SHARED, STRATEGY, POLICY, SCHEDULING, SCORER_CHECKPOINT, SCORER, CONFIG)
RUN_GROUPS = (DATASET, SEARCH_PER_RUN, SEARCH_SHARED, STRATEGY, POLICY, SCHEDULING, SCORER, CONFIG)
SWEEP_GROUPS = (DATASET, SEARCH_SHARED, STRATEGY, POLICY, SCHEDULING, SCORER, CONFIG)
LIST_OPTIONS = ("scorer_option", "strategy_option")  # KEY=VALUE lists (a TOML list or table)


def shared_options(*groups: Sequence[Opt]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command the options of ``groups``. The command declares only its own parameters
    and one ``opts: CommandLine``, which holds every value (its own too) after ``--config FILE``; an
    error the user must fix, raised anywhere in the command, is one line and exit code 2."""
    shared = [o for group in groups for o in group]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "opts"]
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        option_types = {**{p.name: _option_type(p.annotation) for p in own}, **{o.name: o.type for o in shared}}

        @functools.wraps(func)
        def command(ctx: typer.Context, **values: Any) -> Any:
            with exit_on_user_errors():
                line = CommandLine.read(ctx, values, option_types)
                line.check_scheduling()
                if "threads" in line.values:  # before anything loads torch
                    use_cpu_threads(line["threads"])
                return func(**{p.name: line.values[p.name] for p in own}, opts=line)

        signature = inspect.Signature([context, *own, *(o.parameter() for o in shared)])
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return command

    return decorate


@dataclass
class CommandLine:
    """The values of one command line, by parameter name, after ``--config FILE``; ``given``: the
    names set on the command line or in that file (the rest hold their defaults)."""

    values: dict[str, Any]
    given: frozenset[str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @classmethod
    def read(cls, ctx: typer.Context, values: dict[str, Any], option_types: Mapping[str, Any] | None = None
             ) -> CommandLine:
        """``option_types``: each option's type, to check what the config file gives it."""
        given = {name for name in values if _from_command_line(ctx, name)}
        path = values.get("config_file")
        if path is not None:
            from pumsearch.runs.session import read_config_file

            search_names = {f.name for f in fields(SearchConfig)} | {s.name for s in NAMED_SETTINGS}
            for name, value in read_config_file(path, set(values) - {"config_file"}, search_names).items():
                if name not in given:
                    value = _config_value(name, value)
                    values[name] = _typed(path, name, value, (option_types or {}).get(name))
                    given.add(name)
        return cls(values, frozenset(given))

    def check_scheduling(self) -> None:
        """--concurrency, --batch-tokens and --threads must be positive where the command has them."""
        for name in ("concurrency", "batch_tokens", "threads"):
            value = self.values.get(name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")

    # -- the search --------------------------------------------------------------------------------
    def search_settings(self) -> dict[str, Any]:
        """The SearchConfig fields this command has (a sweep's per-run ones come from its grid)."""
        settings = {o.name: self.values[o.name] for o in SEARCH if o.name in self.values}
        if settings.get("time_limit") is not None and settings["time_limit"] <= 0:
            raise UsageError(f"--time-limit must be positive (got {settings['time_limit']:g})")
        return settings

    def search_config(self) -> SearchConfig:
        """solve and run: the one search these options configure."""
        settings = self.search_settings()
        return SearchConfig(**settings, strategy_options=self.strategy_options([settings["strategy"]])[0])

    def strategy_options(self, strategies: Sequence[str]) -> list[dict[str, Any]]:
        """Each strategy's own settings: the named flags given that it takes, and the
        --strategy-option entries it takes, typed by its Settings. A named flag a strategy does not
        take is left out (as it always was); a --strategy-option that none of them takes is refused."""
        flags = {s.name: self.values[s.name] for s in NAMED_SETTINGS if s.name in self.given}
        typed = parse_key_values(self.values["strategy_option"], "--strategy-option")
        both = sorted(flags.keys() & typed.keys())
        if both:
            raise UsageError(f"--{both[0].replace('_', '-')} and --strategy-option {both[0]} both set {both[0]}: "
                             "give one")
        classes = [get_strategy(name) for name in strategies]
        taken = [set(cls.Settings.types()) for cls in classes]
        for key in typed:
            if not any(key in names for names in taken):
                if len(classes) == 1:  # the strategy's own message names what it takes
                    classes[0].Settings.parse({key: typed[key]}, classes[0].name)
                raise UsageError(f"none of the strategies {', '.join(strategies)} has setting {key} "
                                 f"(--strategy-option {key}=...)")
        given = {**flags, **typed}
        return [cls.Settings.parse({k: v for k, v in given.items() if k in names}, cls.name)
                for cls, names in zip(classes, taken, strict=True)]

    def flat_settings(self, options: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Every search value of this command line in one flat dict, as sweep.json's base records
        them: the SearchConfig fields, every named strategy flag, and each strategy's ``options``."""
        flat = {**self.search_settings(), **{s.name: self.values[s.name] for s in NAMED_SETTINGS}}
        for own in options:
            flat.update(own)
        return flat

    # -- the backend and the scorers ---------------------------------------------------------------
    def backend(self) -> dict[str, Any]:
        """load_generator keywords (the model aside)."""
        v = self.values
        check_device_name(v["device"])  # before any model loads
        options = backend_options(v["backend"], url=v["url"], launch=v["launch"], tokenizer=v["tokenizer"],
                                  max_concurrency=v["max_concurrency"], request_timeout=v["request_timeout"],
                                  retries=v["retries"], kv_cache_mb=v["kv_cache_mb"],
                                  scripted_delay=v["scripted_delay"], extra_body=parse_extra_body(v["extra_body"]),
                                  server_n=v["server_n"])
        options.update(device=v["device"], dtype=v["dtype"], cache_dir=v["cache_dir"],
                       trust_remote_code=v["trust_remote_code"])
        return options

    def scorer(self) -> dict[str, Any]:
        """load_scorer keywords from the --scorer-* flags; unset ones left out. run and sweep have no
        --scorer-model or --prm-format: their scorer specs carry path and format."""
        v = self.values
        if v["scorer_device"] is not None:
            check_device_name(v["scorer_device"], "--scorer-device")
        options = scorer_options(v.get("scorer_model"), v["scorer_base"], v["scorer_device"], v["scorer_dtype"],
                                 v.get("prm_format"), v["scorer_option"])
        if v["scorer_url"] is not None:
            options["url"] = v["scorer_url"]
        return options


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # typer may vendor its own click


def _config_value(name: str, value: Any) -> Any:
    """A TOML value as the flag would give it: lists of the grid axes joined with commas; KEY=VALUE
    options as a list of "KEY=VALUE" or a table."""
    if name in LIST_OPTIONS:
        if isinstance(value, dict):
            return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _option_type(annotation: Any) -> Any:
    """The value type of a command's own parameter (its annotation without typer's Option)."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text", Path: "a path"}


def _typed(path: Path, name: str, value: Any, annotation: Any) -> Any:
    """A config-file value as its option takes it (an int for a float, a number for text), or a
    UsageError naming the file, the key and the type it needs ("temperature = 'hot'")."""
    if annotation is None or name in LIST_OPTIONS:
        return value
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    kinds = [m for m in members if m is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and is_number:
        return float(value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and (isinstance(value, str) or is_number):
        return str(value)
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind not in _KINDS:
        return value
    raise UsageError(f"{path}: {name.replace('_', '-')} must be {_KINDS[kind]} (got {value!r})")


def parse_key_values(entries: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` entries by key (dashes in keys read as underscores); the values stay text."""
    out: dict[str, str] = {}
    for entry in entries or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {entry!r} is not KEY=VALUE")
        out[key.strip().replace("-", "_")] = value
    return out


def backend_options(backend: str, *, url: str | None, launch: bool, tokenizer: str | None,
                    max_concurrency: int | None, request_timeout: float, retries: int,
                    kv_cache_mb: int | None = None, scripted_delay: float = 0.0,
                    extra_body: dict[str, Any] | None = None, server_n: str = "auto") -> dict[str, Any]:
    """load_generator keywords for --backend and the server flags (refusing flags that do not apply):
    the flags the backend's registry entry takes. ``scripted`` (hidden) is the ScriptedGenerator,
    for tests and runs without a model."""
    from pumsearch.backends import generator_options

    try:
        return generator_options(backend, url=url, launch=launch, tokenizer=tokenizer,
                                 max_concurrency=max_concurrency, request_timeout=request_timeout,
                                 retries=retries, kv_cache_mb=kv_cache_mb, delay=scripted_delay,
                                 extra_body=extra_body, server_n=server_n)
    except ValueError as err:
        raise UsageError(str(err)) from None


def parse_extra_body(text: str | None) -> dict[str, Any] | None:
    """--extra-body: a JSON object (UsageError naming what is wrong otherwise)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--extra-body is not JSON ({err.msg} at character {err.pos}): give an object such as "
                         "'{\"top_k\": 20}'") from None
    if not isinstance(value, dict):
        raise UsageError(f"--extra-body must be a JSON object, not {type(value).__name__}: e.g. '{{\"top_k\": 20}}'")
    return value


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
    options.update({k: parse_option_value(v) for k, v in parse_key_values(extra, "--scorer-option").items()})
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
