"""Particle filtering and particle Gibbs: the weights and resampling against hand-computed values, and
whole searches on the scripted generator whose resampling draws are recomputed from the problem's
seeded random stream.

References (line numbers at these commits):
- PIS: probabilistic-inference-scaling/probabilistic-inference-scaling @ f75d461, the paper's code,
  src/sal/search/particle_gibbs_batch.py
- HUB: Red-Hat-AI-Innovation-Team/its_hub @ e4d00d1, its_hub/algorithms/particle_gibbs.py
- PCL: nchopin/particles, particles/resampling.py (inverse CDF, systematic, ESS)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from pumsearch.api import make_strategy
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.search.context import problem_seed
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies import StrategyError, search_config
from pumsearch.strategies.particles import (
    effective_sample_size,
    inverse_cdf,
    log_potential,
    normalised_weights,
    resample,
    tempered_temperature,
)
from tests.helpers_search import depth_policy, hashed_value, problems, run, scripted_scorer


def weights_of(rewards: list[float], temperature: float = 1.0) -> list[float]:
    return normalised_weights([log_potential(r, "probability", temperature) for r in rewards])


# -- weights: softmax of the logit of the reward ---------------------------------------------------
def test_weights_are_the_softmax_of_the_logit_of_the_reward_over_t() -> None:
    # PIS 49-66 (inverse_sigmoid) and 352-364 (softmax(logits / softmax_temp)); HUB 52-62 and 218 (T = 1)
    rewards = [0.9, 0.1, 0.5]  # odds 9, 1/9, 1
    assert weights_of(rewards) == pytest.approx([81 / 91, 1 / 91, 9 / 91])
    assert weights_of(rewards, 0.5) == pytest.approx([6561 / 6643, 1 / 6643, 81 / 6643])  # odds^(1/T)
    raw = [math.exp(r) / sum(math.exp(x) for x in rewards) for r in rewards]
    assert weights_of(rewards) != pytest.approx(raw)  # not a softmax of the reward itself


def test_the_logit_is_clipped_and_unbounded_scores_are_log_weights() -> None:
    eps = float(np.finfo(float).eps)  # PIS 63-64
    assert log_potential(1.0, "probability", 1.0) == pytest.approx(math.log(1 - eps) - math.log(eps))
    assert log_potential(0.0, "probability", 2.0) == pytest.approx((math.log(eps) - math.log(1 - eps)) / 2)
    assert log_potential(3.0, "unbounded", 0.5) == 6.0
    assert log_potential(None, "probability", 1.0) == -math.inf
    assert normalised_weights([-math.inf, -math.inf]) == [0.5, 0.5]


def test_effective_sample_size_is_one_over_the_sum_of_squared_weights() -> None:
    # PCL resampling.py: ESS = 1 / sum W^2. Rewards 0.8, 0.6, 0.2, 0.5 -> odds 4, 1.5, 0.25, 1
    assert effective_sample_size(weights_of([0.8, 0.6, 0.2, 0.5])) == pytest.approx(729 / 309)
    assert effective_sample_size(weights_of([0.8, 0.6, 0.2, 0.5], 0.5)) == pytest.approx(95481 / 67089)
    assert effective_sample_size([0.25] * 4) == pytest.approx(4.0)


# -- resampling: inverse CDF on explicit uniforms ----------------------------------------------------
@pytest.mark.parametrize(("weights", "uniforms", "expected"), [
    ([0.5, 0.3, 0.2], [0.62, 0.05, 0.91, 0.79], [1, 0, 2, 1]),              # multinomial draws
    ([0.5, 0.3, 0.2], [0.075, 0.325, 0.575, 0.825], [0, 0, 1, 2]),          # systematic, U = 0.3
    ([16 / 27, 6 / 27, 1 / 27, 4 / 27], [0.125, 0.375, 0.625, 0.875], [0, 0, 1, 3]),  # U = 0.5
    ([16 / 27, 6 / 27, 1 / 27, 4 / 27], [0.075, 0.325, 0.575, 0.825], [0, 0, 0, 2]),  # U = 0.3
    ([256 / 309, 36 / 309, 1 / 309, 16 / 309], [0.125, 0.375, 0.625, 0.875], [0, 0, 0, 1]),
    ([256 / 309, 36 / 309, 1 / 309, 16 / 309], [0.225, 0.475, 0.725, 0.975], [0, 0, 0, 3]),  # U = 0.9
])
def test_inverse_cdf_picks_the_first_particle_whose_cumulative_weight_reaches_u(weights, uniforms, expected) -> None:
    # PCL resampling.py: A(u) = min{j : C_j >= u}
    assert inverse_cdf(weights, uniforms) == expected


def test_schemes_draw_their_uniforms_from_the_given_stream() -> None:
    weights = [16 / 27, 6 / 27, 1 / 27, 4 / 27]
    u = np.random.default_rng(5).random()
    assert resample(weights, 4, "systematic", np.random.default_rng(5)) == inverse_cdf(weights, (u + np.arange(4)) / 4)
    us = np.random.default_rng(5).random(4)
    assert resample(weights, 4, "multinomial", np.random.default_rng(5)) == inverse_cdf(weights, us)


def test_systematic_keeps_each_particle_floor_or_ceil_of_m_times_its_weight() -> None:
    rng = np.random.default_rng(0)
    weights = weights_of([0.8, 0.6, 0.2, 0.5, 0.7, 0.3])
    for _ in range(200):
        counts = Counter(resample(weights, 6, "systematic", rng))
        for j, w in enumerate(weights):
            assert math.floor(6 * w) <= counts[j] <= math.ceil(6 * w)


def test_tempering_follows_the_papers_linear_schedule() -> None:
    # PIS 253-279: start 2.0, end 0.5 over 4 steps; the first resampling is round 1, so T(0) is unused
    assert [tempered_temperature(r, 2.0, 0.5, 4) for r in (1, 2, 3, 4, 9)] == pytest.approx([1.5, 1.0, 0.5, 0.5, 0.5])
    assert tempered_temperature(1, 2.0, 0.5, 1) == 0.5


# -- whole searches on the scripted generator ---------------------------------------------------------
FIRST = {"s0": 0.8, "s1": 0.6, "s2": 0.2, "s3": 0.5}  # odds 4, 1.5, 0.25, 1: weights 16/27, 6/27, 1/27, 4/27


def scripted_steps(first: list[str], later: Callable[[int, int], str]) -> Callable:
    """Call k at depth 0 writes ``first[k]`` (then a step break); call k at depth d >= 1 writes
    ``later(d, k)``. Calls come in request order, samples in order, so texts are fixed by order."""
    calls: Counter[int] = Counter()

    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        depth = len(done)
        k = calls[depth]
        calls[depth] += 1
        if depth == 0:
            return first[k] + "\n\n"
        return later(depth, k)

    return policy


def finish_at(depth_of_answer: int) -> Callable[[int, int], str]:
    def later(depth: int, k: int) -> str:
        if depth + 1 >= depth_of_answer:
            return f"t{depth}-{k} so \\boxed{{{k % 3}}}"
        return f"t{depth}-{k}\n\n"

    return later


def valued(table: dict[str, float], default: float = 0.5) -> Callable[[tuple[str, ...]], float]:
    return lambda steps: table.get(steps[-1], default) if steps else default


def replayed_stream(seed: int, problem_id: str, requests_before: int) -> np.random.Generator:
    """The problem's random stream after ``requests_before`` generation requests (each draws one seed)."""
    rng = np.random.default_rng(problem_seed(seed, problem_id))
    for _ in range(requests_before):
        rng.integers(0, 2**62)
    return rng


def cumulative(fractions: list[Fraction]) -> list[Fraction]:
    return [sum(fractions[: j + 1], Fraction(0)) for j in range(len(fractions))]


def hand_draws(fractions: list[Fraction], uniforms: np.ndarray) -> list[int]:
    """Inverse CDF with exact cumulative weights."""
    c = cumulative(fractions)
    return [next(j for j, cj in enumerate(c) if cj >= Fraction(float(u))) for u in uniforms]


def depth_nodes(tree: SearchTree, depth: int) -> list[int]:
    return sorted(n for n, a in tree.iter_nodes() if a["depth"] == depth and n != ROOT)


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
def test_first_round_resampling_matches_hand_weights_on_the_seeded_stream(scheme: str) -> None:
    config = search_config(strategy="particles", budget=4, resampling=scheme, seed=7)
    policy = scripted_steps(list(FIRST), finish_at(2))
    (result,), _ = run(problems(1), config, policy=policy, scorer=scripted_scorer(valued(FIRST)))
    tree = result.tree
    firsts = depth_nodes(tree, 1)
    assert [tree[n]["text"] for n in firsts] == ["s0", "s1", "s2", "s3"]
    hand = [Fraction(16, 27), Fraction(6, 27), Fraction(1, 27), Fraction(4, 27)]
    assert [tree[n]["particle_weight"] for n in firsts] == pytest.approx([float(f) for f in hand])
    rng = replayed_stream(7, "p0", requests_before=1)  # round 1 was one request: the root, 4 samples
    uniforms = (rng.random() + np.arange(4)) / 4 if scheme == "systematic" else rng.random(4)
    draws = Counter(hand_draws(hand, uniforms))
    for j, node in enumerate(firsts):
        assert tree[node]["copies"] == draws[j]
        assert len(tree.children(node)) == draws[j]  # one step per copy; a node drawn 0 times stays, pruned
    finals = depth_nodes(tree, 2)
    assert len(finals) == 4 and all(tree[n]["terminal"] for n in finals)
    assert all(tree[n]["copies"] is None for n in finals)  # no resampling after the last step
    assert sorted(c.node for c in result.candidates) == finals
    value = valued(FIRST)
    order = [c.node for c in result.candidates]
    assert result.chosen_node == max(order, key=lambda n: (value(tree.steps(n)), -order.index(n)))


def test_finished_particles_are_kept_aside_and_the_open_ones_resampled_among_themselves() -> None:
    first = ["s0 \\boxed{1}", "s1", "s2", "s3"]  # particle 0 finishes at step 1, with the best score
    scores = {"s0 \\boxed{1}": 0.9, "s1": 0.6, "s2": 0.2, "s3": 0.5}
    policy = scripted_steps(first, finish_at(2))
    config = search_config(strategy="particles", budget=4, seed=3)
    (result,), _ = run(problems(1), config, policy=policy, scorer=scripted_scorer(valued(scores)))
    tree = result.tree
    firsts = depth_nodes(tree, 1)
    assert tree[firsts[0]]["terminal"] and tree[firsts[0]]["particle_weight"] is None  # not in the pool
    pool = firsts[1:]
    hand = [Fraction(6, 11), Fraction(1, 11), Fraction(4, 11)]  # odds 1.5, 0.25, 1 over the open three
    assert [tree[n]["particle_weight"] for n in pool] == pytest.approx([float(f) for f in hand])
    draws = Counter(hand_draws(hand, replayed_stream(3, "p0", 1).random(3)))
    assert [len(tree.children(n)) for n in pool] == [draws[0], draws[1], draws[2]]
    assert sum(draws.values()) == 3
    assert {c.node for c in result.candidates} == {firsts[0], *depth_nodes(tree, 2)}
    assert result.chosen_node == firsts[0]  # the best-scored final particle (0.9)


def test_resample_finished_puts_finished_particles_in_the_pool_where_they_can_be_copied() -> None:
    first = ["s0 \\boxed{1}", "s1", "s2", "s3"]
    scores = {"s0 \\boxed{1}": 0.99, "s1": 0.01, "s2": 0.01, "s3": 0.01}
    config = search_config(strategy="particles", budget=4, seed=3, resample_finished=True)
    policy = scripted_steps(first, finish_at(2))
    (result,), _ = run(problems(1), config, policy=policy, scorer=scripted_scorer(valued(scores)))
    tree = result.tree
    finished = depth_nodes(tree, 1)[0]
    odds = Fraction(99), Fraction(1, 99)
    hand = [odds[0] / (odds[0] + 3 * odds[1])] + [odds[1] / (odds[0] + 3 * odds[1])] * 3
    draws = Counter(hand_draws(hand, replayed_stream(3, "p0", 1).random(4)))
    assert tree[finished]["copies"] == draws[0] >= 1
    assert [c.node for c in result.candidates].count(finished) == draws[0]  # its copies are candidates
    assert len(result.candidates) == 4


def test_ess_threshold_skips_resampling_and_carries_the_weights() -> None:
    # rewards 0.8, 0.6, 0.2, 0.5: ESS = 729/309 = 2.36 >= 0.5 * 4, so round 1 does not resample; the
    # second steps' potentials then multiply onto the first ones: w ~ odds1 * odds2
    second = {"t1-0": 0.5, "t1-1": 0.9, "t1-2": 0.5, "t1-3": 0.2}
    config = search_config(strategy="particles", budget=4, ess_threshold=0.5, seed=1)
    policy = scripted_steps(list(FIRST), finish_at(3))
    (result,), _ = run(problems(1), config, policy=policy, scorer=scripted_scorer(valued({**FIRST, **second})))
    tree = result.tree
    firsts = depth_nodes(tree, 1)
    assert all(len(tree.children(n)) == 1 for n in firsts)  # everyone continued as itself
    assert all(tree[n]["copies"] is None for n in firsts)
    seconds = [tree.children(n)[0] for n in firsts]
    odds = [Fraction(4) * 1, Fraction(3, 2) * 9, Fraction(1, 4) * 1, Fraction(1) * Fraction(1, 4)]
    carried = [o / sum(odds) for o in odds]
    assert [tree[n]["text"] for n in seconds] == ["t1-0", "t1-1", "t1-2", "t1-3"]
    assert [tree[n]["particle_weight"] for n in seconds] == pytest.approx([float(w) for w in carried])
    ess = 1 / sum(w * w for w in carried)
    assert ess < 2  # so round 2 resamples
    assert sum(tree[n]["copies"] for n in seconds) == 4


def test_tempered_resampling_uses_the_schedule_of_the_round() -> None:
    config = search_config(strategy="particles", budget=4, tempering_start=2.0, tempering_steps=4,
                           particle_temperature=0.5)
    policy = scripted_steps(list(FIRST), finish_at(2))
    (result,), _ = run(problems(1), config, policy=policy, scorer=scripted_scorer(valued(FIRST)))
    firsts = depth_nodes(result.tree, 1)
    odds = [4, 1.5, 0.25, 1]
    at_t = [o ** (1 / 1.5) for o in odds]  # round 1 runs at T(1) = 1.5
    assert [result.tree[n]["particle_weight"] for n in firsts] == pytest.approx([w / sum(at_t) for w in at_t])


def test_particle_gibbs_runs_free_particles_beside_a_reference() -> None:
    # budget 6, 2 iterations: 3 particles each; iteration 2 has 2 free particles and 1 reference (HUB 181-199)
    config = search_config(strategy="particles", budget=6, particle_iterations=2, seed=2)
    (result,), _ = run(problems(1), config, policy=depth_policy(3))
    tree = result.tree
    roots = tree.children(ROOT)
    assert [tree[n]["iteration"] for n in roots] == [0, 0, 0, 1, 1]
    first_finals = [n for n in tree.terminals() if tree[n]["iteration"] == 0]
    assert len(first_finals) == 3
    candidates = [c.node for c in result.candidates]
    assert len(candidates) == 3
    *free, reference = candidates  # the free particles come first, then the reference
    assert reference in first_finals
    assert all(tree[n]["terminal"] and tree[n]["iteration"] == 1 for n in free)
    # iteration 2's first resampling pooled the 2 free particles and the reference's first step
    pool = [tree.path(reference)[0], *(n for n in roots if tree[n]["iteration"] == 1)]
    assert sum(tree[n]["particle_weight"] for n in pool) == pytest.approx(1.0)
    value = [hashed_value(tree.steps(n)) for n in pool]
    odds = [v / (1 - v) for v in value]
    assert [tree[n]["particle_weight"] for n in pool] == pytest.approx([o / sum(odds) for o in odds])
    assert sum(tree[n]["copies"] for n in pool) == 2  # only the free particles are drawn


def test_particles_issue_one_expand_and_one_score_per_round_for_every_problem() -> None:
    generator = ScriptedGenerator(depth_policy(3))
    scorer = scripted_scorer()
    config = search_config(strategy="particles", budget=8)
    results, _ = run(problems(3), config, generator, scorer)
    assert len(generator.calls) == 3  # three steps, whatever the number of problems
    for call in generator.calls:
        assert len({r.prompt_text.split("</question>")[0] for r in call}) == 3
    assert len(generator.calls[0]) == 3  # the root of each problem, 8 samples in one request
    assert len(scorer.inner.batches) == 3
    for r in results:
        assert r.counters.backend_calls == 3
        assert len(r.tree) - 1 == 8 * 3  # every particle takes every step
        assert len(r.candidates) == 8


@pytest.mark.parametrize(("options", "message"), [
    ({"particle_temperature": 0.0}, "--particle-temperature must be above 0"),
    ({"particle_temperature": -1.0}, "--particle-temperature must be above 0"),
    ({"ess_threshold": 0.0}, "--ess-threshold must be above 0"),
    ({"ess_threshold": 1.5}, "--ess-threshold is a fraction"),
    ({"tempering_start": -2.0}, "--tempering-start must be above 0"),
    ({"tempering_steps": 0}, "--tempering-steps must be at least 1"),
    ({"resampling": "stratified"}, "unknown --resampling 'stratified'"),
    ({"particle_iterations": 3}, "multiple of --particle-iterations"),
    ({"particle_iterations": 2, "reference_particles": 4}, "--reference-particles must be at least 1"),
])
def test_bad_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message.replace("(", r"\(")):
        make_strategy(search_config(strategy="particles", budget=8, **options), True)


def test_particles_need_a_scorer() -> None:
    with pytest.raises(StrategyError, match="strategy 'particles' needs a scorer"):
        make_strategy(search_config(strategy="particles", budget=8), False)
