"""Step-level beam search and DVTS, with the semantics of huggingface/search-and-learn
(src/sal/search/beam_search.py and diverse_verifier_tree_search.py).

Beam search, budget N and beam width M: the root is expanded N times by one step; every round
the open prefixes are scored, the best N/M are kept and the N expansions of the next round are
shared among them (M each; when fewer than N/M remain open, the N are spread over those left, as
search-and-learn does). A prefix that finishes (end of sequence, a \\boxed{} answer, the token
or depth cap) leaves the beam and is kept. The search stops once N prefixes have finished, no
prefix is open, or the depth cap is reached. The answer is picked among the best N finished
prefixes (by aggregated score) with --select (best by default).

DVTS: N/M independent subtrees; each round every subtree expands its one prefix M times and keeps
the best child. A subtree stops when the child it keeps is finished. The candidates are the
finished children of each subtree's last round (N at most, as in search-and-learn).

Both issue ONE ``ctx.expand`` and ONE ``ctx.score`` per round for all their prefixes, so the
engine coalesces a round of K problems into one backend call. With --lookahead L, each open child
is first extended L more steps greedily (temperature 0, one expand per lookahead step) and ranked
by the score of its lookahead tip; the lookahead nodes stay in the tree, marked ``lookahead``.

Budget unit: step expansions. A round costs at most N x (1 + L) of them and there are at most
--max-depth rounds, so the limit is N x max_depth x (1 + L) and never binds before the depth cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx

from pumsearch.search.budget import BudgetExhausted
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings


@dataclass(frozen=True)
class StepSearchSettings(StrategySettings):
    """The settings beam search and DVTS share."""

    beam_width: int = field(default=4, metadata={"help": "M: children per kept prefix."})
    lookahead: int = field(default=0, metadata={"help": "Greedy steps looked ahead before ranking."})


@dataclass(frozen=True)
class BeamSettings(StepSearchSettings):
    filter_duplicates: bool = field(default=False, metadata={"help": "Drop prefixes with identical text."})


class _StepSearch(Strategy):
    """What beam search and DVTS share: validation, budget, lookahead, ranking."""

    requires_scorer: ClassVar[bool] = True
    budget_unit: ClassVar[str] = "step expansions"
    Settings: ClassVar[type[StrategySettings]] = StepSearchSettings
    settings: StepSearchSettings

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        n, m = self.config.budget, self.settings.beam_width
        if m < 1:
            raise StrategyError(f"--beam-width must be at least 1 (got {m})")
        if n < m or n % m:
            options = sorted({max(n // m, 1) * m, (n // m + 1) * m})
            raise StrategyError(
                f"strategy {self.name!r} needs --budget to be a multiple of --beam-width, at least the width "
                f"(got N={n}, M={m}): use --budget {' or '.join(map(str, options))}, or change --beam-width"
            )
        if self.config.max_depth < 1:
            raise StrategyError(f"--max-depth must be at least 1 (got {self.config.max_depth})")
        if self.settings.lookahead < 0:
            raise StrategyError(f"--lookahead must be 0 or more (got {self.settings.lookahead})")

    def budget_limit(self) -> int:
        return self.config.budget * self.config.max_depth * (1 + self.settings.lookahead)

    async def evaluate(self, ctx: SearchContext, children: Sequence[int]) -> dict[int, float]:
        """Score ``children`` (through their lookahead tips where --lookahead > 0) in one call;
        returns each child's ranking score."""
        tips = await self._lookahead(ctx, children)
        to_score = list(dict.fromkeys(tips[c] for c in children))
        if to_score:
            await ctx.score(to_score)
        return {c: _score_or_floor(ctx.node_score(tips[c])) for c in children}

    async def _lookahead(self, ctx: SearchContext, children: Sequence[int]) -> dict[int, int]:
        tips = {c: c for c in children}
        for _ in range(self.settings.lookahead):
            open_children = [c for c in children if not ctx.tree[tips[c]]["terminal"]]
            if not open_children:
                break
            new = await ctx.expand([tips[c] for c in open_children], 1, temperature=0.0)
            for child, kids in zip(open_children, new, strict=True):
                for kid in kids:
                    ctx.tree[kid]["lookahead"] = True
                    tips[child] = kid
        return tips


def _score_or_floor(value: float | None) -> float:
    return float("-inf") if value is None else value


def rank(nodes: Sequence[int], scores: dict[int, float]) -> list[int]:
    """Best first; ties go to the lower node id (the one generated first)."""
    return sorted(nodes, key=lambda n: (-scores[n], n))


def share(total: int, parts: int) -> list[int]:
    """``total`` expansions spread as evenly as possible over ``parts`` prefixes, earlier first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def unique_by_text(ctx: SearchContext, nodes: Sequence[int]) -> list[int]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for n in nodes:
        steps = ctx.tree.steps(n)
        if steps not in seen:
            seen.add(steps)
            out.append(n)
    return out


class BeamSearch(_StepSearch):
    name: ClassVar[str] = "beam"
    Settings: ClassVar[type[StrategySettings]] = BeamSettings
    settings: BeamSettings

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        completed: list[int] = []
        scores: dict[int, float] = {}
        reason = None
        try:
            await self._rounds(ctx, completed, scores)
        except BudgetExhausted as err:  # the time limit: return the best so far
            reason = str(err)
        best = rank(completed, scores)[: self.config.budget]
        result = await ctx.finish(ctx.candidates(best) if best else ctx.candidates())
        result.cut_reason = reason
        return result

    async def _rounds(self, ctx: SearchContext, completed: list[int], scores: dict[int, float]) -> None:
        n, keep = self.config.budget, self.config.budget // self.settings.beam_width
        live, counts = [ROOT], [n]
        while live and len(completed) < n:
            children = [c for kids in await ctx.expand(live, counts) for c in kids]
            for node in live:  # a prefix with no room left was marked finished by the context
                if ctx.tree[node]["terminal"] and node != ROOT:
                    completed.append(node)
            scores.update(await self.evaluate(ctx, children))
            completed.extend(c for c in children if ctx.tree[c]["terminal"])
            open_children = [c for c in children if not ctx.tree[c]["terminal"]]
            if self.settings.filter_duplicates:
                open_children = unique_by_text(ctx, open_children)
            live = rank(open_children, scores)[:keep]
            counts = share(n, len(live)) if live else []


class DVTS(_StepSearch):
    name: ClassVar[str] = "dvts"
    # N/M independent subtrees of width M: budget n keeps the first n/M of them
    subsample_unit: ClassVar[str | None] = "subtrees"

    def budget_per_group(self) -> int:
        return self.settings.beam_width

    def subsample_groups(self, tree: SearchTree, candidates: Sequence[Candidate]) -> list[list[int]]:
        """One group per subtree: the root's M children tagged with its index (``subtree``) and every
        node below them, in id order. A root child without the tag is a subtree of its own."""
        tops: dict[Any, list[int]] = {}
        for top in tree.children(ROOT):
            tag = tree[top].get("subtree")
            tops.setdefault(("tag", tag) if tag is not None else ("node", top), []).append(top)
        return [sorted(set(roots).union(*(nx.descendants(tree.graph, top) for top in roots)))
                for roots in tops.values()]

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        subtrees = self.config.budget // self.settings.beam_width
        tips = [ROOT] * subtrees
        last_children: list[list[int]] = [[] for _ in range(subtrees)]
        reason = None
        try:
            await self._rounds(ctx, tips, last_children)
        except BudgetExhausted as err:
            reason = str(err)
        finished = [n for s in range(subtrees) for n in dict.fromkeys([*last_children[s], tips[s]])
                    if n != ROOT and ctx.tree[n]["terminal"]]
        result = await ctx.finish(ctx.candidates(finished) if finished else ctx.candidates())
        result.cut_reason = reason
        return result

    async def _rounds(self, ctx: SearchContext, tips: list[int], last_children: list[list[int]]) -> None:
        width = self.settings.beam_width
        alive = list(range(len(tips)))  # every subtree starts at the root
        while alive:
            new = await ctx.expand([tips[s] for s in alive], width)
            children = [c for kids in new for c in kids]
            for s, kids in zip(alive, new, strict=True):
                for kid in kids:
                    ctx.tree[kid]["subtree"] = s
            scores = await self.evaluate(ctx, children)
            for s, kids in zip(alive, new, strict=True):
                if kids:  # no kids: the tip had no room left and is now marked finished
                    last_children[s] = kids
                    tips[s] = rank(kids, scores)[0]
            alive = [s for s in alive if tips[s] != ROOT and not ctx.tree[tips[s]]["terminal"]]
