"""SearchContext: everything a strategy may touch while it searches one problem.

A strategy sees only this object: ``expand`` and ``score`` (which the engine batches across all
live searches), the ``budget``, a seeded ``rng``, the ``tree``, and the helpers that turn finished
solutions into one answer. See docs/strategies.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from pumsearch.search.budget import Budget, BudgetExhausted, Counters
from pumsearch.search.config import SearchConfig
from pumsearch.search.grading import Grader, extract_answer, last_boxed
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
    Score,
    ScoreItem,
    ValueKind,
)
from pumsearch.search.result import SearchResult
from pumsearch.search.selection import (
    Candidate,
    Choice,
    aggregate_steps,
    choose,
    classify_answers,
    normalise_per_problem,
)
from pumsearch.search.tree import ROOT, SearchTree

GenerateFn = Callable[[list[GenerationRequest], Counters], Awaitable[list[GenerationOutput]]]
ScoreFn = Callable[[list[ScoreItem], Counters], Awaitable[list[Score]]]


class LogprobsUnavailable(ValueError):
    """The scorer reads the policy's per-token log-probabilities, and the backend returned none."""


def token_confidence(top: Sequence[tuple[int, float]]) -> float:
    """DeepConf's token confidence: C = -(1/k) * the sum of the k largest log-probabilities at a token
    (facebookresearch/deepconf deepconf/utils.py:41-50, processors.py:29-34), here the (token id,
    log-probability) pairs the backend returned, of the model's raw distribution; 0 for none."""
    return -sum(value for _, value in top) / len(top) if top else 0.0


def problem_seed(run_seed: int, problem_id: str) -> np.random.SeedSequence:
    """Each problem's randomness depends only on the run seed and its id, never on batch mates."""
    return np.random.SeedSequence([run_seed & 0xFFFFFFFF, *problem_id.encode("utf-8")])


class SearchContext:
    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        *,
        generate: GenerateFn,
        score: ScoreFn | None,
        prompt: tuple[str, tuple[int, ...] | None],
        scorer_identity: str | None = None,
        scorer_value_kind: ValueKind = "probability",
        grader: Grader | None = None,
        budget: Budget | None = None,
        strategy_name: str | None = None,
        node_defaults: Mapping[str, Any] | None = None,
        want_logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> None:
        self.problem = problem
        self.config = config
        self.strategy_name = strategy_name or config.strategy  # what the result names the strategy
        self.tree = SearchTree(problem, node_defaults=node_defaults)
        self.budget = budget or Budget(limit=config.budget)
        self.rng = np.random.default_rng(problem_seed(config.seed, problem.id))
        self.counters = Counters()
        self.scorer_identity = scorer_identity
        self.scorer_value_kind = scorer_value_kind
        self._generate = generate
        self._score = score
        self._prompt_text, self._prompt_ids = prompt
        self._grader = grader
        # what the strategy (MCTS priors: each step's log-probability) and the scorer (confidence:
        # the top-k per token) need from the backend; nothing is asked for when neither does
        self.top_logprobs = top_logprobs
        self.want_logprobs = want_logprobs or top_logprobs > 0

    @property
    def has_scorer(self) -> bool:
        return self._score is not None

    # -- generation -----------------------------------------------------------------------------
    def _prefix_tokens(self, node: int) -> int:
        return sum(self.tree[n]["num_tokens"] for n in self.tree.path(node))

    def _request_for(self, node: int, k: int, max_tokens: int, stop: tuple[str, ...],
                     temperature: float | None = None) -> GenerationRequest:
        delim = self.config.step_delimiter
        steps = self.tree.steps(node)
        text = self._prompt_text + "".join(step + delim for step in steps)
        ids = None
        if self._prompt_ids is not None:
            prefix_ids = self.tree.prefix_token_ids(node)
            if prefix_ids is not None:
                ids = self._prompt_ids + tuple(prefix_ids)
        params = SamplingParams(
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p,
            max_tokens=max_tokens,
            stop=stop,
            want_logprobs=self.want_logprobs,
            top_logprobs=self.top_logprobs,
        )
        seed = int(self.rng.integers(0, 2**62))
        return GenerationRequest(prompt_text=text, prompt_ids=ids, n=k, params=params, seed=seed)

    async def expand(
        self,
        nodes: Sequence[int],
        k: int | Sequence[int],
        until: Literal["step", "end"] = "step",
        *,
        temperature: float | None = None,
    ) -> list[list[int]]:
        """Sample ``k`` continuations of each node: one more step each, or (``until="end"``) a whole
        solution each, stored as a chain of step nodes. ``k`` is one count for every node or one
        count per node; a node may appear more than once (each occurrence is its own request).
        Returns, per input position, the new node ids (for "end", the leaves). Charges ``k``
        units per node that still has room under --max-tokens (a node without room is marked
        terminal instead); raises BudgetExhausted, expanding nothing, when the charge would
        exceed the budget. ``temperature`` overrides the configured one (e.g. greedy lookahead)."""
        counts = [k] * len(nodes) if isinstance(k, int) else [int(c) for c in k]
        if len(counts) != len(nodes):
            raise ValueError(f"got {len(counts)} counts for {len(nodes)} nodes")
        if any(c < 1 for c in counts):
            raise ValueError("k must be at least 1")
        open_idx = [i for i, n in enumerate(nodes) if self._remaining_tokens(n) > 0]
        self.budget.charge(sum(counts[i] for i in open_idx), self.counters.generated_tokens)
        for n in set(nodes) - {nodes[i] for i in open_idx}:  # no room left under --max-tokens: it ends here
            self._mark_terminal(n, "length")
        requests = []
        for i in open_idx:
            remaining = self._remaining_tokens(nodes[i])
            if until == "step":
                stop = (self.config.step_delimiter,)
                step_cap = min(self.config.max_step_tokens, remaining)
                requests.append(self._request_for(nodes[i], counts[i], step_cap, stop, temperature))
            else:
                requests.append(self._request_for(nodes[i], counts[i], remaining, (), temperature))
        outputs = await self._generate(requests, self.counters) if requests else []
        new_by_index: list[list[int]] = [[] for _ in nodes]
        for i, output in zip(open_idx, outputs, strict=True):
            for completion in output.completions:
                if until == "step":
                    new_by_index[i].append(self._add_step(nodes[i], completion))
                else:
                    new_by_index[i].append(self._add_solution(nodes[i], completion))
        return new_by_index

    async def sample(self, prefixes: Sequence[tuple[str, Sequence[int] | None]], k: int, *,
                     max_tokens: int | None = None, stop: tuple[str, ...] = (),
                     charge: bool = True) -> list[list[Completion]]:
        """Sample ``k`` continuations of the prompt followed by each of ``prefixes``: arbitrary
        assistant text (it may end mid-step) with, where known, its token ids in this backend's
        tokenizer (used when the backend takes ids, so it continues from exactly those tokens).
        One engine submission, so it batches with every live search; the tree is not touched.
        Charges ``k`` budget units per prefix unless ``charge`` is False. For rollouts and labelling
        jobs (pumsearch.pum.label)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        if charge:
            self.budget.charge(k * len(prefixes), self.counters.generated_tokens)
        params = SamplingParams(temperature=self.config.temperature, top_p=self.config.top_p,
                                max_tokens=max_tokens or self.config.max_tokens, stop=stop)
        requests = []
        for text, prefix_ids in prefixes:
            ids = None
            if self._prompt_ids is not None and (prefix_ids is not None or not text):
                ids = self._prompt_ids + tuple(prefix_ids or ())
            seed = int(self.rng.integers(0, 2**62))
            requests.append(GenerationRequest(prompt_text=self._prompt_text + text, prompt_ids=ids, n=k,
                                              params=params, seed=seed))
        outputs = await self._generate(requests, self.counters) if requests else []
        return [out.completions for out in outputs]

    def _remaining_tokens(self, node: int) -> int:
        return self.config.max_tokens - self._prefix_tokens(node)

    def _add_step(self, parent: int, completion: Completion) -> int:
        text = completion.text.strip("\n") if completion.finish_reason != "step" else completion.text
        node = self.tree.add_child(
            parent,
            text,
            finish_reason=completion.finish_reason,
            num_tokens=completion.num_tokens,
            token_ids=completion.token_ids,
            logprob=completion.logprob,
            **self._token_values(completion),
        )
        ends = completion.finish_reason in ("eos", "length") or (
            self.config.stop_at_boxed and last_boxed(completion.text) is not None
        )
        if ends or self.tree[node]["depth"] >= self.config.max_depth:
            self._mark_terminal(node, completion.finish_reason)
        return node

    def _add_solution(self, parent: int, completion: Completion) -> int:
        """A whole solution becomes a chain of step nodes, split at the step delimiter. Token ids
        are kept on the chain only when the solution is one step (splitting ids by text is lossy);
        token counts are shared out by characters."""
        pieces = [p for p in completion.text.split(self.config.step_delimiter) if p.strip()] or [""]
        total_chars = sum(len(p) for p in pieces) or 1
        values = self._token_values(completion)
        node = parent
        assigned = 0
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            share = round(completion.num_tokens * len(piece) / total_chars)
            tokens = completion.num_tokens - assigned if last else share
            node = self.tree.add_child(
                node,
                piece.strip("\n"),
                finish_reason=completion.finish_reason if last else "step",
                num_tokens=tokens,
                token_ids=completion.token_ids if len(pieces) == 1 else None,
                logprob=completion.logprob if last else None,
                # shared out like the token count, so the chain holds every token's values once
                **{key: v[assigned:] if last else v[assigned : assigned + tokens] for key, v in values.items()},
            )
            assigned += tokens
        self._mark_terminal(node, completion.finish_reason)
        return node

    def _token_values(self, completion: Completion) -> dict[str, list[float]]:
        """When the scorer reads the policy's token values (the confidence scorer): each generated
        token's confidence (``token_confidence``) and the log-probability of the token sampled, as
        node attributes; else none. Rounded to 6 decimals to keep tree files small."""
        if not self.top_logprobs:
            return {}
        if completion.top_logprobs is None or completion.token_logprobs is None:
            raise LogprobsUnavailable(
                "the backend returned no per-token top log-probabilities, which the scorer reads (the "
                "confidence scorer): use a server that returns them (docs/backends.md) or --backend transformers")
        return {"token_confidences": [round(token_confidence(top), 6) for top in completion.top_logprobs],
                "token_logprobs": [round(v, 6) for v in completion.token_logprobs]}

    def path_values(self, node: int, key: str) -> tuple[float, ...] | None:
        """The per-token values ``key`` (``token_confidences``, ``token_logprobs``) of the prefix
        ending at ``node``, in generation order (None where a step has none)."""
        out: list[float] = []
        for n in self.tree.path(node):
            values = self.tree[n].get(key)
            if values is None:
                return None
            out.extend(values)
        return tuple(out)

    def _mark_terminal(self, node: int, reason: str | None) -> None:
        attrs = self.tree[node]
        attrs["terminal"] = True
        if attrs["finish_reason"] is None and node != ROOT:
            attrs["finish_reason"] = reason
        attrs["answer"] = extract_answer(self.config.step_delimiter.join(self.tree.steps(node)))

    # -- scoring --------------------------------------------------------------------------------
    async def score(self, nodes: Sequence[int]) -> list[Score]:
        """Score the prefixes ending at ``nodes`` (one batched call across live searches). The
        values are stored on the nodes under the scorer's identity."""
        if self._score is None:
            raise RuntimeError("this search has no scorer; pass --scorer")
        self.budget.check_time()
        items = [
            ScoreItem(self.problem, self.tree.steps(n), complete=bool(self.tree[n]["terminal"]),
                      token_confidences=self.path_values(n, "token_confidences") if self.top_logprobs else None,
                      token_logprobs=self.path_values(n, "token_logprobs") if self.top_logprobs else None)
            for n in nodes
        ]
        scores = await self._score(items, self.counters) if items else []
        for node, score in zip(nodes, scores, strict=True):
            self.tree[node]["scores"][self.scorer_identity] = score.value
            if score.step_values is not None:
                self.tree[node]["step_scores"][self.scorer_identity] = list(score.step_values)
        return scores

    def node_score(self, node: int) -> float | None:
        """The node's aggregated score under --aggregate, or None if it was never scored."""
        attrs = self.tree[node]
        if self.scorer_identity not in attrs["scores"]:
            return None
        step_values = attrs["step_scores"].get(self.scorer_identity)
        return aggregate_steps(step_values, attrs["scores"][self.scorer_identity], self.config.aggregate)

    def normalise(self, values: Sequence[float]) -> list[float]:
        return normalise_per_problem(values, self.scorer_value_kind)

    # -- answers --------------------------------------------------------------------------------
    def candidates(self, nodes: Sequence[int] | None = None) -> list[Candidate]:
        nodes = self.tree.terminals() if nodes is None else nodes
        return [Candidate(n, self.tree[n]["answer"], self.node_score(n)) for n in nodes]

    async def classify(self, candidates: Sequence[Candidate]) -> None:
        """Sort the candidates' answers into vote classes (math-verify equivalence, in the grading
        workers), as ``finish`` does; without a grader they stay unclassified and votes group them
        by normalised string. For strategies that look at the vote while they search."""
        if self._grader is not None:
            await asyncio.to_thread(classify_answers, candidates, self._grader)

    def default_select(self) -> str:
        return self.config.select or ("best" if self.has_scorer else "majority")

    async def finish(self, candidates: Sequence[Candidate], select: str | None = None, *,
                     chosen_node: int | None = None, keep: float = 1.0) -> SearchResult:
        """Pick the answer among ``candidates``, grade finished solutions where the reference is
        known, and build the result (the whole tree included). ``chosen_node`` (one of the
        candidates' nodes) is a strategy's own pick, e.g. MCTS's most-visited path; it
        overrides ``select``. ``keep`` < 1: a vote counts only the top fraction of the scored
        candidates (see search.selection.choose)."""
        how = select or self.default_select()
        if how in ("best", "weighted") and not self.has_scorer:
            how = "majority"
        await self.classify(candidates)
        forced = [c for c in candidates if c.node == chosen_node] if chosen_node is not None else []
        choice = Choice(forced[0]) if forced else choose(list(candidates), how, self.scorer_value_kind, keep)
        chosen = choice.candidate
        await self.grade_terminals()
        for cand in candidates:
            cand.correct = self.tree[cand.node]["correct"]
        result = SearchResult(
            problem=self.problem,
            strategy=self.strategy_name,
            tree=self.tree,
            answer=chosen.answer if chosen else None,
            chosen_node=chosen.node if chosen else None,
            candidates=list(candidates),
            counters=self.counters,
            cut_short=self.budget.cut_short,
            selection_note=choice.note,
        )
        if self.problem.answer is not None:  # no answer at all to a problem with a reference is wrong
            result.correct = chosen is not None and bool(self.tree[chosen.node]["correct"])
        return result

    async def grade_terminals(self) -> None:
        if self.problem.answer is None or self._grader is None:
            return
        todo = [n for n in self.tree.terminals() if self.tree[n]["correct"] is None]
        answers = [self.tree[n]["answer"] for n in todo]
        verdicts = await self._grade_many(answers)
        for node, ok in zip(todo, verdicts, strict=True):
            self.tree[node]["correct"] = ok

    async def _grade_many(self, answers: list[str | None]) -> list[bool]:
        assert self._grader is not None
        ref = self.problem.answer
        return await asyncio.to_thread(self._grader.grade_many, [(a, ref) for a in answers])

    async def grade(self, node: int) -> bool | None:
        """Ground truth for one finished prefix (None when the reference is unknown)."""
        if self.problem.answer is None or self._grader is None:
            return None
        if self.tree[node]["correct"] is None:
            (ok,) = await self._grade_many([self.tree[node]["answer"]])
            self.tree[node]["correct"] = ok
        return self.tree[node]["correct"]


__all__ = ["BudgetExhausted", "LogprobsUnavailable", "SearchContext", "token_confidence"]
