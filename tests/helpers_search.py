"""Shared pieces for strategy tests: a scripted scorer, step policies and a runner.

The scripted scorer is a real ``ModelScorer`` (sync ``score_batch`` + ``count_tokens``) wrapped in
the real ``BatchedScorer``, so caching, dedup and micro-batching run as they do for model scorers.
Its value is a pure function of the steps, so a test can recompute every expected score itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from pumsearch.api import make_strategy
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.scorers.base import BatchedScorer
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem, ValueKind
from pumsearch.search.result import SearchResult

ValueFn = Callable[[tuple[str, ...]], float]


def hashed_value(steps: tuple[str, ...]) -> float:
    """A deterministic pseudo-random value in [0, 1) of the last step's text."""
    text = steps[-1] if steps else ""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


class ScriptedScorer:
    """Scores a prefix by ``value_fn(steps)``; records every batch it was asked to score."""

    needs_reference = False

    def __init__(self, value_fn: ValueFn = hashed_value, *, value_kind: ValueKind = "probability",
                 identity: str = "scripted") -> None:
        self.value_fn = value_fn
        self.value_kind = value_kind
        self.identity = identity
        self.batches: list[list[ScoreItem]] = []

    def count_tokens(self, item: ScoreItem) -> int:
        return sum(len(step.split()) for step in item.steps) + 1

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        self.batches.append(list(items))
        return [Score(float(self.value_fn(item.steps))) for item in items]

    def close(self) -> None:
        pass


def scripted_scorer(value_fn: ValueFn = hashed_value, **kwargs: object) -> BatchedScorer:
    return BatchedScorer(ScriptedScorer(value_fn, **kwargs))  # type: ignore[arg-type]


def depth_policy(depth: int, answers: Sequence[str] = ("1", "2", "3")) -> Callable:
    """Each step is ``d<depth>-<random>``; the step at ``depth`` states a boxed answer, so every
    solution has exactly ``depth`` steps and every step text is (almost surely) distinct."""

    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        step = len(done) + 1
        tag = f"d{step}-{int(rng.integers(0, 10**9))}"
        if step >= depth:
            return f"{tag} so \\boxed{{{answers[int(rng.integers(0, len(answers)))]}}}"
        return f"{tag}\n\n"

    return policy


def run(problems: Sequence[Problem], config: SearchConfig, generator: ScriptedGenerator | None = None,
        scorer: BatchedScorer | None = None, *, policy: Callable | None = None,
        ) -> tuple[list[SearchResult], Engine]:
    generator = generator or ScriptedGenerator(policy or depth_policy(3))
    scorer = scorer if scorer is not None else scripted_scorer()
    strategy = make_strategy(config, True)
    engine = Engine(generator, scorer)
    results = asyncio.run(engine.run(list(problems), strategy))
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results, engine  # type: ignore[return-value]


def problems(k: int) -> list[Problem]:
    """``k`` problems without reference answers (so no grading runs)."""
    return [Problem(f"p{i}", f"question number {i}") for i in range(k)]
