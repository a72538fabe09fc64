"""The engine and Best-of-N on the scripted generator (exact behaviour) and a tiny real model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from pumsearch.api import asearch
from pumsearch.backends.scripted import ScriptedGenerator, counting_policy
from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.scorers.base import BatchedScorer
from pumsearch.search.budget import Budget, BudgetExhausted
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.grading import extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.strategies import BestOfN, StrategyError, get_strategy


class AnswerScorer:
    """Scores a solution by a fixed table of answers (a stand-in PRM with per-step values)."""

    identity = "answer-table"
    value_kind = "probability"
    needs_reference = False

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.forwards = 0

    def count_tokens(self, item: ScoreItem) -> int:
        return sum(len(s.split()) for s in item.steps)

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        self.forwards += 1
        out = []
        for item in items:
            value = self.table.get(extract_answer("\n\n".join(item.steps)) or "", 0.0)
            out.append(Score(value, [0.5] * (len(item.steps) - 1) + [value]))
        return out

    def close(self) -> None:
        pass


def _problems(k: int) -> list[Problem]:
    return [Problem(f"p{i}", f"question {i}", "2") for i in range(k)]


def _run(problems, generator, scorer=None, **settings):
    config = SearchConfig(**settings)
    return asyncio.run(asearch(problems, generator=generator, scorer=scorer, config=config))


def test_bon_samples_n_solutions_as_step_chains():
    gen = ScriptedGenerator(counting_policy(steps=3))
    (result,) = _run(_problems(1), gen, budget=6)
    assert len(result.candidates) == 6
    tree = result.tree
    for cand in result.candidates:
        steps = tree.steps(cand.node)
        assert len(steps) == 4 and steps[0].startswith("Step 1:")
        assert tree[cand.node]["terminal"] and tree[cand.node]["finish_reason"] == "eos"
        assert cand.answer == extract_answer(steps[-1])
    assert len(tree) == 1 + 6 * 4
    assert result.counters.generated_tokens == sum(tree[n]["num_tokens"] for n in tree.graph.nodes)


def test_bon_without_scorer_takes_the_majority_answer():
    gen = ScriptedGenerator(counting_policy(steps=1, answers=("1", "2", "2", "2", "3")))
    (result,) = _run(_problems(1), gen, budget=16, seed=4)
    answers = [c.answer for c in result.candidates]
    assert result.answer == max(set(answers), key=answers.count)
    assert result.correct == (result.answer == "2")


@pytest.mark.parametrize(("select", "expected"), [("best", "3"), ("weighted", "1"), ("majority", "1")])
def test_bon_selection_with_a_scorer(select, expected):
    answers = ("1",) * 5 + ("3",)
    gen = ScriptedGenerator(lambda q, done, rng: f"x\n\n\\boxed{{{answers[int(rng.integers(0, 6))]}}}")
    scorer = BatchedScorer(AnswerScorer({"1": 0.3, "3": 0.9}))
    (result,) = _run(_problems(1), gen, scorer, budget=12, seed=1, select=select)
    got = [c.answer for c in result.candidates]
    assert got.count("1") * 0.3 > got.count("3") * 0.9 > 0  # the seed gives a mixed sample
    assert result.answer == expected
    assert result.counters.scorer_calls == 1


def test_bon_aggregation_uses_step_scores():
    gen = ScriptedGenerator(counting_policy(steps=2, answers=("1",)))
    scorer = BatchedScorer(AnswerScorer({"1": 0.9}))
    (result,) = _run(_problems(1), gen, scorer, budget=2, aggregate="min")
    assert all(c.score == 0.5 for c in result.candidates)
    (result,) = _run(_problems(1), gen, scorer, budget=2, aggregate="prod")
    assert all(c.score == pytest.approx(0.5 * 0.5 * 0.9) for c in result.candidates)


def test_problems_are_coalesced_into_one_backend_call():
    gen = ScriptedGenerator()
    scorer = BatchedScorer(AnswerScorer({"2": 1.0}))
    results = _run(_problems(5), gen, scorer, budget=4)
    assert len(gen.calls) == 1 and sum(r.n for r in gen.calls[0]) == 20
    assert scorer.inner.forwards == 1
    assert all(r.counters.backend_calls == 1 and r.counters.mean_batch_size == 20 for r in results)


def test_batch_token_cap_splits_backend_calls():
    gen = ScriptedGenerator()
    config = SearchConfig(budget=2, max_tokens=50)
    engine = Engine(gen, batch_tokens=100)  # each problem needs 2 x 50 token slots
    asyncio.run(engine.run(_problems(3), BestOfN(config)))
    assert len(gen.calls) == 3 and engine.totals.backend_calls == 3


def test_seeds_depend_on_the_problem_not_its_batch_mates():
    gen = ScriptedGenerator()
    alone = _run([Problem("p1", "question 1")], gen, budget=4, seed=3)[0]
    together = _run(_problems(4), gen, budget=4, seed=3)[1]
    other_seed = _run([Problem("p1", "question 1")], gen, budget=4, seed=4)[0]
    steps = lambda r: [r.tree.steps(c.node) for c in r.candidates]  # noqa: E731
    assert steps(alone) == steps(together)
    assert steps(alone) != steps(other_seed)


def test_budget_is_charged_and_enforced():
    budget = Budget(limit=5, unit="solutions")
    budget.charge(4)
    with pytest.raises(BudgetExhausted):
        budget.charge(2)
    assert budget.used == 4 and budget.remaining == 1


def test_max_tokens_caps_a_solution():
    gen = ScriptedGenerator(lambda q, d, rng: " ".join(["word"] * 100))
    (result,) = _run(_problems(1), gen, budget=2, max_tokens=10)
    for cand in result.candidates:
        assert result.tree[cand.node]["finish_reason"] == "length"
        assert result.tree[cand.node]["num_tokens"] == 10


def test_failing_backend_fails_only_its_problems():
    class Broken(ScriptedGenerator):
        async def generate(self, requests):
            raise ConnectionError("backend went away")

    outcomes = _run(_problems(2), Broken(), budget=2)
    assert all(isinstance(o, ConnectionError) for o in outcomes)


def test_strategy_registry_errors():
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    with pytest.raises(StrategyError, match="cannot import"):
        get_strategy("no_such_module:Thing")
    with pytest.raises(StrategyError, match="not a Strategy"):
        get_strategy("pumsearch.search.problem:Problem")
    assert get_strategy("pumsearch.strategies.best_of_n:BestOfN") is BestOfN


def test_bon_on_a_tiny_real_model_is_seed_deterministic(tiny_llama_dir):
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    settings = dict(budget=4, max_tokens=16, temperature=1.0)
    problems = [Problem("a", "What is 2 + 3?", "5"), Problem("b", "Natalia sold 48 clips.", "72")]

    def tree_texts(seed):
        results = _run(problems, gen, seed=seed, **settings)
        return [[r.tree.steps(c.node) for c in r.candidates] for r in results]

    first, again, other = tree_texts(1), tree_texts(1), tree_texts(2)
    assert first == again
    assert first != other
    alone = _run(problems[1:], gen, seed=1, **settings)[0]
    assert [alone.tree.steps(c.node) for c in alone.candidates] == first[1]


def test_problem_seed_differs_per_problem():
    from pumsearch.search.context import problem_seed

    a = np.random.default_rng(problem_seed(0, "a")).integers(0, 2**32)
    b = np.random.default_rng(problem_seed(0, "b")).integers(0, 2**32)
    assert a != b


def test_a_scorer_error_fails_only_the_search_that_caused_it():
    class Picky(AnswerScorer):
        def score_batch(self, items):
            if any(item.problem.id == "p1" for item in items):
                raise ValueError("cannot score problem p1")
            return super().score_batch(items)

    scorer = BatchedScorer(Picky({"2": 1.0}))
    outcomes = _run(_problems(3), ScriptedGenerator(), scorer, budget=2)
    assert isinstance(outcomes[1], ValueError)
    assert [type(o).__name__ for o in (outcomes[0], outcomes[2])] == ["SearchResult", "SearchResult"]
    assert outcomes[0].counters.scorer_calls == 1
