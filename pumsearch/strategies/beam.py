"""Step-level beam search and DVTS, with the semantics of huggingface/search-and-learn
(src/sal/search/beam_search.py and diverse_verifier_tree_search.py); docs/strategies.md has the
table of where they match and where pumsearch chooses differently, tests/test_reference_sal.py the
cases, each citing the reference's lines.

Beam search, budget N and beam width M: the root is expanded N times by one step; every round
the new prefixes are scored, the finished ones (end of sequence, a \\boxed{} answer with
--stop-at-boxed, a token cap) are set aside in completion order, and of the open ones the best N/M
are kept in the order they were generated. The next round's N expansions go round-robin over the
kept prefixes (M each; when fewer remain open, the spare ones go to the earliest), so children
come in search-and-learn's list order. The search runs until no prefix is open or --max-depth
rounds have run; the round at the depth cap samples each prefix to the end of its solution
(``last_round_to_end``). It returns the first N prefixes to finish (``sort_completed``: the best N
by score), and --select picks the answer among them (best by default). ``stop_when_n_finished``
ends the search as soon as N have finished: the same answer at less compute while
``sort_completed`` is off.

DVTS: N/M independent subtrees; each round every subtree expands its one prefix M times and keeps
the best child. A subtree stops when the child it keeps is finished. The candidates are all M
children of each subtree's last round, finished or not (N), each with the score it was ranked by.

Both issue ONE ``ctx.expand`` and ONE ``ctx.score`` per round for all their prefixes, so the
engine coalesces a round of K problems into one backend call. With --lookahead L, each open child
is first extended L more steps greedily (temperature 0, one expand per lookahead step) and ranked
by the score of its lookahead tip; the lookahead nodes stay in the tree, marked ``lookahead``.

Budget unit: step expansions (a roll-out to the end counts as one). A round costs at most
N x (1 + L) of them and there are at most --max-depth rounds, so the limit is
N x max_depth x (1 + L) and never binds before the depth cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

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
    last_round_to_end: bool = field(default=True, metadata={
        "help": "The round at --max-depth samples each prefix to the end of its solution."})


@dataclass(frozen=True)
class BeamSettings(StepSearchSettings):
    filter_duplicates: bool = field(default=False, metadata={"help": "Drop prefixes with identical text."})
    sort_completed: bool = field(default=False, metadata={
        "help": "Return the best N finished beams by score, not the first N to finish."})
    stop_when_n_finished: bool = field(default=False, metadata={
        "help": "Stop once N beams have finished (the same answer at less compute, unless sort-completed)."})


class _StepSearch(Strategy):
    """What beam search and DVTS share: validation, budget, rounds, lookahead, ranking."""

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

    def rounds(self) -> range:
        """Round r (1-based) makes the prefixes of depth r: at most --max-depth rounds."""
        return range(1, self.config.max_depth + 1)

    def expansion_mode(self, round_: int) -> Literal["step", "end"]:
        """search-and-learn's last iteration samples to the end, without a stop string (its
        num_iterations is our --max-depth); otherwise the depth cap ends the prefix there."""
        last = round_ == self.config.max_depth
        return "end" if last and self.settings.last_round_to_end else "step"

    async def evaluate(self, ctx: SearchContext, children: Sequence[int]) -> dict[int, float]:
        """Score ``children`` (through their lookahead tips where --lookahead > 0) in one call;
        returns each child's ranking score (-inf where unscored)."""
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


def _floor_to_none(value: float) -> float | None:
    """A ranking score back as a candidate's score: the floor of an unscored prefix is None."""
    return None if value == float("-inf") else value


def rank(nodes: Sequence[int], scores: dict[int, float]) -> list[int]:
    """Best first; ties keep the order of ``nodes`` (the one generated first; a stable sort, as
    search-and-learn's sorted(..., reverse=True) and np.argmax's first maximum)."""
    return sorted(nodes, key=lambda n: -scores[n])


def keep_best(nodes: Sequence[int], scores: dict[int, float], k: int) -> list[int]:
    """The best ``k`` of ``nodes``, in the order of ``nodes`` (search-and-learn marks the others
    pruned and keeps its list order, beam_search.py:167-174)."""
    best = set(rank(nodes, scores)[:k])
    return [n for n in nodes if n in best]


def share(total: int, parts: int) -> list[int]:
    """``total`` expansions spread as evenly as possible over ``parts`` prefixes, earlier first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def round_robin(groups: Sequence[Sequence[int]]) -> list[int]:
    """The children of prefixes expanded ``share`` times each, in search-and-learn's list order:
    it expands the kept list repeated cyclically, (K * (N // k + 1))[:N] (beam_search.py:71-84), so
    every prefix's q-th child comes before any (q+1)-th."""
    depth = max((len(g) for g in groups), default=0)
    return [g[q] for q in range(depth) for g in groups if q < len(g)]


def _below(tree: SearchTree, top: int, node: int) -> list[int]:
    """The nodes from just below ``top`` down to ``node``, its descendant."""
    path = tree.path(node)
    return path if top == ROOT else path[path.index(top) + 1:]


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
        completed: list[int] = []  # in completion order
        scores: dict[int, float] = {}
        reason = None
        try:
            await self._rounds(ctx, completed, scores)
        except BudgetExhausted as err:  # the time limit: return what finished so far
            reason = str(err)
        returned = self.returned(completed, scores)
        result = await ctx.finish(ctx.candidates(returned) if returned else ctx.candidates())
        result.cut_reason = reason
        return result

    def returned(self, completed: Sequence[int], scores: dict[int, float]) -> list[int]:
        """search-and-learn's beam_search.py:176-184: the first N to finish, or the best N."""
        n = self.config.budget
        return rank(completed, scores)[:n] if self.settings.sort_completed else list(completed[:n])

    async def _rounds(self, ctx: SearchContext, completed: list[int], scores: dict[int, float]) -> None:
        n, keep = self.config.budget, self.config.budget // self.settings.beam_width
        live = [ROOT]  # the kept prefixes, in list order
        for round_ in self.rounds():
            if not live or (self.settings.stop_when_n_finished and len(completed) >= n):
                return
            new = await ctx.expand(live, share(n, len(live)), until=self.expansion_mode(round_))
            # a prefix with no room left under --max-tokens was marked finished by the context
            completed.extend(p for p, kids in zip(live, new, strict=True) if not kids and p != ROOT)
            children = round_robin(new)
            scores.update(await self.evaluate(ctx, children))
            completed.extend(c for c in children if ctx.tree[c]["terminal"])
            open_children = [c for c in children if not ctx.tree[c]["terminal"]]
            if self.settings.filter_duplicates:
                open_children = unique_by_text(ctx, open_children)
            live = keep_best(open_children, scores, keep)


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
        scores: dict[int, float] = {}
        reason = None
        try:
            await self._rounds(ctx, tips, last_children, scores)
        except BudgetExhausted as err:
            reason = str(err)
        # search-and-learn returns every child of each subtree's last expansion, finished or not,
        # with the score it was ranked by (diverse_verifier_tree_search.py:139-157); a search cut
        # short returns only what finished, as every strategy does
        returned = [c for kids in last_children for c in kids if reason is None or ctx.tree[c]["terminal"]]
        candidates = [Candidate(c, ctx.tree[c]["answer"], _floor_to_none(scores[c])) for c in returned]
        result = await ctx.finish(candidates if candidates else ctx.candidates())
        result.cut_reason = reason
        return result

    async def _rounds(self, ctx: SearchContext, tips: list[int], last_children: list[list[int]],
                      scores: dict[int, float]) -> None:
        width = self.settings.beam_width
        alive = list(range(len(tips)))  # every subtree starts at the root
        for round_ in self.rounds():
            if not alive:
                return
            new = await ctx.expand([tips[s] for s in alive], width, until=self.expansion_mode(round_))
            children = [c for kids in new for c in kids]
            for s, kids in zip(alive, new, strict=True):
                for kid in kids:  # a roll-out to the end is a chain of steps: tag all of it
                    for node in _below(ctx.tree, tips[s], kid):
                        ctx.tree[node]["subtree"] = s
            scores.update(await self.evaluate(ctx, children))
            for s, kids in zip(alive, new, strict=True):
                if kids:  # no kids: the tip had no room left and is now marked finished
                    last_children[s] = kids
                    tips[s] = rank(kids, scores)[0]
            alive = [s for s in alive if tips[s] != ROOT and not ctx.tree[tips[s]]["terminal"]]
