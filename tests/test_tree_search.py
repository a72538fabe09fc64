"""Beam search, DVTS and MCTS on the scripted generator with a scripted scorer: exact tree shapes.

Expected values are recomputed here from the scorer's value function (``hashed_value`` of a
node's step text), never read from the strategy's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from pumsearch.api import make_strategy
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationOutput, GenerationRequest
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies import StrategyError, search_config
from tests.helpers_search import depth_policy, hashed_value, problems, run, scripted_scorer


def value(tree: SearchTree, node: int) -> float:
    return hashed_value(tree.steps(node))


def top(tree: SearchTree, nodes: list[int], k: int) -> set[int]:
    return set(sorted(nodes, key=lambda n: (-value(tree, n), n))[:k])


def at_depth(tree: SearchTree, depth: int) -> list[int]:
    return [n for n, a in tree.iter_nodes() if a["depth"] == depth and n != ROOT]


def step_nodes(tree: SearchTree) -> int:
    return len(tree) - 1


# -- beam search --------------------------------------------------------------------------------
def test_beam_keeps_top_n_over_m_and_expands_each_m_times() -> None:
    config = search_config(strategy="beam", budget=8, beam_width=4)
    (result,), _ = run(problems(1), config, policy=depth_policy(4))
    tree = result.tree
    assert len(tree.children(ROOT)) == 8
    for depth in (1, 2, 3):
        nodes = at_depth(tree, depth)
        assert len(nodes) == 8
        expanded = {n for n in nodes if tree.children(n)}
        assert expanded == top(tree, nodes, 2)
        assert all(len(tree.children(n)) == 4 for n in expanded)
    finals = at_depth(tree, 4)
    assert len(finals) == 8 and all(tree[n]["terminal"] for n in finals)
    assert {c.node for c in result.candidates} == set(finals)
    assert result.chosen_node == max(finals, key=lambda n: (value(tree, n), -n))
    assert step_nodes(tree) == 32  # 4 rounds of N = 8 expansions
    assert result.counters.backend_calls == 4


def early_finish_policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
    """Step 1 finishes (a boxed answer) about half the time; otherwise solutions have 3 steps."""
    draw = int(rng.integers(0, 10**9))
    if len(done) == 0 and draw % 2:
        return f"early-{draw} \\boxed{{7}}"
    if len(done) >= 2:
        return f"end-{draw} \\boxed{{5}}"
    return f"d{len(done) + 1}-{draw}\n\n"


def test_beam_retains_finished_beams_and_refills_the_round() -> None:
    config = search_config(strategy="beam", budget=8, beam_width=4)
    (result,), _ = run(problems(1), config, policy=early_finish_policy)
    tree = result.tree
    terminals = tree.terminals()
    early = [n for n in terminals if tree[n]["depth"] == 1]
    assert early, "the policy should finish some beams in the first round"
    assert all(not tree.children(n) for n in terminals)  # a finished beam is never expanded
    for depth in (1, 2):
        nodes = [n for n in at_depth(tree, depth) if not tree[n]["terminal"]]
        expanded = [n for n in at_depth(tree, depth) if tree.children(n)]
        if not expanded:
            continue
        assert set(expanded) == top(tree, nodes, 2)
        assert sum(len(tree.children(n)) for n in expanded) == 8  # N per round, even with fewer live
    # the first N to finish are returned (search-and-learn, beam_search.py:184): round 1's
    # finished first steps, then round 3's in the round-robin order of their parents
    depth_one = sorted(at_depth(tree, 1))  # the root's children, in generation order
    depth_two = round_robin_order(tree, [n for n in depth_one if tree.children(n)])
    depth_three = round_robin_order(tree, [n for n in depth_two if tree.children(n)])
    completion_order = [n for n in depth_one if tree[n]["terminal"]] + depth_three
    assert [c.node for c in result.candidates] == completion_order[:8]
    best = search_config(strategy="beam", budget=8, beam_width=4, sort_completed=True)
    (sorted_result,), _ = run(problems(1), best, policy=early_finish_policy)
    expected = sorted(terminals, key=lambda n: (-value(tree, n), completion_order.index(n)))[:8]
    assert [c.node for c in sorted_result.candidates] == expected


def round_robin_order(tree: SearchTree, parents: list[int]) -> list[int]:
    """The children of ``parents`` (in their list order) as search-and-learn lists them: every
    parent's first child, then every parent's second, ... (beam_search.py:71-84)."""
    children = [c for p in parents for c in sorted(tree.children(p))]
    return sorted(children, key=lambda c: (sorted(tree.children(tree.parent(c))).index(c),
                                           parents.index(tree.parent(c))))


def test_beam_filter_duplicates_keeps_distinct_prefixes() -> None:
    def two_texts(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        if len(done) >= 2:
            return "done \\boxed{1}"
        return f"{'ab'[int(rng.integers(0, 2))]}{len(done)}\n\n"

    config = search_config(strategy="beam", budget=8, beam_width=2, filter_duplicates=True)
    (result,), _ = run(problems(1), config, policy=two_texts)
    tree = result.tree
    for depth in (1, 2):
        expanded = [n for n in at_depth(tree, depth) if tree.children(n)]
        assert len({tree.steps(n) for n in expanded}) == len(expanded)
    plain = search_config(strategy="beam", budget=8, beam_width=2)
    (unfiltered,), _ = run(problems(1), plain, policy=two_texts)
    expanded = [n for n in at_depth(unfiltered.tree, 1) if unfiltered.tree.children(n)]
    assert len({unfiltered.tree.steps(n) for n in expanded}) < len(expanded)  # the filter mattered


def test_beam_lookahead_ranks_by_the_lookahead_tip() -> None:
    config = search_config(strategy="beam", budget=4, beam_width=2, lookahead=1)
    (result,), _ = run(problems(1), config, policy=depth_policy(4))
    tree = result.tree
    first = tree.children(ROOT)
    assert len(first) == 4
    real = [n for n in first if not tree[n].get("lookahead")]
    tips = {n: next(c for c in tree.children(n) if tree[c].get("lookahead")) for n in real}
    expanded = {n for n in real if any(not tree[c].get("lookahead") for c in tree.children(n))}
    expected = set(sorted(real, key=lambda n: (-value(tree, tips[n]), n))[:2])
    assert expanded == expected


def test_beam_stops_at_the_depth_cap_within_budget() -> None:
    config = search_config(strategy="beam", budget=8, beam_width=4, max_depth=2)
    strategy = make_strategy(config, True)
    (result,), _ = run(problems(1), config, policy=depth_policy(10))
    tree = result.tree
    assert max(a["depth"] for _, a in tree.iter_nodes()) == 2
    assert all(tree[n]["terminal"] for n in at_depth(tree, 2))
    assert step_nodes(tree) <= strategy.budget_limit()
    assert len(result.candidates) == 8


def test_beam_batches_a_round_of_all_problems_into_one_backend_call() -> None:
    generator = ScriptedGenerator(depth_policy(3))
    scorer = scripted_scorer()
    config = search_config(strategy="beam", budget=8, beam_width=4)
    results, engine = run(problems(3), config, generator, scorer)
    assert len(generator.calls) == 3  # three rounds, whatever the number of problems
    for call in generator.calls:
        questions = {r.prompt_text.split("</question>")[0] for r in call}
        assert len(questions) == 3
    assert [len(c) for c in generator.calls] == [3, 6, 6]  # roots, then N/M prefixes per problem
    assert len(scorer.inner.batches) == 3
    assert engine.totals.backend_calls == 3
    for r in results:
        assert r.counters.backend_calls == 3
        assert r.counters.generated_tokens == sum(a["num_tokens"] for _, a in r.tree.iter_nodes())


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
@pytest.mark.parametrize(("budget", "width"), [(10, 4), (2, 4)])
def test_beam_and_dvts_refuse_a_budget_that_is_no_multiple_of_the_width(strategy, budget, width) -> None:
    with pytest.raises(StrategyError, match="multiple of --beam-width"):
        make_strategy(search_config(strategy=strategy, budget=budget, beam_width=width), True)


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_tree_search_needs_a_scorer(strategy) -> None:
    with pytest.raises(StrategyError, match="needs a scorer"):
        make_strategy(search_config(strategy=strategy, budget=8), False)


# -- DVTS ---------------------------------------------------------------------------------------
def test_dvts_subtrees_are_disjoint_and_keep_their_best_child() -> None:
    config = search_config(strategy="dvts", budget=12, beam_width=4)
    (result,), _ = run(problems(1), config, policy=depth_policy(4))
    tree = result.tree
    first = tree.children(ROOT)
    assert len(first) == 12
    groups: dict[int, list[int]] = {}
    for n in first:
        groups.setdefault(tree[n]["subtree"], []).append(n)
    assert sorted(len(g) for g in groups.values()) == [4, 4, 4]
    for n, attrs in tree.iter_nodes():  # every node below the root stays in its subtree
        parent = tree.parent(n)
        if parent not in (None, ROOT):
            assert attrs["subtree"] == tree[parent]["subtree"]
    for s in groups:
        for depth in (1, 2, 3):
            nodes = [n for n in at_depth(tree, depth) if tree[n]["subtree"] == s]
            assert len(nodes) == 4
            expanded = [n for n in nodes if tree.children(n)]
            assert set(expanded) == top(tree, nodes, 1)
    finals = at_depth(tree, 4)
    assert {c.node for c in result.candidates} == set(finals) and len(finals) == 12
    assert step_nodes(tree) == 12 * 4


# -- MCTS ---------------------------------------------------------------------------------------
def check_mcts_statistics(tree: SearchTree, own_value: Callable[[int], float]) -> None:
    """visits and value_sum add up from own evaluations and children; virtual loss released."""
    for n, attrs in tree.iter_nodes():
        kids = tree.children(n)
        evaluations = attrs.get("evaluations", 0)
        assert attrs["visits"] == evaluations + sum(tree[c]["visits"] for c in kids)
        own = evaluations * own_value(n) if evaluations else 0.0
        assert attrs["value_sum"] == pytest.approx(own + sum(tree[c]["value_sum"] for c in kids))
        assert attrs.get("virtual_loss", 0) == 0
        if n != ROOT:
            assert evaluations >= 1  # every created prefix was evaluated


def test_mcts_visits_add_up_values_are_means_and_budget_holds() -> None:
    config = search_config(strategy="mcts", budget=4, mcts_steps_per_solution=6, expansions=2, mcts_parallel=3)
    (result,), _ = run(problems(1), config, policy=depth_policy(5))
    tree = result.tree
    check_mcts_statistics(tree, lambda n: value(tree, n))
    assert step_nodes(tree) == 24  # the whole budget of N x S step expansions, no more
    assert tree[ROOT]["visits"] == sum(a.get("evaluations", 0) for _, a in tree.iter_nodes())
    for n in tree.children(ROOT):  # Q of a child is the mean of every evaluation below it
        below = [n, *[d for d in tree.graph.nodes if n in tree.path(d)]]
        below = list(dict.fromkeys(below))
        values = [value(tree, d) for d in below for _ in range(tree[d]["evaluations"])]
        assert tree[n]["value_sum"] / tree[n]["visits"] == pytest.approx(sum(values) / len(values))


def test_mcts_parallel_simulations_expand_distinct_leaves_in_one_call() -> None:
    generator = ScriptedGenerator(depth_policy(6))
    config = search_config(strategy="mcts", budget=4, mcts_steps_per_solution=4, expansions=2, mcts_parallel=2,
                          c_puct=10.0)
    run(problems(1), config, generator)
    assert len(generator.calls[0]) == 1  # the first round can only expand the root
    second = generator.calls[1]
    assert len(second) == 2 and second[0].prompt_text != second[1].prompt_text


def test_mcts_most_visited_path_is_the_answer() -> None:
    config = search_config(strategy="mcts", budget=4, mcts_steps_per_solution=8, expansions=2, mcts_parallel=2)
    (result,), _ = run(problems(1), config, policy=depth_policy(3))
    tree = result.tree
    node = ROOT
    while tree.children(node):
        node = max(tree.children(node), key=lambda c: (tree[c]["visits"],
                                                       tree[c]["value_sum"] / tree[c]["visits"], -c))
    assert tree[node]["terminal"]
    assert result.chosen_node == node
    assert {c.node for c in result.candidates} == set(tree.terminals())


def test_mcts_unbounded_scorer_values_are_normalised() -> None:
    def raw(steps: tuple[str, ...]) -> float:
        return 200.0 * hashed_value(steps) - 50.0  # far outside [0, 1]

    config = search_config(strategy="mcts", budget=4, mcts_steps_per_solution=6, expansions=2, mcts_parallel=2)
    scorer = scripted_scorer(raw, value_kind="unbounded")
    (result,), _ = run(problems(1), config, scorer=scorer, policy=depth_policy(4))
    tree = result.tree
    check_mcts_statistics(tree, lambda n: raw(tree.steps(n)))
    assert step_nodes(tree) == 24


def test_mcts_verifier_terminal_reward_uses_ground_truth() -> None:
    config = search_config(strategy="mcts", budget=4, mcts_steps_per_solution=6, expansions=2, mcts_parallel=2,
                          terminal_reward="verifier")
    probs = [Problem("p0", "question", answer="2")]
    (result,), _ = run(probs, config, policy=depth_policy(2, answers=("1", "2")))
    tree = result.tree
    terminals = tree.terminals()
    assert terminals
    for n in terminals:
        assert tree[n]["mcts_value"] == (1.0 if tree[n]["answer"] == "2" else 0.0)
    for n, attrs in tree.iter_nodes():
        if n != ROOT and not attrs["terminal"]:
            assert attrs["mcts_value"] == pytest.approx(value(tree, n))


# -- shared behaviour ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_same_seed_same_tree_whatever_the_batch_mates(strategy) -> None:
    config = search_config(strategy=strategy, budget=8, beam_width=4, seed=3)
    (alone,), _ = run(problems(1), config, policy=depth_policy(3))
    together, _ = run(problems(3), config, policy=depth_policy(3))
    other_seed, _ = run(problems(1), search_config(strategy=strategy, budget=8, beam_width=4, seed=4),
                        policy=depth_policy(3))
    texts = lambda r: [a["text"] for _, a in sorted(r.tree.iter_nodes())]  # noqa: E731
    assert texts(alone) == texts(together[0])
    assert texts(alone) != texts(other_seed[0])
    assert texts(together[0]) != texts(together[1])  # problems draw from their own streams


class SlowGenerator(ScriptedGenerator):
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        await asyncio.sleep(0.05)
        return await super().generate(requests)


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_time_limit_returns_the_best_so_far_marked_cut_short(strategy) -> None:
    config = search_config(strategy=strategy, budget=8, beam_width=4, time_limit=0.25, mcts_parallel=1)
    started = time.monotonic()
    (result,), _ = run(problems(1), config, SlowGenerator(depth_policy(30)))
    assert time.monotonic() - started < 5
    assert result.cut_short
    assert result.cut_reason and "time limit" in result.cut_reason
    assert step_nodes(result.tree) > 0  # what was searched is kept
    if result.candidates:
        assert result.chosen_node in {c.node for c in result.candidates}

