"""Best-of-N: N complete solutions, scored, one picked (by score, majority or weighted vote).

``--keep F`` (a fraction in (0, 1]) makes a vote count only the top F of the scored solutions,
highest scores first: DeepConf's offline filter (keep the most confident traces, then vote), with
any scorer. The best-scored solution is always among them, so ``--select best`` is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings


@dataclass(frozen=True)
class BestOfNSettings(StrategySettings):
    keep: float = field(default=1.0, metadata={
        "help": "Fraction of the scored solutions a vote keeps, highest scores first (DeepConf's filter; 1: all)."})


class BestOfN(Strategy):
    name: ClassVar[str] = "bon"
    budget_unit: ClassVar[str] = "solutions"
    subsample_unit: ClassVar[str | None] = "solutions"  # the first n of N solutions are a run at n
    Settings: ClassVar[type[StrategySettings]] = BestOfNSettings
    settings: BestOfNSettings

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        keep = self.settings.keep
        if not 0 < keep <= 1:
            raise StrategyError(f"--keep must be a fraction in (0, 1], the share of solutions a vote keeps "
                                f"(got {keep})")
        if keep < 1 and not has_scorer:
            raise StrategyError("--keep filters the solutions by score: pass --scorer (confidence needs no model)")

    def vote_filter(self) -> float:
        """The fraction of scored candidates its votes keep (read-off budgets apply it too)."""
        return self.settings.keep

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        (leaves,) = await ctx.expand([ROOT], self.config.budget, until="end")
        if ctx.has_scorer:
            await ctx.score(leaves)
        return await ctx.finish(ctx.candidates(leaves), keep=self.settings.keep)
