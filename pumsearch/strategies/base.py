"""The Strategy base class. A strategy is a small class with one async ``search`` method.

    class Greedy(Strategy):
        name = "greedy"
        requires_scorer = True

        async def search(self, problem, ctx):
            ...
            return await ctx.finish(ctx.candidates())

See docs/strategies.md and docs/examples/custom_strategy.py.
"""

from __future__ import annotations

from typing import ClassVar

from pumsearch.search.budget import Budget
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult


class StrategyError(ValueError):
    """A strategy cannot run with the given settings (the message says what to change)."""


class Strategy:
    name: ClassVar[str] = "custom"
    requires_scorer: ClassVar[bool] = False
    budget_unit: ClassVar[str] = "step expansions"

    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def validate(self, has_scorer: bool) -> None:
        """Raise StrategyError when the settings cannot work (called before any problem runs)."""
        if self.requires_scorer and not has_scorer:
            from pumsearch.registry import SCORERS

            raise StrategyError(
                f"strategy {self.name!r} needs a scorer: pass --scorer "
                f"({', '.join(SCORERS.names())})"
            )

    def budget_limit(self, config: SearchConfig) -> int:
        """How many units of ``budget_unit`` --budget N buys (DESIGN.md, Budget)."""
        return config.budget

    def make_budget(self, config: SearchConfig) -> Budget:
        return Budget(limit=self.budget_limit(config), unit=self.budget_unit)

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError
