"""Best-of-N: N complete solutions, scored, one picked (by score, majority or weighted vote)."""

from __future__ import annotations

from typing import ClassVar

from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy


class BestOfN(Strategy):
    name: ClassVar[str] = "bon"
    budget_unit: ClassVar[str] = "solutions"
    subsample_unit: ClassVar[str | None] = "solutions"  # the first n of N solutions are a run at n

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        (leaves,) = await ctx.expand([ROOT], self.config.budget, until="end")
        if ctx.has_scorer:
            await ctx.score(leaves)
        return await ctx.finish(ctx.candidates(leaves))
