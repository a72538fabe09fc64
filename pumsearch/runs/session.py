"""What ``pumsearch run`` and ``sweep`` do between parsing flags and running: read the TOML config
file, load and shard the dataset, name the model, check the sweep directory, and run the plans
with one generator."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumsearch.runs.grid import RunPlan, ScorerSpec, shard_problems
from pumsearch.runs.records import RunError
from pumsearch.runs.rundir import FLAT_STRATEGY_SETTINGS, config_hash, describe_difference, write_json_atomic
from pumsearch.runs.runner import RunProgress, Tally, default_scorer_loader, execute_plans
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem

SWEEP_FORMAT = "pumsearch-sweep"
# The search settings sweep.json's base always held (before the other search flags, which join it only
# when set to something other than their default, so sweep directories made before them resume).
SWEEP_BASE_SETTINGS = ("temperature", "top_p", "max_tokens", "max_step_tokens", "step_delimiter", "aggregate",
                       "select", "beam_width", "max_depth", "time_limit")


def read_config_file(path: Path, allowed: set[str], search_names: set[str]) -> dict[str, Any]:
    """A TOML file of option values (names as the flags, dashes or underscores); a ``[search]``
    table may set any of ``search_names`` (the search settings, the built-in strategies' ones
    included) that the command has. Unknown names are refused."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise RunError(f"{path} is not valid TOML ({err})") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "search" and isinstance(value, dict):
            for sub, sub_value in value.items():
                sub_name = sub.replace("-", "_")
                if sub_name not in search_names:
                    raise RunError(f"{path}: unknown search setting {sub!r} in [search]")
                if sub_name not in allowed:
                    raise RunError(f"{path}: this command takes no {sub!r} (a sweep takes lists: strategies, "
                                   "budgets, seeds)")
                flat[sub_name] = sub_value
            continue
        if name not in allowed:
            raise RunError(f"{path}: unknown option {key!r} (use the names of the command's flags)")
        flat[name] = value
    return flat


def sweep_base_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """The search settings of a sweep's base (sweep.json): those it always held, and any other at a
    value other than its default."""
    defaults = {**vars(SearchConfig()), **FLAT_STRATEGY_SETTINGS}
    return {k: v for k, v in flat.items() if k in SWEEP_BASE_SETTINGS or k not in defaults or v != defaults[k]}


def model_identity(
    model: str | None, backend: str, dtype: str, *, url: str | None = None, tokenizer: str | None = None,
    extra_body: dict[str, Any] | None = None, server_n: str = "auto",
) -> dict[str, Any]:
    """How records (and run keys) name the policy: an absolute path for local models, else the hub or
    embedded name; a server's address only when no --model names what it serves. dtype only where the
    backend uses it (transformers); the tokenizer only when given, as it decides the prompts; so do
    --extra-body and a --server-n other than auto (they change what is sampled)."""
    from pumsearch.backends import backend_entry

    entry = backend_entry(backend)
    if entry.recorded_name is not None:
        return {"backend": backend, "name": entry.recorded_name, "dtype": None}
    if model is None and url is not None:
        name = url.rstrip("/")
    elif model is None:
        from pumsearch.backends.embedded import EMBEDDED_NAME

        name = f"embedded:{EMBEDDED_NAME}"
    else:
        name = _local_or_named(model)
    identity: dict[str, Any] = {"backend": backend, "name": name, "dtype": dtype if entry.uses_dtype else None}
    if tokenizer is not None:
        identity["tokenizer"] = _local_or_named(tokenizer)
    if extra_body:
        identity["extra_body"] = extra_body
    if server_n != "auto":
        identity["server_n"] = server_n
    return identity


def _local_or_named(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def parse_ids(text: str | None) -> list[str] | None:
    """``a,b,c`` or ``@FILE`` (one id per line)."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            raise RunError(f"--ids file {path} does not exist") from None
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass
class DatasetChoice:
    spec: str
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    limit: int | None = None
    offset: int = 0
    ids: list[str] | None = None

    def identity(self) -> dict[str, Any]:
        """What goes into run keys: the dataset and its field mapping, not the selection."""
        spec = self.spec
        path = Path(spec).expanduser()
        if path.is_file():
            spec = str(path.resolve())
        return {
            "spec": spec,
            "question_field": self.question_field,
            "answer_field": self.answer_field,
            "id_field": self.id_field,
        }

    def load(self, shard: tuple[int, int] | None) -> list[Problem]:
        from pumsearch.datasets import DatasetError, load_problems

        problems = load_problems(
            self.spec,
            question_field=self.question_field,
            answer_field=self.answer_field,
            id_field=self.id_field,
            limit=self.limit,
            offset=self.offset,
            ids=self.ids,
        )
        mine = shard_problems(problems, shard)
        if not mine:
            index, count = shard or (0, 1)
            raise DatasetError(f"shard {index}/{count} gets none of the {len(problems)} problems")
        return mine


def check_sweep_dir(out: Path, base: dict[str, Any], grid: dict[str, Any]) -> None:
    """One sweep directory holds one base configuration; its grid may grow (more budgets, seeds,
    strategies or scorers), but a change of anything else is refused before any run starts."""
    path = out / "sweep.json"
    if path.exists():
        import json

        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunError(f"{path} is not valid JSON ({err}); restore it or use another --out") from None
        if existing.get("base_key") != config_hash(base):
            raise RunError(
                f"{out} holds a sweep of a different configuration "
                f"({describe_difference(existing.get('base', {}), base)}); use another --out directory"
            )
        grids = existing.get("grids", [])
        if grid not in grids:
            grids.append(grid)
        existing["grids"] = grids
        write_json_atomic(path, existing)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {out} ({err.strerror or err}): choose an --out you can write to") from None
    write_json_atomic(
        path,
        {"format": SWEEP_FORMAT, "version": 1, "base_key": config_hash(base), "base": base, "grids": [grid]},
    )


def load_policy(model: str | None, backend_options: dict[str, Any]) -> Any:
    """The policy: ``backend_options`` are load_generator's keywords as the CLI resolved them."""
    from pumsearch.backends import load_generator

    return load_generator(model, **backend_options)


def load_scorers(specs: Sequence[ScorerSpec | None], step_delimiter: str) -> dict[str, Any]:
    """Every scorer of a run or sweep, loaded before any run directory is made, so a bad checkpoint or
    option is reported while nothing is written yet. On an error the ones loaded are closed."""
    from pumsearch.scorers import load_scorer

    loaded: dict[str, Any] = {}
    try:
        for spec in specs:
            if spec is not None and spec.spec not in loaded:
                loaded[spec.spec] = load_scorer(spec.name, step_delimiter=step_delimiter, **spec.load_options())
    except BaseException:
        close_scorers(loaded)
        raise
    return loaded


def close_scorers(scorers: dict[str, Any]) -> None:
    """Close loaded scorers outside an event loop (a command stopped before running them)."""
    asyncio.run(_close_all(scorers.values()))


async def _close_all(scorers: Any) -> None:
    for scorer in scorers:
        await scorer.aclose()


def run_plans(
    plans: Sequence[RunPlan],
    problems: Sequence[Problem],
    generator: Any,
    *,
    progress: RunProgress | None,
    concurrency: int,
    batch_tokens: int | None,
    shard: tuple[int, int] | None,
    load_scorer: Any = None,
    scorers: dict[str, Any] | None = None,
) -> list[Tally]:
    """Run the plans with one generator (closed at the end). ``scorers``: loaded ones by spec (see
    load_scorers); those no plan was given (an early stop) are closed here, the rest by execute_plans."""
    handed_out: set[str] = set()

    def preloaded(spec: ScorerSpec, config: Any) -> Any:
        assert scorers is not None
        handed_out.add(spec.spec)
        return scorers[spec.spec]

    async def main() -> list[Tally]:
        try:
            return await execute_plans(
                plans,
                problems,
                generator=generator,
                load_scorer=load_scorer or (preloaded if scorers is not None else default_scorer_loader),
                progress=progress,
                concurrency=concurrency,
                batch_tokens=batch_tokens,
                shard=shard,
            )
        finally:
            await generator.aclose()
            await _close_all(s for key, s in (scorers or {}).items() if key not in handed_out)

    return asyncio.run(main())
