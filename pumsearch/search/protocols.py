"""The two protocols the engine drives: a Generator (backend) and a Scorer.

search/ knows no concrete backend or scorer; everything else talks to them through these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pumsearch.search.problem import Problem

FinishReason = Literal["step", "eos", "length"]
"""Why a completion ended: a step delimiter (stop string) matched, end of sequence, or a token cap."""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings for one request. Backends must set every field explicitly.

    ``want_logprobs`` asks for the log-probability of every generated token; ``top_logprobs``
    (implies it) for that many most likely alternatives at each token too. Both are of the
    model's raw distribution, before temperature and top-p (vLLM's default; see
    docs/backends.md for what each backend returns)."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    want_logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    """Continue one prompt ``n`` times.

    ``prompt_ids`` is used where the backend takes token ids (so the model sees exactly what it
    generated); ``prompt_text`` is the same prompt as text, for backends that only take text.
    ``seed`` makes the request's samples reproducible whatever else is in the batch.
    """

    prompt_text: str
    prompt_ids: tuple[int, ...] | None
    n: int
    params: SamplingParams
    seed: int | None = None


@dataclass
class Completion:
    """One sampled continuation. ``text`` excludes the matched stop string and the end-of-sequence
    token; ``token_ids`` are everything generated (stop tokens included) where known.

    Filled only when the request asked (SamplingParams.want_logprobs / top_logprobs) and the
    backend can: ``logprob`` is the sum over the generated tokens, ``token_logprobs`` one per
    token, ``top_logprobs`` per token the (token id, log-probability) pairs of the most likely
    tokens, most likely first."""

    text: str
    token_ids: list[int] | None
    num_tokens: int
    finish_reason: FinishReason
    matched_stop: str | None = None
    logprob: float | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class GenerationOutput:
    """All completions for one request, with the prompt's token counts (``prompt_tokens`` 0 where
    unknown; ``cached_tokens`` None where the server does not say how many it reused)."""

    completions: list[Completion]
    prompt_tokens: int = 0
    cached_tokens: int | None = 0
    retries: int = 0  # HTTP retries the backend needed for this output (server backends)
    requests_in_flight: int = 0  # peak requests in flight during the call that made it (server backends)


@runtime_checkable
class Generator(Protocol):
    """A generation backend. One ``generate`` call is one "backend call" in the counters."""

    name: str
    """Identifies the model, for records (e.g. a path or hub name)."""

    takes_token_ids: bool
    """True when prefixes are extended by token ids; False when by text."""

    def chat_prompt(self, question: str, system_prompt: str | None) -> tuple[str, tuple[int, ...] | None]:
        """The prompt with the open assistant turn, as text and (where possible) token ids."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (an estimate is fine for backends without a tokenizer)."""
        ...

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Run every request; the result is in request order."""
        ...

    async def aclose(self) -> None:
        """Release resources (threads, processes, connections)."""
        ...


@dataclass(frozen=True)
class ScoreItem:
    """A reasoning prefix to score: the problem (with reference answer when known) and its steps.

    ``token_confidences``: the policy's token confidence at each token it generated for the
    prefix, in order (DeepConf's C_i, see pumsearch.scorers.confidence), and ``token_logprobs``:
    the log-probability of each token it sampled; filled only for a scorer that asks for them (its
    ``top_logprobs``); None otherwise."""

    problem: Problem
    steps: tuple[str, ...]
    complete: bool = False
    token_confidences: tuple[float, ...] | None = None
    token_logprobs: tuple[float, ...] | None = None


@dataclass
class Score:
    """A scorer's verdict on a prefix: one ``value``; per-step values for step-level PRMs."""

    value: float
    step_values: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ValueKind = Literal["probability", "unbounded", "positive"]


@runtime_checkable
class Scorer(Protocol):
    """A batched scorer. The engine calls ``score`` with items from many searches at once.

    Optional: ``top_logprobs`` (an int, 0 when absent), the number of most likely tokens per
    generated token whose log-probabilities the scorer reads off the policy; a search asks its
    backend for them and fills ``ScoreItem.token_confidences`` and ``token_logprobs`` (the
    confidence scorer)."""

    identity: str
    """Kind, format and checkpoint, e.g. ``prm:qwen:/models/prm``; cache keys start with it."""

    value_kind: ValueKind
    """``probability`` values lie in [0, 1]; ``unbounded`` ones are normalised per problem
    before they enter a vote or PUCT (see search.selection.normalise_per_problem); ``positive``
    ones are 0 or more on a scale of their own (token confidence): votes weigh them as they are,
    PUCT normalises them like unbounded ones."""

    needs_reference: bool

    async def score(self, items: Sequence[ScoreItem]) -> list[Score]: ...

    async def aclose(self) -> None: ...
