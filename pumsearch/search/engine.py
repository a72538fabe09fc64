"""The engine: runs many searches concurrently and coalesces their backend and scorer calls.

Every live search runs as an asyncio task. ``ctx.expand`` and ``ctx.score`` hand their work to the
engine and wait; a batch is flushed to the backend (or scorer) when every live search is waiting
on the engine, or when the pending generation work reaches the token cap (``batch_tokens``). So
a round of beam search over K problems is one backend call, and tree search costs about what
Best-of-N costs for the same tokens.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pumsearch.search.budget import Budget, BudgetExhausted, Counters, add_known
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.grading import Grader, default_grader
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationOutput, GenerationRequest, Generator, Score, ScoreItem, Scorer
from pumsearch.search.result import SearchResult


class SearchStrategy(Protocol):
    """What the engine needs of a strategy (strategies.base.Strategy implements it). The strategy
    holds the settings it searches with, so there is one config per run."""

    name: str
    config: SearchConfig

    def make_budget(self) -> Budget: ...

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult: ...


_search_id: contextvars.ContextVar[int] = contextvars.ContextVar("pumsearch_search_id")

# What a search holds per generated token (its id, its text, the tree's bookkeeping): 110-125 bytes
# measured with tracemalloc after Best-of-64 and Best-of-256 on a tiny Llama; rounded up.
BYTES_PER_TREE_TOKEN = 128


class PromptTooLong(ValueError):
    """A problem's prompt does not fit the model's context."""


class WorkTooLarge(ValueError):
    """A search could hold more generated tokens than the machine has memory for."""


def tokens_per_unit(strategy: SearchStrategy) -> tuple[int, str]:
    """The most tokens one unit of the strategy's budget may generate, and the flag that caps it: a
    whole solution (--max-tokens) or a step (--max-step-tokens, within --max-tokens)."""
    config = strategy.config
    if strategy.make_budget().unit == "solutions":
        return config.max_tokens, "--max-tokens"
    return min(config.max_step_tokens, config.max_tokens), "--max-step-tokens"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_work_fits(strategy: SearchStrategy, searches_at_once: int = 1, memory: int | None = None) -> None:
    """Refuse a budget whose searches could hold more than the machine's memory (``memory``
    bytes; default: physical memory), saying the estimate, before any of it is spent. The command
    line checks the budget it was given; the engine leaves its callers' budgets to them (the PUM
    labeller's internal searches are bounded by other means)."""
    memory = memory if memory is not None else physical_memory()
    budget = strategy.make_budget()
    per_unit, flag = tokens_per_unit(strategy)
    tokens = budget.limit * per_unit
    need = tokens * BYTES_PER_TREE_TOKEN * max(searches_at_once, 1)
    if memory is None or need <= memory:
        return
    at_once = f" x {searches_at_once} searches at once" if searches_at_once > 1 else ""
    raise WorkTooLarge(
        f"--budget {strategy.config.budget} lets one search generate up to {tokens:,} tokens ({budget.limit:,} "
        f"{budget.unit} of up to {flag} {per_unit}): about {need / 1e9:,.1f} GB of memory "
        f"({BYTES_PER_TREE_TOKEN} bytes a token{at_once}), more than this machine's {memory / 1e9:,.1f} GB; lower "
        f"--budget, {flag} or --concurrency")


@dataclass
class _PendingGenerate:
    requests: list[GenerationRequest]
    counters: Counters
    future: asyncio.Future[list[GenerationOutput]]
    search_id: int

    @property
    def cost(self) -> int:
        """Token slots this work takes in a batch (prompt plus room to generate, per sample)."""
        return sum(r.n * (len(r.prompt_ids or ()) + r.params.max_tokens) for r in self.requests)


@dataclass
class _PendingScore:
    items: list[ScoreItem]
    counters: Counters
    future: asyncio.Future[list[Score]]
    search_id: int


OnResult = Callable[[Problem, SearchResult | None, BaseException | None], Any]


class Engine:
    def __init__(
        self,
        generator: Generator,
        scorer: Scorer | None = None,
        *,
        grader: Grader | None = None,
        concurrency: int = 16,
        batch_tokens: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.generator = generator
        self.scorer = scorer
        self.grader = grader or default_grader()
        self.concurrency = concurrency
        self.batch_tokens = batch_tokens
        self.totals = Counters()  # what the whole engine spent: each backend call counted once
        self._ids = itertools.count()
        self._live: set[int] = set()
        self._outstanding: dict[int, int] = {}  # search id -> ops pending or in flight
        self._pending_gen: list[_PendingGenerate] = []
        self._pending_score: list[_PendingScore] = []
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    # -- coalescing -----------------------------------------------------------------------------
    def _block(self, search_id: int) -> None:
        self._outstanding[search_id] = self._outstanding.get(search_id, 0) + 1

    def _unblock(self, search_id: int) -> None:
        # Done at resolution time, not when the search resumes, so a search that is about to
        # submit more work is never mistaken for a waiting one.
        self._outstanding[search_id] -= 1
        if not self._outstanding[search_id]:
            del self._outstanding[search_id]

    def _schedule_flush_check(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_check)

    def _flush_check(self) -> None:
        self._flush_scheduled = False
        all_waiting = self._live.issubset(self._outstanding)
        pending_cost = sum(p.cost for p in self._pending_gen)
        if self._pending_gen and (all_waiting or (self.batch_tokens and pending_cost >= self.batch_tokens)):
            batch, self._pending_gen = self._pending_gen, []
            self._spawn(self._run_generate(batch))
        if self._pending_score and all_waiting:
            batch_s, self._pending_score = self._pending_score, []
            self._spawn(self._run_score(batch_s))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _submit_generate(self, requests: list[GenerationRequest], counters: Counters) -> list[GenerationOutput]:
        search_id = _search_id.get()
        future: asyncio.Future[list[GenerationOutput]] = asyncio.get_running_loop().create_future()
        self._block(search_id)
        self._pending_gen.append(_PendingGenerate(requests, counters, future, search_id))
        self._schedule_flush_check()
        return await future

    async def _submit_score(self, items: list[ScoreItem], counters: Counters) -> list[Score]:
        if self.scorer is None:
            raise RuntimeError("no scorer configured")
        search_id = _search_id.get()
        future: asyncio.Future[list[Score]] = asyncio.get_running_loop().create_future()
        self._block(search_id)
        self._pending_score.append(_PendingScore(items, counters, future, search_id))
        self._schedule_flush_check()
        return await future

    def _split_by_tokens(self, batch: list[_PendingGenerate]) -> list[list[_PendingGenerate]]:
        if not self.batch_tokens:
            return [batch]
        chunks: list[list[_PendingGenerate]] = [[]]
        cost = 0
        for pending in batch:
            if chunks[-1] and cost + pending.cost > self.batch_tokens:
                chunks.append([])
                cost = 0
            chunks[-1].append(pending)
            cost += pending.cost
        return chunks

    async def _run_generate(self, batch: list[_PendingGenerate]) -> None:
        await asyncio.gather(*(self._generate_chunk(chunk) for chunk in self._split_by_tokens(batch)))

    async def _generate_chunk(self, chunk: list[_PendingGenerate]) -> None:
        requests = [r for p in chunk for r in p.requests]
        rows = sum(r.n for r in requests)

        def account(c: Counters, outputs: list[GenerationOutput], elapsed: float) -> None:
            c.backend_calls += 1
            c.backend_batch_items += rows
            c.backend_time += elapsed
            for out in outputs:
                c.generated_tokens += sum(comp.num_tokens for comp in out.completions)
                c.prompt_tokens += out.prompt_tokens
                c.cached_prompt_tokens = add_known(c.cached_prompt_tokens, out.cached_tokens)
                c.backend_retries += out.retries
                c.backend_peak_in_flight = max(c.backend_peak_in_flight, out.requests_in_flight)

        # a backend failure is shared by the whole batch: no retry per search (the backend retries)
        await self._dispatch(chunk, lambda p: p.requests, self.generator.generate, account, isolate=False)

    async def _run_score(self, batch: list[_PendingScore]) -> None:
        assert self.scorer is not None

        def account(c: Counters, scores: list[Score], elapsed: float) -> None:
            c.scorer_calls += 1
            c.scorer_time += elapsed
            for s in scores:
                c.scorer_tokens += int(s.extra.get("tokens", 0))
                c.scorer_cache_hits += int(bool(s.extra.get("cache_hit", False)))

        # one bad item (say, an empty step a PRM refuses) must fail only its own search
        await self._dispatch(batch, lambda p: p.items, self.scorer.score, account, isolate=True)

    async def _dispatch(self, batch: list[Any], units_of: Callable[[Any], list[Any]],
                        call: Callable[[list[Any]], Awaitable[list[Any]]],
                        account: Callable[[Counters, list[Any], float], None], *, isolate: bool) -> None:
        """One call for the whole batch; results are handed back to each waiting search, with its
        counters charged. On failure every search in the batch gets the exception, unless
        ``isolate``, when each search is retried alone so only the failing one fails."""
        units = [u for p in batch for u in units_of(p)]
        started = time.perf_counter()
        try:
            results = await call(units)
        except Exception as err:
            if isolate and len(batch) > 1:
                await asyncio.gather(*(self._dispatch([p], units_of, call, account, isolate=False) for p in batch))
                return
            self._resolve(batch, error=err)
            return
        except BaseException as err:  # cancellation: wake the waiting searches, then propagate
            self._resolve(batch, error=err)
            raise
        elapsed = time.perf_counter() - started
        if len(results) != len(units):
            self._resolve(batch, error=RuntimeError(f"{len(results)} results for {len(units)} requests"))
            return
        account(self.totals, results, elapsed)  # the engine's totals count each call once
        offset = 0
        for p in batch:
            mine = results[offset : offset + len(units_of(p))]
            offset += len(mine)
            account(p.counters, mine, elapsed)
            self._resolve([p], result=mine)

    def _resolve(self, batch: list[Any], *, result: Any = None, error: BaseException | None = None) -> None:
        for p in batch:
            self._unblock(p.search_id)
            if p.future.done():
                continue
            if error is not None:
                p.future.set_exception(error)
            else:
                p.future.set_result(result)

    # -- running searches -----------------------------------------------------------------------
    def make_context(self, problem: Problem, strategy: SearchStrategy, budget: Budget) -> SearchContext:
        config = strategy.config
        prompt = self.generator.chat_prompt(problem.question, config.system_prompt)
        self._check_context(prompt)
        return SearchContext(
            problem,
            config,
            generate=self._submit_generate,
            score=self._submit_score if self.scorer is not None else None,
            prompt=prompt,
            scorer_identity=self.scorer.identity if self.scorer is not None else None,
            scorer_value_kind=self.scorer.value_kind if self.scorer is not None else "probability",
            grader=self.grader,
            budget=budget,
            strategy_name=strategy.name,
            node_defaults=getattr(strategy, "node_defaults", None),  # optional: its own node statistics
            want_logprobs=bool(getattr(strategy, "wants_logprobs", lambda: False)()),  # optional (MCTS priors)
            top_logprobs=int(getattr(self.scorer, "top_logprobs", 0) or 0),  # optional (the confidence scorer)
        )

    def _check_context(self, prompt: tuple[str, tuple[int, ...] | None]) -> None:
        """Refuse a prompt the model cannot read (a backend that knows its context says so with
        ``max_context``): the model would otherwise run past its positions and write garbage."""
        limit = getattr(self.generator, "max_context", None)
        if not limit:
            return
        text, ids = prompt
        tokens = len(ids) if ids is not None else self.generator.count_tokens(text)
        if tokens >= limit:
            raise PromptTooLong(f"the prompt is {tokens:,} tokens, but the model reads at most {limit:,} (its "
                                "context): shorten the question or use a model with a longer context")

    async def search_one(self, problem: Problem, strategy: SearchStrategy) -> SearchResult:
        search_id = next(self._ids)
        _search_id.set(search_id)
        self._live.add(search_id)
        started = time.perf_counter()
        try:
            budget = strategy.make_budget()
            budget.time_limit = strategy.config.time_limit
            budget.start()
            ctx = self.make_context(problem, strategy, budget)
            try:
                result = await strategy.search(problem, ctx)
            except BudgetExhausted as err:  # the strategy did not handle it: return the best so far
                ctx.budget.cut_short = True
                result = await ctx.finish(ctx.candidates())
                result.cut_reason = str(err)
            result.counters.wall_time = time.perf_counter() - started
            result.cut_short = result.cut_short or ctx.budget.cut_short
            return result
        finally:
            self._live.discard(search_id)
            self._schedule_flush_check()

    async def run(
        self,
        problems: Sequence[Problem],
        strategy: SearchStrategy,
        on_result: OnResult | None = None,
    ) -> list[SearchResult | BaseException]:
        """Search every problem with ``strategy`` (and the settings it holds), at most
        ``concurrency`` at once. A failing problem yields its exception in place of a result; the
        others carry on. ``on_result`` is called as each problem finishes (for progress bars and
        record writing)."""
        gate = asyncio.Semaphore(self.concurrency)
        started = time.perf_counter()
        if any(p.answer is not None for p in problems):
            self.grader.warm()  # workers start while the first batch generates

        async def one(problem: Problem) -> SearchResult | BaseException:
            async with gate:
                try:
                    outcome: SearchResult | BaseException = await self.search_one(problem, strategy)
                except Exception as err:
                    outcome = err
            if on_result is not None:
                if isinstance(outcome, SearchResult):
                    on_result(problem, outcome, None)
                else:
                    on_result(problem, None, outcome)
            return outcome

        try:
            return await asyncio.gather(*(asyncio.create_task(one(p), context=contextvars.copy_context())
                                          for p in problems))
        finally:
            self.totals.wall_time += time.perf_counter() - started

    async def aclose(self) -> None:
        await self.generator.aclose()
        if self.scorer is not None:
            await self.scorer.aclose()
