"""Continuous batching on a tiny real Llama: async calls to the transformers backend share one
running decode batch (a call's rows join while others decode, and each call returns when its own
rows finish), and the engine hands each search's round over as soon as it is ready, with the same
trees as one lock-step batch per round."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pumsearch.api import asearch
from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from pumsearch.search.result import SearchResult
from pumsearch.strategies import search_config
from tests.helpers_search import scripted_scorer

PROBLEMS = [Problem("a", "what is 1 + 3"), Problem("b", "take the sum of 2 and 2"), Problem("c", "x = 4"),
            Problem("d", "2 * 2")]


@pytest.fixture(scope="module")
def model_dir(step_llama_dir: Path) -> Path:
    """The step policy: it writes steps and ends solutions, so searches grow real trees."""
    return step_llama_dir


def _request(gen: TransformersGenerator, question: str, n: int, seed: int, **params) -> GenerationRequest:
    ids = gen.chat_prompt(question, None)[1]
    sampling = SamplingParams(**{"temperature": 1.0, "max_tokens": 12, "stop": ("\n",), **params})
    return GenerationRequest("", ids, n, sampling, seed=seed)


def test_a_short_call_returns_while_a_long_one_decodes(tiny_llama_dir: Path) -> None:
    """The short call joins the running batch and comes back before the long call ends, with the
    tokens each gives alone."""
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    long = _request(gen, "what is 1 + 3", 2, seed=1, temperature=0.0, max_tokens=48, stop=())
    short = _request(gen, "x = 4", 3, seed=2, max_tokens=3, stop=())
    (long_alone,), (short_alone,) = gen.generate_sync([long]), gen.generate_sync([short])
    assert all(c.num_tokens == 48 for c in long_alone.completions)  # no early end of sequence

    async def both() -> tuple[list, list, bool]:
        long_task = asyncio.ensure_future(gen.generate([long]))
        await asyncio.sleep(0)  # the long call is submitted first
        short_out = await gen.generate([short])
        long_still_running = not long_task.done()
        return await long_task, short_out, long_still_running

    (long_out,), (short_out,), long_still_running = asyncio.run(both())
    assert long_still_running
    assert [c.token_ids for c in long_out.completions] == [c.token_ids for c in long_alone.completions]
    assert [c.token_ids for c in short_out.completions] == [c.token_ids for c in short_alone.completions]


def test_a_failing_call_fails_the_calls_in_flight_and_the_next_call_works(tiny_llama_dir: Path) -> None:
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    bad = _request(gen, "x = 4", 1, seed=1, max_tokens=4)
    bad = GenerationRequest("", (gen.model.config.vocab_size + 5,), 1, bad.params, seed=1)  # no such token
    with pytest.raises(IndexError):
        asyncio.run(gen.generate([bad]))
    (out,) = asyncio.run(gen.generate([_request(gen, "x = 4", 2, seed=1)]))
    assert len(out.completions) == 2


class _InFlight:
    """Counts the backend calls in flight at once (wrapping the real generate)."""

    def __init__(self, gen: TransformersGenerator) -> None:
        self.now = self.peak = 0
        self._generate = gen.generate
        gen.generate = self.generate  # type: ignore[method-assign]

    async def generate(self, requests):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self._generate(requests)
        finally:
            self.now -= 1


def _search(gen: TransformersGenerator, strategy: str) -> list[SearchResult]:
    settings = dict(budget=4, beam_width=2) if strategy != "mcts" else dict(
        budget=2, mcts_steps_per_solution=4, expansions=2, mcts_parallel=2)
    config = search_config(strategy=strategy, seed=3, temperature=1.0, max_tokens=32, max_step_tokens=10,
                           max_depth=6, **settings)
    results = asyncio.run(asearch(PROBLEMS, generator=gen, scorer=scripted_scorer(), config=config))
    assert all(isinstance(r, SearchResult) for r in results), results
    return results  # type: ignore[return-value]


BATCH_SHAPE = ("backend_batch_items", "wall_time", "backend_time", "scorer_time")  # how calls were batched


def _counters(results: list[SearchResult]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.counters.to_dict().items() if k not in BATCH_SHAPE and k != "mean_batch_size"}
            for r in results]


def _trees(results: list[SearchResult]) -> list[list[tuple]]:
    return [[(n, r.tree.parent(n), tuple(a["token_ids"] or ()), a["text"], a["terminal"])
             for n, a in sorted(r.tree.iter_nodes())] for r in results]


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_searches_submitted_as_they_are_ready_grow_the_same_trees(model_dir: Path, strategy: str) -> None:
    continuous = TransformersGenerator.load(str(model_dir))
    lockstep = TransformersGenerator.load(str(model_dir), continuous=False)
    seen_continuous, seen_lockstep = _InFlight(continuous), _InFlight(lockstep)
    together, apart = _search(continuous, strategy), _search(lockstep, strategy)
    assert _trees(together) == _trees(apart)
    assert [r.answer for r in together] == [r.answer for r in apart]
    assert _counters(together) == _counters(apart)  # tokens, cached tokens, calls: all but the batch shape
    assert seen_lockstep.peak == 1  # one batch per round, for every search
    assert seen_continuous.peak > 1  # a search's round went out while another's still decoded
