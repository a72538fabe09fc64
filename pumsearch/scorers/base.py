"""The shared scorer wrapper: deduplication, caching, token-budgeted micro-batches, OOM halving.

A concrete scorer implements ``ModelScorer``: a synchronous ``score_batch`` over one micro-batch
and ``count_tokens`` for one item. ``BatchedScorer`` wraps it into the async, cached ``Scorer``
the engine calls. A scorer whose work is itself asynchronous (the rollout scorer, which calls
generators) implements ``AsyncModelScorer`` instead: ``ascore_batch`` receives every unique,
uncached item of a call at once and runs on the event loop (no worker thread, no micro-batches:
its generators batch for themselves). Cache keys are (scorer identity, question, reference, steps,
complete, and the policy's token values where the scorer reads them), so a prefix that beam
search revisits is scored once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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


class AsyncModelScorer(Protocol):
    identity: str
    value_kind: ValueKind
    needs_reference: bool

    async def ascore_batch(self, items: Sequence[ScoreItem]) -> list[Score]: ...

    def close(self) -> None: ...


def is_out_of_memory(err: BaseException) -> bool:
    name = type(err).__name__
    message = str(err).lower()
    return name == "OutOfMemoryError" or (isinstance(err, RuntimeError) and "out of memory" in message)


@dataclass
class ScorerStats:
    calls: int = 0  # micro-batch forwards
    items: int = 0
    tokens: int = 0
    cache_hits: int = 0
    oom_splits: int = 0
    seconds: float = 0.0
    requested: int = 0  # items asked for, cached or not

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.requested if self.requested else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "hit_rate": self.hit_rate}


Sized = tuple[int, tuple, ScoreItem]  # (tokens, cache key, item)


def cache_key(identity: str, item: ScoreItem) -> tuple:
    return (identity, item.problem.question, item.problem.answer, item.steps, item.complete,
            item.token_confidences, item.token_logprobs)


class BatchedScorer:
    """Wraps a ModelScorer into the engine's async Scorer protocol."""

    def __init__(self, inner: ModelScorer | AsyncModelScorer, *, batch_tokens: int = 16384,
                 max_batch_items: int = 64, cache_size: int = 200_000) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.value_kind = inner.value_kind
        self.needs_reference = inner.needs_reference
        self.top_logprobs = int(getattr(inner, "top_logprobs", 0))  # what it reads off the policy (confidence)
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
        self.stats.requested += len(items)
        keys = [cache_key(self.identity, item) for item in items]
        known: dict[tuple, Score] = {}  # read now: scoring the new items below may evict old ones
        todo: dict[tuple, ScoreItem] = {}
        for key, item in zip(keys, items, strict=True):
            if key in self._cache:
                known[key] = self._cache[key]
            elif key not in todo:
                todo[key] = item
        fresh: dict[tuple, Score] = {}
        if todo and hasattr(self.inner, "ascore_batch"):
            fresh = await self._ascore_unique(todo)
        elif todo:
            fresh = await asyncio.to_thread(self._score_unique, todo)
        out = []
        charged: set[tuple] = set()
        for key in keys:
            if key in fresh and key not in charged:  # first sight of a new prefix pays for it
                charged.add(key)
                score = fresh[key]
                out.append(Score(score.value, score.step_values, {**score.extra, "cache_hit": False}))
            else:
                score = fresh[key] if key in fresh else known[key]
                self.stats.cache_hits += 1
                extra = {**score.extra, "cache_hit": True, "tokens": 0}
                out.append(Score(score.value, score.step_values, extra))
        return out

    async def _ascore_unique(self, todo: dict[tuple, ScoreItem]) -> dict[tuple, Score]:
        started = time.perf_counter()
        items = list(todo.values())
        scores = await self.inner.ascore_batch(items)  # type: ignore[union-attr]
        if len(scores) != len(items):
            raise ScorerError(f"scorer {self.identity} returned {len(scores)} scores for {len(items)} items")
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.seconds += time.perf_counter() - started
        results: dict[tuple, Score] = {}
        for key, score in zip(todo, scores, strict=True):
            self.stats.tokens += int(score.extra.get("tokens", 0))
            results[key] = score
            self._remember(key, score)
        return results

    def _score_unique(self, todo: dict[tuple, ScoreItem]) -> dict[tuple, Score]:
        with self._lock:
            sized = sorted(((self.inner.count_tokens(item), key, item) for key, item in todo.items()),  # type: ignore[union-attr]
                           key=lambda t: t[0])
            results: dict[tuple, Score] = {}
            for batch in self._micro_batches(sized):
                items, sizes = [b[2] for b in batch], [b[0] for b in batch]
                for (tokens, key, _), score in zip(batch, self._forward_halving(items, sizes), strict=True):
                    score.extra["tokens"] = tokens
                    results[key] = score
                    self._remember(key, score)
            return results

    def _micro_batches(self, sized: list[Sized]) -> list[list[Sized]]:
        """Length-sorted batches whose padded size (items x longest) stays under the token budget."""
        batches: list[list[Sized]] = []
        current: list[Sized] = []
        for entry in sized:
            longest = max(entry[0], current[-1][0] if current else 0)
            too_big = (len(current) + 1) * longest > self.batch_tokens
            if current and (too_big or len(current) >= self.max_batch_items):
                batches.append(current)
                current = []
            current.append(entry)
        if current:
            batches.append(current)
        return batches

    def _forward_halving(self, items: list[ScoreItem], sizes: list[int]) -> list[Score]:
        """Score a micro-batch; on out-of-memory, halve it and retry each half."""
        started = time.perf_counter()
        try:
            scores = self.inner.score_batch(items)  # type: ignore[union-attr]
        except Exception as err:
            if not is_out_of_memory(err) or len(items) == 1:
                raise
            self.stats.oom_splits += 1
            _empty_device_cache()
            mid = len(items) // 2
            return (self._forward_halving(items[:mid], sizes[:mid])
                    + self._forward_halving(items[mid:], sizes[mid:]))
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.tokens += sum(sizes)
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
