"""Greedy step search: a complete custom strategy (run it with
``pumsearch solve "..." --scorer verifier --answer 5 --strategy docs.examples.custom_strategy:GreedyStep``
from the repository root, or any importable ``package.module:ClassName``; its setting with
``--strategy-option width=2``)."""

from dataclasses import dataclass, field

from pumsearch import ROOT, BudgetExhausted, Problem, SearchContext, SearchResult, Strategy, StrategySettings


@dataclass(frozen=True)
class GreedySettings(StrategySettings):
    width: int = field(default=0, metadata={"help": "Next steps sampled per step (0: --budget)."})


class GreedyStep(Strategy):
    """Sample N next steps, keep the best-scored one, repeat until the solution ends."""

    name = "greedy-step"  # how records and reports name it
    requires_scorer = True  # without --scorer the CLI refuses to start and names the scorers
    Settings = GreedySettings  # its --strategy-option settings
    settings: GreedySettings

    def width(self) -> int:
        return self.settings.width or self.config.budget

    def budget_limit(self) -> int:
        return self.width() * self.config.max_depth  # `width` step expansions per step, max_depth steps

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        node = ROOT
        try:
            while node == ROOT or not ctx.tree[node]["terminal"]:
                (children,) = await ctx.expand([node], self.width())  # one batched backend call
                if not children:  # no room left under --max-tokens: the context ended the prefix
                    break
                await ctx.score(children)  # one batched scorer call
                node = max(children, key=lambda c: ctx.node_score(c) or 0.0)
        except BudgetExhausted:  # the time limit: finish with what exists
            pass
        return await ctx.finish(ctx.candidates())  # every finished prefix; --select picks one
