"""Adaptive Best-of-N: sample in waves and stop once the vote is settled; --budget is then a cap.

``bon`` names :class:`AdaptiveBestOfN`: plain Best-of-N unless ``adaptive`` is set. Adaptively,
the search draws ``wave_size`` complete solutions per wave (one backend call per wave, coalesced
across problems like every round), sorts their answers into vote classes as the final vote does
(math-verify equivalence) and asks the stop rule whether the vote is settled:

- ``beta`` (Adaptive-Consistency, Aggarwal et al. 2023; Pranjal2041/AdaptiveConsistency
  adaptive_consistency/stopping_criterias.py:17-53): with a and b the votes of the two largest
  classes, stop when P(p > 1/2) >= threshold for p ~ Beta(a + 1, b + 1), the posterior that the
  leader is the more likely of the two (default threshold 0.95). For whole a and b this is
  P(Binomial(a + b + 1, 1/2) <= a), computed exactly.
- ``supermajority`` (ibid. MajorityStoppingCriteria, stopping_criterias.py:98-117): stop when the
  largest class holds at least ``threshold`` of all solutions drawn, two or more (default 0.8).
- ``consensus`` (DeepConf, Fu et al. 2025, "adaptive sampling"): stop when the leader's share of
  the vote, beta = V(leader) / sum V, reaches ``threshold`` (default 0.95). V sums each voter's
  weight: its score, normalised as ``--select weighted`` normalises it, when the run has a scorer
  (DeepConf weighs by the trace's confidence: a confidence scorer plugs in here as the scorer),
  else 1.

The rule is checked after every wave, the first included, and looks neither at the cap nor at
``--select``, so a run that stopped at n solutions is also the run at any cap above n, and a run
at cap N read at n is the run at cap n, for every selection: read-off budgets work
(``stopped_early``). The answer is picked by ``--select`` among the solutions drawn; by default
by the vote the rule read: weighted for ``consensus`` with a scorer, else majority. The counter
``saved_tokens`` estimates what stopping saved: the undrawn solutions times the mean tokens of the
drawn ones. The root of the tree records the rule's verdict under ``adaptive``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.selection import Candidate, normalise_per_problem, vote_classes
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import StrategyError, StrategySettings
from pumsearch.strategies.best_of_n import BestOfN, BestOfNSettings

StopRule = Literal["beta", "supermajority", "consensus"]
STOP_RULES: tuple[str, ...] = ("beta", "supermajority", "consensus")
DEFAULT_THRESHOLDS: dict[str, float] = {"beta": 0.95, "supermajority": 0.8, "consensus": 0.95}


@dataclass(frozen=True)
class AdaptiveBestOfNSettings(BestOfNSettings):
    """Best-of-N's settings and its adaptive option's."""

    adaptive: bool = field(default=False, metadata={
        "help": "Sample in waves and stop once the vote is settled; --budget is then a cap."})
    wave_size: int = field(default=4, metadata={"help": "Solutions per wave (adaptive)."})
    stop_rule: StopRule = field(default="beta", metadata={
        "help": "When the vote is settled (adaptive): beta, supermajority or consensus."})
    stop_threshold: float | None = field(default=None, metadata={
        "help": "The stop rule's threshold in (0, 1] (default: beta 0.95, supermajority 0.8, consensus 0.95)."})


@dataclass(frozen=True)
class Verdict:
    """A stop rule's reading of the vote: its statistic and whether it reached the threshold."""

    settled: bool
    statistic: float


def class_totals(candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> list[float]:
    """Each vote class's total (1 per voter, or its weight), classes in order of first appearance;
    candidates without an answer cast no vote."""
    totals: dict[int, float] = {}
    for i, cls in enumerate(vote_classes(candidates)):
        if cls is not None:
            totals[cls] = totals.get(cls, 0.0) + (1.0 if weights is None else weights[i])
    return list(totals.values())


def leader_beats_runner_up(a: int, b: int) -> float:
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1): P(Binomial(a + b + 1, 1/2) <= a), exactly."""
    n = a + b + 1
    return sum(math.comb(n, k) for k in range(a + 1)) / 2**n


def beta_rule(totals: Sequence[float], drawn: int, threshold: float) -> Verdict:
    top = [*sorted((int(t) for t in totals), reverse=True), 0, 0]
    prob = leader_beats_runner_up(top[0], top[1])
    return Verdict(prob >= threshold, prob)


def supermajority_rule(totals: Sequence[float], drawn: int, threshold: float) -> Verdict:
    share = max(totals, default=0.0) / drawn if drawn else 0.0
    return Verdict(drawn > 1 and share >= threshold, share)  # one solution is no majority (AC 113)


def consensus_rule(totals: Sequence[float], drawn: int, threshold: float) -> Verdict:
    total = sum(totals)
    share = max(totals) / total if total > 0 else 0.0
    return Verdict(share >= threshold, share)


RULES = {"beta": beta_rule, "supermajority": supermajority_rule, "consensus": consensus_rule}


class AdaptiveBestOfN(BestOfN):
    """Best-of-N, with the adaptive option (what ``bon`` names)."""

    Settings: ClassVar[type[StrategySettings]] = AdaptiveBestOfNSettings
    settings: AdaptiveBestOfNSettings

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        s = self.settings
        if s.wave_size < 1:
            raise StrategyError(f"--wave-size must be at least 1 (got {s.wave_size})")
        if s.stop_rule not in STOP_RULES:
            raise StrategyError(f"unknown --stop-rule {s.stop_rule!r}: use {', '.join(STOP_RULES)}")
        if s.stop_threshold is not None and not 0 < s.stop_threshold <= 1:
            raise StrategyError(f"--stop-threshold must be in (0, 1] (got {s.stop_threshold})")

    @property
    def threshold(self) -> float:
        s = self.settings
        return DEFAULT_THRESHOLDS[s.stop_rule] if s.stop_threshold is None else s.stop_threshold

    def stopped_early(self, result: SearchResult) -> bool:
        verdict = result.tree[ROOT].get("adaptive") or {}
        return bool(verdict.get("settled")) and not result.cut_short

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        if not self.settings.adaptive:
            return await super().search(problem, ctx)
        cap = self.config.budget
        weighs = self.settings.stop_rule == "consensus" and ctx.has_scorer
        select = self.config.select or ("weighted" if weighs else "majority")  # the vote the rule reads
        leaves: list[int] = []
        verdict = Verdict(False, 0.0)
        while len(leaves) < cap and not verdict.settled:
            (wave,) = await ctx.expand([ROOT], min(self.settings.wave_size, cap - len(leaves)), until="end")
            if ctx.has_scorer:
                await ctx.score(wave)
            leaves.extend(wave)
            candidates = ctx.candidates(leaves)
            await ctx.classify(candidates)
            verdict = self.verdict(candidates, ctx, weighs)
        self.record(ctx, leaves, verdict)
        return await ctx.finish(ctx.candidates(leaves), select, keep=self.settings.keep)

    def verdict(self, candidates: Sequence[Candidate], ctx: SearchContext, weighs: bool) -> Verdict:
        weights = vote_weights(candidates, ctx) if weighs else None
        return RULES[self.settings.stop_rule](class_totals(candidates, weights), len(candidates), self.threshold)

    def record(self, ctx: SearchContext, leaves: Sequence[int], verdict: Verdict) -> None:
        """The verdict on the root, and the estimated tokens the stop saved in the counters."""
        drawn = len(leaves)
        undrawn = self.config.budget - drawn
        tokens = sum(ctx.tree[n]["num_tokens"] for leaf in leaves for n in ctx.tree.path(leaf))
        ctx.counters.saved_tokens = round(undrawn * tokens / drawn) if drawn else 0
        ctx.tree[ROOT]["adaptive"] = {"rule": self.settings.stop_rule, "threshold": self.threshold,
                                      "statistic": round(verdict.statistic, 6), "settled": verdict.settled,
                                      "solutions": drawn, "undrawn": undrawn}


def vote_weights(candidates: Sequence[Candidate], ctx: SearchContext) -> list[float]:
    """Each candidate's weight in a weighted vote: its score normalised as ``--select weighted``
    normalises it (unscored: 0)."""
    scored = [i for i, c in enumerate(candidates) if c.score is not None]
    values = normalise_per_problem([float(candidates[i].score or 0.0) for i in scored], ctx.scorer_value_kind)
    weights = [0.0] * len(candidates)
    for i, w in zip(scored, values, strict=True):
        weights[i] = w
    return weights


__all__ = ["AdaptiveBestOfN", "AdaptiveBestOfNSettings", "Verdict", "beta_rule", "class_totals", "consensus_rule",
           "leader_beats_runner_up", "supermajority_rule"]
