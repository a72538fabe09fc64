"""The Strategy base class and the base of a strategy's own settings.

A strategy is a small class with one async ``search`` method. It holds the shared search settings
(``self.config``, a SearchConfig) and its own (``self.settings``, an instance of its ``Settings``
dataclass, filled from ``config.strategy_options``):

    @dataclass(frozen=True)
    class GreedySettings(StrategySettings):
        width: int = field(default=0, metadata={"help": "Children per step (0: --budget)."})

    class Greedy(Strategy):
        name = "greedy"
        requires_scorer = True
        Settings = GreedySettings

        async def search(self, problem, ctx):
            ...
            return await ctx.finish(ctx.candidates())

Each field of ``Settings`` is a ``--strategy-option KEY=VALUE`` (typed by the field) on the command
line and in a TOML ``--config``; the built-in strategies' fields are also named flags
(``--beam-width``). See docs/strategies.md and docs/examples/custom_strategy.py.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from pumsearch.search.budget import Budget
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import SearchTree


class StrategyError(ValueError):
    """A strategy cannot run with the given settings (the message says what to change)."""


@dataclass(frozen=True)
class StrategySettings:
    """A strategy's own settings: subclass it as a frozen dataclass, one field per setting, each with
    a default and ``metadata={"help": ...}``. This base has none."""

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Each setting's type (the field annotations, resolved)."""
        hints = get_type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}

    @classmethod
    def parse(cls, options: Mapping[str, Any], strategy: str) -> dict[str, Any]:
        """``options`` as typed values of these settings, those equal to their default left out (so
        an explicit default and an unset setting configure, and key, the same run). Text values (from
        ``--strategy-option``) are read by the field's type. An unknown name or a value of the wrong
        type raises StrategyError."""
        types_ = cls.types()
        defaults = vars(cls())
        out: dict[str, Any] = {}
        for key, value in options.items():
            name = key.replace("-", "_")
            if name not in types_:
                takes = ", ".join(sorted(types_)) or "no settings"
                raise StrategyError(f"strategy {strategy!r} has no setting {key!r} (it takes {takes})")
            typed = coerce_setting(value, types_[name], f"strategy {strategy!r} setting {name}")
            if typed != defaults[name]:
                out[name] = typed
        return out

    @classmethod
    def from_options(cls, options: Mapping[str, Any], strategy: str) -> StrategySettings:
        return cls(**cls.parse(options, strategy))


def coerce_setting(value: Any, annotation: Any, what: str) -> Any:
    """``value`` as ``annotation`` (bool, int, float, str, a Literal of strings, or X | None). Text is
    parsed; an int is taken for a float. Literal members are not checked here: the strategy's
    ``validate`` names the allowed values in its own words."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        if len(members) != 1:
            raise StrategyError(f"{what}: unsupported type {annotation}")
        annotation = members[0]
    if get_origin(annotation) is Literal:
        annotation = type(get_args(annotation)[0])
    reader = _READERS.get(annotation)
    if reader is None:
        raise StrategyError(f"{what}: unsupported type {annotation}")
    return reader(value, what)


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _read_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise StrategyError(f"{what} takes true or false, not {value!r}")


def _read_int(value: Any, what: str) -> int:
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise StrategyError(f"{what} takes a whole number, not {value!r}")


def _read_float(value: Any, what: str) -> float:
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return float(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise StrategyError(f"{what} takes a number, not {value!r}")


def _read_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    raise StrategyError(f"{what} takes text, not {value!r}")


_READERS: dict[Any, Any] = {bool: _read_bool, int: _read_int, float: _read_float, str: _read_str}


class Strategy:
    """Subclass it and implement ``search``. What the rest of the system needs from a strategy is
    declared here, so the engine, the runs and the command line know no strategy by name."""

    name: ClassVar[str] = "custom"  # how records and reports name it
    requires_scorer: ClassVar[bool] = False  # refused without --scorer
    budget_unit: ClassVar[str] = "step expansions"  # what one unit of its budget is
    Settings: ClassVar[type[StrategySettings]] = StrategySettings  # its own settings (--strategy-option)
    # Attributes every node of its trees starts with (e.g. MCTS's visit counts); other strategies'
    # trees do not carry them.
    node_defaults: ClassVar[Mapping[str, Any]] = types.MappingProxyType({})
    # "solutions" or "subtrees": a run at the largest N also gives every smaller N (read off by
    # ``subsample_groups``); None: a sweep reruns it per N.
    subsample_unit: ClassVar[str | None] = None

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.settings = self.Settings.from_options(config.strategy_options, self.name)

    def validate(self, has_scorer: bool) -> None:
        """Raise StrategyError when the settings cannot work (called before any problem runs)."""
        if self.requires_scorer and not has_scorer:
            from pumsearch.registry import SCORERS

            raise StrategyError(f"strategy {self.name!r} needs a scorer: pass --scorer ({', '.join(SCORERS.names())})")

    def needs_reference(self) -> str | None:
        """What in the settings needs every problem's reference answer (as the user set it, for the
        message), or None when the strategy runs without one."""
        return None

    def budget_limit(self) -> int:
        """How many units of ``budget_unit`` --budget N buys (docs/strategies.md)."""
        return self.config.budget

    def wants_logprobs(self) -> bool:
        """Whether its searches ask the backend for each step's log-probability (MCTS priors)."""
        return False

    def vote_filter(self) -> float:
        """The fraction of the scored candidates its votes keep (Best-of-N's --keep); 1: all."""
        return 1.0

    def make_budget(self) -> Budget:
        return Budget(limit=self.budget_limit(), unit=self.budget_unit)

    def budget_per_group(self) -> int:
        """The budget one subsampling group costs (1 per solution; DVTS: M per subtree)."""
        return 1

    def subsample_groups(self, tree: SearchTree, candidates: Sequence[Candidate]) -> list[list[int]]:
        """The nodes of each subsampling group, in generation order; by default one group per
        candidate: the nodes of its solution."""
        return [tree.path(c.node) for c in candidates]

    def stopped_early(self, result: SearchResult) -> bool:
        """True when the search ended by its own rule with budget to spare, by a rule that does not
        look at the budget, so a run at any larger budget would be this same run (adaptive Best-of-N).
        Read-off budgets above what the run spent then reuse the whole run."""
        return False

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError


__all__ = ["Strategy", "StrategyError", "StrategySettings", "coerce_setting"]
