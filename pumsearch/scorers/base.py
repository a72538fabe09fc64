"""The shared scorer wrapper: deduplication, caching, token-budgeted micro-batches, OOM halving.

A concrete scorer implements ``ModelScorer``: a synchronous ``score_batch`` over one micro-batch
and ``count_tokens`` for one item. ``BatchedScorer`` wraps it into the async, cached ``Scorer``
the engine calls. Cache keys are (scorer identity, question, reference, steps, complete), so a
prefix that beam search revisits, or that two problems share, is scored once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pumsearch.search.protocols import Score, ScoreItem, ValueKind


class ScorerError(ValueError):
    """A scorer cannot be built or cannot score an item (the message names what to fix)."""


class ModelScorer(Protocol):
    identity: str
    value_kind: ValueKind
    needs_reference: bool

    def count_tokens(self, item: ScoreItem) -> int: ...

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]: ...

    def close(self) -> None: ...


def is_out_of_memory(err: BaseException) -> bool:
    name = type(err).__name__
    return name == "OutOfMemoryError" or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass
class ScorerStats:
    calls: int = 0  # micro-batch forwards
    items: int = 0
    tokens: int = 0
    cache_hits: int = 0
    oom_splits: int = 0
    seconds: float = 0.0


def cache_key(identity: str, item: ScoreItem) -> tuple:
    return (identity, item.problem.question, item.problem.answer, item.steps, item.complete)


class BatchedScorer:
    """Wraps a ModelScorer into the engine's async Scorer protocol."""

    def __init__(self, inner: ModelScorer, *, batch_tokens: int = 16384, max_batch_items: int = 64,
                 cache_size: int = 200_000) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.value_kind = inner.value_kind
        self.needs_reference = inner.needs_reference
        self.batch_tokens = batch_tokens
        self.max_batch_items = max_batch_items
        self.cache_size = cache_size
        self.stats = ScorerStats()
        self._cache: OrderedDict[tuple, Score] = OrderedDict()
        self._lock = threading.Lock()  # one forward at a time

    def _check(self, item: ScoreItem) -> None:
        if self.needs_reference and item.problem.answer is None:
            raise ScorerError(
                f"scorer {self.identity} needs a reference answer for problem {item.problem.id!r} "
                "(pass --answer, or use a dataset with answers)"
            )

    async def score(self, items: Sequence[ScoreItem]) -> list[Score]:
        for item in items:
            self._check(item)
        keys = [cache_key(self.identity, item) for item in items]
        todo: dict[tuple, ScoreItem] = {}
        for key, item in zip(keys, items, strict=True):
            if key not in self._cache and key not in todo:
                todo[key] = item
        fresh: dict[tuple, Score] = {}
        if todo:
            fresh = await asyncio.to_thread(self._score_unique, todo)
        out = []
        charged: set[tuple] = set()
        for key in keys:
            if key in fresh and key not in charged:  # first sight of a new prefix pays for it
                charged.add(key)
                score = fresh[key]
                out.append(Score(score.value, score.step_values, {**score.extra, "cache_hit": False}))
            else:
                score = fresh.get(key) or self._cache[key]
                self.stats.cache_hits += 1
                out.append(Score(score.value, score.step_values, {**score.extra, "cache_hit": True, "tokens": 0}))
        return out

    def _score_unique(self, todo: dict[tuple, ScoreItem]) -> dict[tuple, Score]:
        with self._lock:
            sized = sorted(((self.inner.count_tokens(item), key, item) for key, item in todo.items()),
                           key=lambda t: t[0])
            results: dict[tuple, Score] = {}
            for batch in self._micro_batches(sized):
                for (tokens, key, _), score in zip(batch, self._forward_halving([b[2] for b in batch]), strict=True):
                    score.extra["tokens"] = tokens
                    results[key] = score
                    self._remember(key, score)
            return results

    def _micro_batches(self, sized: list[tuple[int, tuple, ScoreItem]]) -> list[list[tuple[int, tuple, ScoreItem]]]:
        """Length-sorted batches whose padded size (items x longest) stays under the token budget."""
        batches: list[list[tuple[int, tuple, ScoreItem]]] = []
        current: list[tuple[int, tuple, ScoreItem]] = []
        for entry in sized:
            longest = max(entry[0], current[-1][0] if current else 0)
            if current and ((len(current) + 1) * longest > self.batch_tokens or len(current) >= self.max_batch_items):
                batches.append(current)
                current = []
            current.append(entry)
        if current:
            batches.append(current)
        return batches

    def _forward_halving(self, items: list[ScoreItem]) -> list[Score]:
        """Score a micro-batch; on out-of-memory, halve it and retry each half."""
        started = time.perf_counter()
        try:
            scores = self.inner.score_batch(items)
        except Exception as err:
            if not is_out_of_memory(err) or len(items) == 1:
                raise
            self.stats.oom_splits += 1
            _empty_device_cache()
            mid = len(items) // 2
            return self._forward_halving(items[:mid]) + self._forward_halving(items[mid:])
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.tokens += sum(self.inner.count_tokens(i) for i in items)
        self.stats.seconds += time.perf_counter() - started
        if len(scores) != len(items):
            raise ScorerError(f"scorer {self.identity} returned {len(scores)} scores for {len(items)} items")
        return scores

    def _remember(self, key: tuple, score: Score) -> None:
        self._cache[key] = score
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        self.inner.close()


def _empty_device_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
