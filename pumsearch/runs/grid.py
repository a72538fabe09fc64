"""Sweep grids: scorer specs, budget and seed lists, shards, and the plan of runs they expand to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pumsearch.runs.records import RunError
from pumsearch.runs.rundir import RunSpec
from pumsearch.search.config import SearchConfig
from pumsearch.strategies import Strategy, get_strategy

_SCORER_ITEM = re.compile(r"^(?P<name>[A-Za-z_][\w.-]*)(?::(?P<format>[\w.-]+))?(?:=(?P<path>.+))?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
# Scorer options that only decide where and in what batches a scorer runs: left out of run keys.
UNKEYED_SCORER_OPTIONS = ("device", "batch_tokens", "max_batch_items", "cache_size")


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer of a sweep: ``name[:format][=path]`` (``none``: no scorer), plus the options of the
    --scorer-* flags that apply to it (load_scorer keywords)."""

    spec: str
    name: str
    format: str | None = None
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def keyed_options(self) -> dict[str, Any]:
        """The options that change scores. A server address counts only when nothing else names the
        reward model behind it (as with the policy's --url)."""
        keyed = {k: v for k, v in self.options.items() if k not in UNKEYED_SCORER_OPTIONS}
        if self.path is not None:
            keyed.pop("url", None)
        return keyed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec, "name": self.name, "format": self.format, "path": self.path}
        keyed = self.keyed_options()
        if keyed:  # absent when none are set, so keys of runs made without options stay the same
            out["options"] = dict(sorted(keyed.items()))
        return out

    def load_options(self) -> dict[str, Any]:
        options: dict[str, Any] = dict(self.options)
        if self.path is not None:
            options["model"] = self.path
        if self.format is not None:
            options["prm_format"] = self.format
        return options


def parse_scorer_specs(text: str | None) -> list[ScorerSpec | None]:
    """``pum=PATH,prm:qwen=PATH,verifier,none`` -> one entry per scorer (None for ``none``)."""
    if text is None or not text.strip():
        return [None]
    out: list[ScorerSpec | None] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise RunError(f"empty scorer in --scorers {text!r}: separate scorers with single commas")
        if item == "none":
            out.append(None)
            continue
        match = _SCORER_ITEM.match(item)
        if match is None:
            raise RunError(f"cannot read scorer {item!r}: write NAME, NAME=PATH or NAME:FORMAT=PATH")
        out.append(ScorerSpec(item, match["name"], match["format"], match["path"]))
    return out


def parse_int_list(text: str | list[int] | None, what: str, minimum: int = 0) -> list[int]:
    if text is None:
        raise RunError(f"give {what} as a comma-separated list, e.g. 4,8,16")
    items = text if isinstance(text, list) else [t.strip() for t in str(text).split(",")]
    if any(item == "" for item in items) and len(items) > 1:
        raise RunError(f"{what} {text!r} has an empty entry: separate the numbers with single commas")
    items = [item for item in items if item != ""]
    try:
        values = [int(v) for v in items]
    except (TypeError, ValueError):
        raise RunError(f"{what} must be whole numbers separated by commas (got {text!r})") from None
    if not values or any(v < minimum for v in values):
        raise RunError(f"{what} must be numbers >= {minimum} (got {text!r})")
    return sorted(dict.fromkeys(values))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` with 0 <= i < n; None for no sharding."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise RunError(f"--shard must look like i/n, e.g. 0/4 (got {text!r})")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise RunError(f"--shard {text}: the number of shards n must be at least 1 (i/n, e.g. 0/4)")
    if not 0 <= index < count:
        raise RunError(
            f"--shard {text}: the shard index must be in 0..{max(count - 1, 0)} (shards are 0-based)"
        )
    return index, count


def shard_problems(problems: list[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Every n-th problem from the i-th: shards are disjoint and cover the set."""
    return problems if shard is None else problems[shard[0] :: shard[1]]


@dataclass
class RunPlan:
    spec: RunSpec
    path: Path
    scorer: ScorerSpec | None
    # the line saying what was chosen because no scorer was named (pumsearch.api.search_default); each
    # record keeps it, the run key does not (the same configuration named outright is the same run)
    default_note: str | None = None

    @property
    def label(self) -> str:
        c = self.spec.search
        budgets = self.spec.subsample_budgets
        n = f"n={c.budget}" + (
            f" (read off for {','.join(map(str, budgets))})" if budgets and len(budgets) > 1 else ""
        )
        return f"{c.strategy} / {self.spec.scorer_label} {n} seed {c.seed}"


def run_dir_name(spec: RunSpec) -> str:
    c = spec.search
    strategy = _UNSAFE.sub("_", c.strategy).strip("_")[:40]
    scorer = _UNSAFE.sub("_", spec.scorer["name"] if spec.scorer else "none").strip("_")[:20]
    return f"{strategy}-{scorer}-n{c.budget}-s{c.seed}-{spec.key}"


def plan_grid(
    out: Path,
    *,
    strategies: list[str],
    budgets: list[int],
    scorers: list[ScorerSpec | None],
    seeds: list[int],
    settings: dict[str, Any],
    dataset: dict[str, Any],
    model: dict[str, Any],
    strategy_options: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[RunPlan], list[str]]:
    """The runs of a sweep, and notes on combinations left out. ``settings``: the SearchConfig
    fields the grid shares; ``strategy_options``: each strategy's own, by name. A strategy that subsamples
    (bon, dvts) runs once at the largest budget it can read the others off; the rest run per budget."""
    plans: list[RunPlan] = []
    notes: list[str] = []
    for scorer in scorers:
        for strategy in strategies:
            cls = get_strategy(strategy)
            if cls.requires_scorer and scorer is None:
                notes.append(f"{strategy} needs a scorer: left out with scorer 'none' (--scorers confidence needs "
                             "no reward model)")
                continue
            for seed in seeds:
                base = SearchConfig(**{**settings, "strategy": strategy, "budget": max(budgets), "seed": seed,
                                       "strategy_options": (strategy_options or {}).get(strategy, {})})
                plans.extend(_plans_for(out, cls(base), budgets, scorer, dataset, model))
    return plans, notes


def _plans_for(
    out: Path,
    strategy: Strategy,
    budgets: list[int],
    scorer: ScorerSpec | None,
    dataset: dict[str, Any],
    model: dict[str, Any],
) -> list[RunPlan]:
    base = strategy.config
    unit = strategy.subsample_unit
    per_group = strategy.budget_per_group()
    scorer_dict = scorer.to_dict() if scorer else None
    read_off = [b for b in budgets if unit and b % per_group == 0 and b >= per_group]
    plans = []
    if read_off:
        sub = {"unit": unit, "budget_per_group": per_group}
        spec = RunSpec(replace(base, budget=max(read_off)), dataset, model, scorer_dict, read_off, sub)
        plans.append(RunPlan(spec, out / run_dir_name(spec), scorer))
    for budget in budgets:
        if budget in read_off:
            continue
        spec = RunSpec(replace(base, budget=budget), dataset, model, scorer_dict)
        plans.append(RunPlan(spec, out / run_dir_name(spec), scorer))
    return plans


def single_plan(
    out: Path, config: SearchConfig, scorer: ScorerSpec | None, dataset: dict[str, Any], model: dict[str, Any]
) -> RunPlan:
    """``pumsearch run``: one configuration in ``out`` itself (subsampled strategies still record
    their groups, so report can read smaller budgets off the run later)."""
    strategy = get_strategy(config.strategy)(config)
    unit = strategy.subsample_unit
    sub = {"unit": unit, "budget_per_group": strategy.budget_per_group()} if unit else None
    spec = RunSpec(
        config, dataset, model, scorer.to_dict() if scorer else None, [config.budget] if unit else None, sub
    )
    return RunPlan(spec, out, scorer)
