"""Greedy step search: a complete custom strategy (run it with
``pumsearch solve "..." --scorer verifier --answer 5 --strategy docs.examples.custom_strategy:GreedyStep``
from the repository root, or any importable ``package.module:ClassName``)."""

from pumsearch.search.budget import BudgetExhausted
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies import Strategy


class GreedyStep(Strategy):
    """Sample N next steps, keep the best-scored one, repeat until the solution ends."""

    name = "greedy-step"
    requires_scorer = True  # without --scorer the CLI refuses to start and names the scorers

    def budget_limit(self, config: SearchConfig) -> int:
        return config.budget * config.max_depth  # N step expansions per step, at most max_depth steps

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        node = ROOT
        try:
            while node == ROOT or not ctx.tree[node]["terminal"]:
                (children,) = await ctx.expand([node], self.config.budget)  # one batched backend call
                if not children:  # no room left under --max-tokens: the context ended the prefix
                    break
                await ctx.score(children)  # one batched scorer call
                node = max(children, key=lambda c: ctx.node_score(c) or 0.0)
        except BudgetExhausted:  # the time limit: finish with what exists
            pass
        return await ctx.finish(ctx.candidates())  # every finished prefix; --select picks one
