"""Particle filtering and particle Gibbs over reasoning steps (Puri et al. 2025, "A Probabilistic
Inference Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods").

References: the paper's code (probabilistic-inference-scaling @ f75d461,
src/sal/search/particle_gibbs_batch.py) and its_hub (@ e4d00d1, its_hub/algorithms/particle_gibbs.py).
docs/strategies.md lists, row by row, where this follows which and where it differs.

A particle is a pointer to a node of the tree (its prefix). Budget N: N particles, all started at
the root. Every round each open particle takes one step (ONE ``ctx.expand`` for all of them:
particles on the same node are one request of k samples) and the new prefixes are scored (ONE
``ctx.score``). Then the open particles are resampled among themselves in proportion to

    w_i = softmax(logit(r_i) / T)  =  odds_i^(1/T) / sum_j odds_j^(1/T),  odds = r / (1 - r),

r_i the prefix's aggregated score (``--aggregate``; r clipped to [eps, 1 - eps], eps the float64
epsilon, as the paper's code). Scorers with unbounded values (the PUM's) give log-weights
score / T directly. Resampling draws, by inverse CDF on uniforms from ``ctx.rng``:

- multinomial: one uniform per draw (both references);
- systematic: one uniform U, draws at (U + m) / M (each particle kept floor or ceil of M w_i times).

With ``ess_threshold`` the particles are resampled only when the effective sample size
1 / sum w_i^2 falls below that fraction of them; otherwise each keeps its weight, and the next
round's potentials multiply onto it (textbook sequential Monte Carlo; with resampling every
round this is exactly the references' rule). Tempered resampling (``tempering_start``): T falls
linearly from ``tempering_start`` to ``particle_temperature`` over ``tempering_steps`` rounds,
as the paper's code schedules it (round r uses T(r), r counted from 1). A finished particle is
kept aside and is no longer resampled (the paper's code by default); with ``resample_finished`` it
stays in the pool and can be copied or lost (its_hub, and the paper's runs). No resampling follows
the last step.

Particle Gibbs (``particle_iterations`` I > 1): N / I particles per iteration. After an iteration,
``reference_particles`` R of its final particles are drawn by weight; the next iteration runs
N / I - R fresh particles from the root, and at every round the references' prefixes of the same
length join the pool (the weight they had at that depth), so a free particle can continue from a
reference's prefix. The final particles of the last iteration (free ones and references) are the
candidates; ``--select`` picks among them (default: the best-scored; weighted: the sum of
normalised scores per answer class).

Tree attributes (particle trees): ``iteration`` (the Gibbs iteration that made the node),
``particle_weight`` (its normalised weight in the last resampling pool it was in) and ``copies``
(how many particles were drawn from it there; 0: resampled away, the node stays in the tree).

Budget unit: step expansions; a run costs at most N x max_depth of them (the particles' steps),
so N keeps its meaning: N particles, about the tokens of Best-of-N at N.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from pumsearch.search.budget import BudgetExhausted
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings

EPS = float(np.finfo(float).eps)  # the paper's code clips rewards to [eps, 1 - eps] before the logit
RESAMPLING = ("multinomial", "systematic")


@dataclass(frozen=True)
class ParticleSettings(StrategySettings):
    particle_temperature: float = field(default=1.0, metadata={
        "help": "T: particles are resampled by softmax(logit(score) / T)."})
    resampling: Literal["multinomial", "systematic"] = field(default="multinomial", metadata={
        "help": "Resampling scheme: multinomial or systematic."})
    ess_threshold: float | None = field(default=None, metadata={
        "help": "Resample only when the effective sample size falls below this fraction of the particles, "
                "in (0, 1] (unset: every step)."})
    tempering_start: float | None = field(default=None, metadata={
        "help": "Tempered resampling: T starts here and falls linearly to --particle-temperature."})
    tempering_steps: int = field(default=4, metadata={
        "help": "Resampling rounds over which tempered T reaches --particle-temperature."})
    resample_finished: bool = field(default=False, metadata={
        "help": "Finished particles stay in the resampling pool (its_hub) instead of being kept aside."})
    particle_iterations: int = field(default=1, metadata={
        "help": "Particle Gibbs iterations (1: particle filtering); --budget is shared among them."})
    reference_particles: int = field(default=1, metadata={
        "help": "Particle Gibbs: reference particles carried into the next iteration."})


# -- the arithmetic of weights and resampling -------------------------------------------------------
def log_potential(score: float | None, value_kind: str, temperature: float) -> float:
    """logit(score) / T for a probability score (clipped to [eps, 1 - eps]), score / T for an
    unbounded one; a missing score weighs nothing."""
    if score is None:
        return -math.inf
    if value_kind == "probability":
        r = min(max(score, EPS), 1 - EPS)
        return (math.log(r) - math.log1p(-r)) / temperature
    return score / temperature


def normalised_weights(log_weights: Sequence[float]) -> list[float]:
    """softmax; all -inf (nothing scored): uniform."""
    top = max(log_weights)
    if top == -math.inf:
        return [1.0 / len(log_weights)] * len(log_weights)
    exps = [math.exp(lw - top) for lw in log_weights]
    total = math.fsum(exps)
    return [e / total for e in exps]


def effective_sample_size(weights: Sequence[float]) -> float:
    return 1.0 / math.fsum(w * w for w in weights)


def inverse_cdf(weights: Sequence[float], uniforms: Sequence[float]) -> list[int]:
    """For each u, the first index j whose cumulative weight C_j >= u."""
    cumulative = np.cumsum(weights)
    cumulative[-1] = 1.0  # float round-off must not push a u past the last particle
    return [int(j) for j in np.searchsorted(cumulative, uniforms, side="left")]


def resample(weights: Sequence[float], k: int, scheme: str, rng: np.random.Generator) -> list[int]:
    """k indices drawn by ``scheme`` (multinomial: k uniforms; systematic: one, spread by 1/k)."""
    uniforms = (rng.random() + np.arange(k)) / k if scheme == "systematic" else rng.random(k)
    return inverse_cdf(weights, uniforms)


def tempered_temperature(round_: int, start: float, end: float, steps: int) -> float:
    """The paper's linear schedule (particle_gibbs_batch.py:253-279): start - (start - end) * r /
    (steps - 1) for r < steps, then end; round r counts resampling rounds from 1."""
    if round_ >= steps or steps <= 1:
        return end
    return start - (start - end) * round_ / (steps - 1)


# -- the strategy ---------------------------------------------------------------------------------
class ParticleFiltering(Strategy):
    name: ClassVar[str] = "particles"
    requires_scorer: ClassVar[bool] = True  # with no --scorer, the default rule decides (docs/scorers.md)
    budget_unit: ClassVar[str] = "step expansions"
    Settings: ClassVar[type[StrategySettings]] = ParticleSettings
    settings: ParticleSettings
    node_defaults: ClassVar[Mapping[str, Any]] = types.MappingProxyType(
        {"iteration": None, "particle_weight": None, "copies": None})

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        s, n = self.settings, self.config.budget
        positive = {"--particle-temperature": s.particle_temperature, "--tempering-start": s.tempering_start,
                    "--ess-threshold": s.ess_threshold}
        for flag, value in positive.items():
            if value is not None and not value > 0:
                raise StrategyError(f"{flag} must be above 0 (got {value})")
        if s.ess_threshold is not None and s.ess_threshold > 1:
            raise StrategyError(f"--ess-threshold is a fraction of the particles: use a value in (0, 1] "
                                f"(got {s.ess_threshold})")
        if s.resampling not in RESAMPLING:
            raise StrategyError(f"unknown --resampling {s.resampling!r}: use {' or '.join(RESAMPLING)}")
        counts = {"--tempering-steps": s.tempering_steps, "--particle-iterations": s.particle_iterations,
                  "--max-depth": self.config.max_depth}
        for flag, value in counts.items():
            if value < 1:
                raise StrategyError(f"{flag} must be at least 1 (got {value})")
        if s.particle_iterations > 1:
            self._validate_gibbs(n, s.particle_iterations, s.reference_particles)

    @staticmethod
    def _validate_gibbs(n: int, iterations: int, references: int) -> None:
        if n % iterations:
            raise StrategyError(f"particle Gibbs needs --budget to be a multiple of --particle-iterations "
                                f"(got N={n}, {iterations} iterations)")
        if not 1 <= references < n // iterations:
            raise StrategyError(f"--reference-particles must be at least 1 and below the {n // iterations} "
                                f"particles of an iteration (got {references})")

    def budget_limit(self) -> int:
        return self.config.budget * self.config.max_depth

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        run = _ParticleRun(ctx, self.config, self.settings)
        reason = None
        try:
            await run.iterate()
        except BudgetExhausted as err:  # the time limit: what finished so far
            reason = str(err)
        finals = run.final_nodes()
        result = await ctx.finish(ctx.candidates(finals) if finals else ctx.candidates())
        result.cut_reason = reason
        return result


@dataclass
class _Particle:
    """A particle: its node, and its log-weight carried over from rounds it was not resampled in."""

    node: int
    carried: float = 0.0


@dataclass
class _Reference:
    """A particle Gibbs reference: the path of a previous iteration's particle."""

    path: list[int]
    carried: float = 0.0

    def node_at(self, depth: int) -> int:
        return self.path[min(depth, len(self.path)) - 1]


class _ParticleRun:
    """One problem's particle filter (the Strategy object is shared by all problems of a run)."""

    def __init__(self, ctx: SearchContext, config: SearchConfig, settings: ParticleSettings) -> None:
        self.ctx = ctx
        self.tree = ctx.tree
        self.settings = settings
        self.per_iteration = config.budget // settings.particle_iterations
        self.particles: list[_Particle] = []
        self.references: list[_Reference] = []

    def is_open(self, node: int) -> bool:
        return not self.tree[node]["terminal"]

    def temperature(self, round_: int) -> float:
        s = self.settings
        if s.tempering_start is None:
            return s.particle_temperature
        return tempered_temperature(round_, s.tempering_start, s.particle_temperature, s.tempering_steps)

    def potential(self, node: int, temperature: float) -> float:
        return log_potential(self.ctx.node_score(node), self.ctx.scorer_value_kind, temperature)

    def final_nodes(self) -> list[int]:
        """The last iteration's particles: free ones, then references (the candidates)."""
        return [p.node for p in self.particles if p.node != ROOT] + [r.path[-1] for r in self.references]

    async def iterate(self) -> None:
        for iteration in range(self.settings.particle_iterations):
            if iteration:
                self.references = self.draw_references()
            self.particles = [_Particle(ROOT) for _ in range(self.per_iteration - len(self.references))]
            await self.advance(iteration)
            round_ = 1
            while any(self.is_open(p.node) for p in self.particles):
                self.resample_round(round_)
                await self.advance(iteration)
                round_ += 1

    async def advance(self, iteration: int) -> None:
        """Every open particle takes one step: one expand for all (a node held by k particles is
        one request of k samples), one score call for the new prefixes."""
        holders: dict[int, list[_Particle]] = {}
        for p in self.particles:
            if self.is_open(p.node):
                holders.setdefault(p.node, []).append(p)
        if not holders:
            return
        nodes = list(holders)
        new = await self.ctx.expand(nodes, [len(holders[n]) for n in nodes])
        children = []
        for node, kids in zip(nodes, new, strict=True):
            if not kids:  # the node had no room left under --max-tokens: the context marked it finished
                continue
            for particle, kid in zip(holders[node], kids, strict=True):
                particle.node = kid
                self.tree[kid]["iteration"] = iteration
                children.append(kid)
        if children:
            await self.ctx.score(children)

    def pool(self, round_: int) -> list[_Particle | _Reference]:
        """Who takes part in this round's resampling: the open particles (all, with
        resample_finished) and the references' prefixes of the same length."""
        members: list[_Particle | _Reference] = [
            p for p in self.particles if self.settings.resample_finished or self.is_open(p.node)]
        for ref in self.references:
            if self.settings.resample_finished or round_ < len(ref.path):
                members.append(ref)
        return members

    def member_node(self, member: _Particle | _Reference, round_: int) -> int:
        return member.node_at(round_) if isinstance(member, _Reference) else member.node

    def resample_round(self, round_: int) -> None:
        members = self.pool(round_)
        slots = [i for i, p in enumerate(self.particles) if self.settings.resample_finished or self.is_open(p.node)]
        temperature = self.temperature(round_)
        nodes = [self.member_node(m, round_) for m in members]
        log_weights = [m.carried + self.potential(n, temperature) for m, n in zip(members, nodes, strict=True)]
        weights = normalised_weights(log_weights)
        for node in set(nodes):
            self.tree[node]["particle_weight"] = 0.0
        for node, w in zip(nodes, weights, strict=True):
            self.tree[node]["particle_weight"] += w
        threshold = self.settings.ess_threshold
        if threshold is not None and effective_sample_size(weights) >= threshold * len(members):
            for member, lw in zip(members, log_weights, strict=True):
                member.carried = lw
            return
        drawn = resample(weights, len(slots), self.settings.resampling, self.ctx.rng)
        for node in set(nodes):
            self.tree[node]["copies"] = 0
        for j in drawn:
            self.tree[nodes[j]]["copies"] += 1
        for slot, j in zip(slots, drawn, strict=True):
            self.particles[slot] = _Particle(nodes[j])
        for ref in self.references:
            ref.carried = 0.0

    def draw_references(self) -> list[_Reference]:
        """R of the last iteration's final particles, drawn by their final weights."""
        finals = self.final_nodes()
        temperature = self.settings.particle_temperature
        weights = normalised_weights([self.potential(n, temperature) for n in finals])
        drawn = resample(weights, self.settings.reference_particles, self.settings.resampling, self.ctx.rng)
        return [_Reference(self.tree.path(finals[j])) for j in drawn]


__all__ = ["ParticleFiltering", "ParticleSettings", "effective_sample_size", "inverse_cdf", "log_potential",
           "normalised_weights", "resample", "tempered_temperature"]
