"""What ``pumsearch run`` and ``sweep`` do between parsing flags and running: read the TOML config
file, load and shard the dataset, name the model, check the sweep directory, and run the plans
with one generator."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pumsearch.runs.grid import RunPlan, shard_problems
from pumsearch.runs.records import RunError
from pumsearch.runs.rundir import config_hash, describe_difference, write_json_atomic
from pumsearch.runs.runner import RunProgress, Tally, default_scorer_loader, execute_plans
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem

SWEEP_FORMAT = "pumsearch-sweep"
SEARCH_FIELDS = {f.name for f in fields(SearchConfig)} - {"extra"}


def read_config_file(path: Path, allowed: set[str]) -> dict[str, Any]:
    """A TOML file of option values (names as the flags, dashes or underscores); a ``[search]``
    table may set any SearchConfig field. Unknown names are refused."""
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
                if sub_name not in SEARCH_FIELDS:
                    raise RunError(f"{path}: unknown search setting {sub!r} in [search]")
                flat[sub_name] = sub_value
            continue
        if name not in allowed and name not in SEARCH_FIELDS:
            raise RunError(f"{path}: unknown option {key!r} (use the names of the command's flags)")
        flat[name] = value
    return flat


def model_identity(model: str | None, backend: str, dtype: str) -> dict[str, Any]:
    """How records name the policy: an absolute path for local models, else the hub or embedded name."""
    if backend == "scripted":
        return {"backend": backend, "name": "scripted", "dtype": None}
    if model is None:
        from pumsearch.backends.embedded import EMBEDDED_NAME

        return {"backend": backend, "name": f"embedded:{EMBEDDED_NAME}", "dtype": dtype}
    path = Path(model).expanduser()
    return {"backend": backend, "name": str(path.resolve()) if path.exists() else model, "dtype": dtype}


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
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        path,
        {"format": SWEEP_FORMAT, "version": 1, "base_key": config_hash(base), "base": base, "grids": [grid]},
    )


def load_policy(
    model: str | None,
    *,
    backend: str,
    device: str,
    dtype: str,
    cache_dir: str | None,
    trust_remote_code: bool,
    scripted_delay: float = 0.0,
) -> Any:
    from pumsearch.backends import load_generator

    options: dict[str, Any] = {"delay": scripted_delay} if backend == "scripted" else {}
    return load_generator(
        model,
        backend=backend,
        device=device,
        dtype=dtype,
        cache_dir=cache_dir,
        trust_remote_code=trust_remote_code,
        **options,
    )


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
) -> list[Tally]:
    async def main() -> list[Tally]:
        try:
            return await execute_plans(
                plans,
                problems,
                generator=generator,
                load_scorer=load_scorer or default_scorer_loader,
                progress=progress,
                concurrency=concurrency,
                batch_tokens=batch_tokens,
                shard=shard,
            )
        finally:
            await generator.aclose()

    return asyncio.run(main())
