"""Each tree-search strategy on a tiny random Llama (real tokenizer, real decode loop) at
temperature > 0: the same seed gives the same tree, other seeds other trees, with several
problems searched together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pumsearch.api import asearch
from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.strategies import search_config
from tests.helpers_search import scripted_scorer

PROBLEMS = [Problem("a", "what is 1 + 3"), Problem("b", "take the sum of 2 and 2"), Problem("c", "x = 4")]

SETTINGS = {
    "beam": dict(budget=4, beam_width=2),
    "dvts": dict(budget=4, beam_width=2),
    "mcts": dict(budget=2, mcts_steps_per_solution=4, expansions=2, mcts_parallel=2),
}


@pytest.fixture(scope="module")
def generator(step_llama_dir: Path) -> TransformersGenerator:
    return TransformersGenerator.load(str(step_llama_dir))


def search(generator: TransformersGenerator, strategy: str, seed: int,
           problems: list[Problem] = PROBLEMS) -> list[SearchResult]:
    config = search_config(strategy=strategy, seed=seed, temperature=1.0, max_tokens=32, max_step_tokens=10,
                          max_depth=6, **SETTINGS[strategy])
    results = asyncio.run(asearch(problems, generator=generator, scorer=scripted_scorer(), config=config))
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


def shape(result: SearchResult) -> list[tuple]:
    tree = result.tree
    nodes = sorted(tree.iter_nodes())
    return [(n, tree.parent(n), tuple(a["token_ids"] or ()), a["terminal"]) for n, a in nodes]


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_tiny_llama_same_seed_same_tree_other_seed_other_tree(generator: TransformersGenerator,
                                                              strategy: str) -> None:
    first = search(generator, strategy, seed=0)
    again = search(generator, strategy, seed=0)
    other = search(generator, strategy, seed=1)
    assert [shape(r) for r in first] == [shape(r) for r in again]
    assert [shape(r) for r in first] != [shape(r) for r in other]
    for r in first:
        tree = r.tree
        assert len(tree) > 2  # a real search happened: several steps were generated
        # prefixes extend by token ids; below the depth cap (6) the last round's roll-outs to the
        # end are split into steps by text and keep none, but they are never extended
        assert all(a["token_ids"] for n, a in tree.iter_nodes() if n and a["depth"] < 6)
        assert r.counters.generated_tokens == sum(a["num_tokens"] for _, a in tree.iter_nodes())
        assert r.counters.mean_batch_size > 1  # the engine batched problems together
    alone = search(generator, strategy, seed=0, problems=PROBLEMS[1:2])
    assert shape(alone[0]) == shape(first[1])  # batch mates do not change a problem's tree
