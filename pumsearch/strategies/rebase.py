"""REBASE, reward-balanced search (Wu et al. 2024, "Inference Scaling Laws"; thu-wyz/rebase @ 5da162e,
rebase.py). docs/strategies.md lists where this follows the paper, where the code, and where it
differs from both.

Budget N is the width: the root is expanded N times. At every depth the new prefixes are scored
(ONE ``ctx.expand`` and ONE ``ctx.score`` per depth for all of them); the finished ones leave the
width for good (remaining width = N minus every solution finished so far), and the remaining
width is shared among the open prefixes in proportion to softmax(score / T), T =
``rebase_temperature`` (0.2, the reference's setting). The shares are the reference's sequential
rounding up (rebase.py:123-141): prefixes sorted best first, each takes

    k = ceil(W * exp(s / T) / S)

of the width W still to give, where S sums exp(s / T) over itself and the prefixes after it; W and
S then drop by k and exp(s / T). The shares sum to the remaining width exactly (the last prefix
reached takes all that is left); prefixes after the width runs out get 0 and are pruned: never
expanded again. A share is capped at W, and one within 1e-9 of a whole number counts as that
number (the reference's float32 subtraction can give one width too many there). Each prefix is
expanded k times, one step each.

The search ends when the width is spent (N solutions finished) or no prefix is open; the depth
cap (--max-depth) finishes what is still open. The candidates are every finished prefix in the
tree; ``--select`` picks the answer (default: the best-scored; weighted: the sum of normalised
scores per answer class, as the reference's weighted majority vote with the last step's score).

Tree attribute (REBASE trees): ``allocated``, the width an open prefix was given (0: pruned).

Budget unit: step expansions; at most N per depth, so at most N x max_depth in all.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pumsearch.search.budget import BudgetExhausted
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings
from pumsearch.strategies.beam import rank

WHOLE_NUMBER_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RebaseSettings(StrategySettings):
    rebase_temperature: float = field(default=0.2, metadata={
        "help": "T: open prefixes share the width in proportion to softmax(score / T)."})


def allocate(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """The width each prefix gets, ``scores`` sorted best first (rebase.py:132-141, with the cap)."""
    if not scores:
        return []
    top = max(scores)
    if top == -math.inf:  # nothing scored: equal weights
        scores, top = [0.0] * len(scores), 0.0
    exps = [math.exp((s - top) / temperature) for s in scores]  # the shift cancels in every share
    shares = []
    left = width
    for i, e in enumerate(exps):
        rest = math.fsum(exps[i:])
        k = math.ceil(left * e / rest - WHOLE_NUMBER_TOLERANCE) if left > 0 and rest > 0 else 0
        k = min(max(k, 0), left)
        shares.append(k)
        left -= k
    return shares


class Rebase(Strategy):
    name: ClassVar[str] = "rebase"
    requires_scorer: ClassVar[bool] = True  # with no --scorer, the default rule decides (docs/scorers.md)
    budget_unit: ClassVar[str] = "step expansions"
    Settings: ClassVar[type[StrategySettings]] = RebaseSettings
    settings: RebaseSettings
    node_defaults: ClassVar[Mapping[str, Any]] = types.MappingProxyType({"allocated": None})

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        if not self.settings.rebase_temperature > 0:
            raise StrategyError(f"--rebase-temperature must be above 0 (got {self.settings.rebase_temperature})")
        if self.config.max_depth < 1:
            raise StrategyError(f"--max-depth must be at least 1 (got {self.config.max_depth})")

    def budget_limit(self) -> int:
        return self.config.budget * self.config.max_depth

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        reason = None
        try:
            await self._depths(ctx)
        except BudgetExhausted as err:  # the time limit: what finished so far
            reason = str(err)
        result = await ctx.finish(ctx.candidates())
        result.cut_reason = reason
        return result

    async def _depths(self, ctx: SearchContext) -> None:
        remaining = self.config.budget
        frontier, widths = [ROOT], [remaining]
        while frontier:
            new = await ctx.expand(frontier, widths)
            children = [c for kids in new for c in kids]
            if children:
                await ctx.score(children)
            # a frontier prefix with no room left under --max-tokens got no children: it finished
            ended = [n for n, kids in zip(frontier, new, strict=True) if not kids and n != ROOT]
            remaining -= len(ended) + sum(1 for c in children if ctx.tree[c]["terminal"])
            open_children = [c for c in children if not ctx.tree[c]["terminal"]]
            if remaining <= 0 or not open_children:
                return
            scores = {c: _score_or_floor(ctx.node_score(c)) for c in open_children}
            ranked = rank(open_children, scores)
            shares = allocate([scores[c] for c in ranked], remaining, self.settings.rebase_temperature)
            for node, k in zip(ranked, shares, strict=True):
                ctx.tree[node]["allocated"] = k
            frontier = [n for n, k in zip(ranked, shares, strict=True) if k > 0]
            widths = [k for k in shares if k > 0]


def _score_or_floor(value: float | None) -> float:
    return -math.inf if value is None else value


__all__ = ["Rebase", "RebaseSettings", "allocate"]
