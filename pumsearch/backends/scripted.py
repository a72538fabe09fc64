"""A scripted generator: exact, fast, no model. For strategy tests and engine benchmarks.

It follows the Generator protocol exactly, but text comes from a Python function:
``policy(question, steps_so_far, rng) -> str`` returns the continuation of the prefix (it may
contain several steps; the generator cuts it at the stop string, as a real backend would, or at
``max_tokens`` words). The prompt is ``<question>\\n`` followed by the steps, each ended by the
step delimiter, so the steps so far can be read back from a request's text. A token is a
whitespace-separated word. End of sequence is reached when the policy's text ends with no stop
string left in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest

Policy = Callable[[str, tuple[str, ...], np.random.Generator], str]


def counting_policy(steps: int = 4, answers: Sequence[str] = ("1", "2", "3")) -> Policy:
    """A policy that writes ``steps`` numbered steps, then a boxed answer drawn from ``answers``."""

    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        rest = [f"Step {i + 1}: value {int(rng.integers(0, 100))}." for i in range(len(done), steps)]
        rest.append(f"The answer is \\boxed{{{answers[int(rng.integers(0, len(answers)))]}}}.")
        return "\n\n".join(rest)

    return policy


class ScriptedGenerator:
    takes_token_ids = False
    samples_reproducible = True

    def __init__(self, policy: Policy | None = None, *, delimiter: str = "\n\n", name: str = "scripted",
                 delay: float = 0.0) -> None:
        self.policy = policy or counting_policy()
        self.delay = delay  # seconds per generate call, so tests can interrupt a run mid-way
        self.delimiter = delimiter
        self.name = name
        self.calls: list[list[GenerationRequest]] = []  # every backend call, for tests

    def chat_prompt(self, question: str, system_prompt: str | None) -> tuple[str, tuple[int, ...] | None]:
        return f"<question>{question}</question>\n", None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def parse_prompt(self, prompt_text: str) -> tuple[str, tuple[str, ...]]:
        head, _, body = prompt_text.partition("</question>\n")
        question = head.removeprefix("<question>")
        steps = tuple(body.split(self.delimiter)[:-1]) if body else ()
        return question, steps

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        if self.delay:
            await asyncio.sleep(self.delay)
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> GenerationOutput:
        question, steps = self.parse_prompt(request.prompt_text)
        completions = []
        for j in range(request.n):
            rng = np.random.default_rng([request.seed or 0, j])
            completions.append(self._complete(self.policy(question, steps, rng), request))
        return GenerationOutput(completions, prompt_tokens=self.count_tokens(request.prompt_text) * request.n)

    def _complete(self, text: str, request: GenerationRequest) -> Completion:
        finish, matched = "eos", None
        for stop in request.params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish, matched = text[:cut], "step", stop
                break
        words = text.split(" ")
        if len(text.split()) > request.params.max_tokens:
            text = " ".join(words[: request.params.max_tokens])
            finish, matched = "length", None
        return Completion(text=text, token_ids=None, num_tokens=max(len(text.split()), 1),
                          finish_reason=finish, matched_stop=matched)

    async def aclose(self) -> None:
        pass
