"""Monte-Carlo prefix gain, the quantity a PUM is trained to predict. Expensive: labelled as such.

For a prefix p of problem x and each student model s (one or more generators, weak to strong):
k continuations from p, graded against the reference answer, give the solve rate q_s(x, p); the
same from the empty prefix gives q_s(x, empty), computed once per problem and student and cached.
The value is the mean over students of q_s(x, p) - q_s(x, empty), in [-1, 1] (``unbounded``: it
is normalised per problem before votes and PUCT). The paper standardises each student's gain
profile before averaging; that needs every prefix of a problem, so here the raw gains are kept
per student in ``Score.extra["students"]`` for later analysis.

A complete prefix needs no rollouts: its solve rate is 1 or 0 by grading its own answer.

``token_cap``: ``continuation`` (default) gives every rollout ``max_tokens`` of its own;
``solution`` makes prefix and rollout share them, as a search caps a whole solution (--max-tokens):
a rollout after a prefix of L tokens (the student's tokenizer) gets ``max_tokens`` - L, and a prefix
with no room left is graded by its own text. Under a tight cap, a prefix that wastes tokens (a
testbed detour) is then worth less, as it is to the search. ``pum label --token-cap`` is the same
choice for labelling.

This scorer implements ``ascore_batch`` (see scorers/base.py): the wrapper hands it every unique,
uncached item of a call and it sends one ``generate`` call per student with all of them, so the
generators batch the rollouts themselves and nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pumsearch.registry import BACKENDS
from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.hf import SCORER_SYSTEM_PROMPT
from pumsearch.search.grading import Grader, default_grader, extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import (
    Completion,
    GenerationRequest,
    Generator,
    SamplingParams,
    Score,
    ScoreItem,
)


@dataclass
class RolloutPrefix:
    """A prefix whose solve rate is wanted. ``text`` is what a continuation extends: answers are read
    from ``text`` + the continuation. A ``complete`` prefix is a finished solution, graded by its own
    answer with no rollouts. ``token_ids``: the prefix in the student's tokenizer, where known."""

    problem: Problem
    text: str
    complete: bool = False
    token_ids: Sequence[int] | None = None


@dataclass(frozen=True)
class SolveRate:
    rate: float  # share of the rollouts (or the finished answer) graded right
    rollouts: int
    tokens: int  # tokens the rollouts generated


Sampler = Callable[[list[RolloutPrefix]], Awaitable[list[list[Completion]]]]


async def solve_rates(prefixes: Sequence[RolloutPrefix], sample: Sampler, grader: Grader) -> list[SolveRate]:
    """The solve rate q(x, p) of each prefix against its problem's reference answer: the share of the
    continuations ``sample`` draws (one call for every open prefix, in order) that reach a right
    answer; 1 or 0 for a complete prefix. Everything is graded in one call, off the event loop.
    The rollout scorer and PUM labelling both estimate solve rates here."""
    open_prefixes = [p for p in prefixes if not p.complete]
    drawn = await sample(open_prefixes) if open_prefixes else []
    if len(drawn) != len(open_prefixes):
        raise ScorerError(f"{len(open_prefixes)} prefixes were rolled out, but {len(drawn)} answers came back")
    pairs = [(extract_answer(p.text + c.text), p.problem.answer)
             for p, completions in zip(open_prefixes, drawn, strict=True) for c in completions]
    pairs += [(extract_answer(p.text), p.problem.answer) for p in prefixes if p.complete]
    verdicts = iter(await asyncio.to_thread(grader.grade_many, pairs) if pairs else [])
    rolled = iter([
        SolveRate(sum(next(verdicts) for _ in completions) / max(len(completions), 1), len(completions),
                  sum(c.num_tokens for c in completions))
        for completions in drawn
    ])
    return [SolveRate(float(next(verdicts)), 0, 0) if p.complete else next(rolled) for p in prefixes]


@dataclass(frozen=True)
class RolloutSettings:
    k: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    token_cap: str = "continuation"


TOKEN_CAPS = ("continuation", "solution")


class RolloutScorer:
    value_kind = "unbounded"
    needs_reference = True

    def __init__(
        self,
        students: Sequence[Generator],
        *,
        settings: RolloutSettings | None = None,
        system_prompt: str | None = SCORER_SYSTEM_PROMPT,
        step_delimiter: str = "\n\n",
        grader: Grader | None = None,
    ) -> None:
        if not students:
            raise ScorerError("the rollout scorer needs at least one student model (--scorer-model A,B,...)")
        self.students = list(students)
        self.settings = settings or RolloutSettings()
        if self.settings.k < 1:
            raise ScorerError(f"rollout k must be at least 1, got {self.settings.k}")
        if self.settings.token_cap not in TOKEN_CAPS:
            raise ScorerError(
                f"unknown rollout token_cap {self.settings.token_cap!r}: use one of {', '.join(TOKEN_CAPS)}"
            )
        self.system_prompt = system_prompt
        self.step_delimiter = step_delimiter
        self.grader = grader or default_grader()
        s = self.settings
        self.identity = (
            f"rollout:{','.join(g.name for g in self.students)}:k={s.k}:t={s.temperature}"
            f":p={s.top_p}:max={s.max_tokens}:seed={s.seed}"
            + (f":cap={s.token_cap}" if s.token_cap != "continuation" else "")
        )
        self._baselines: dict[tuple[str, str | None, int], float] = {}

    # -- requests -------------------------------------------------------------------------------
    def _prompt(self, student: Generator, item: ScoreItem) -> str:
        prompt, _ = student.chat_prompt(item.problem.question, self.system_prompt)
        return prompt + self._head(item)

    def _seed(self, student_index: int, item: ScoreItem) -> int:
        text = "\x1f".join([str(self.settings.seed), str(student_index), item.problem.question, *item.steps])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF

    def _tokens_left(self, student_index: int, item: ScoreItem) -> int:
        """What a rollout of ``item`` may generate: all of max_tokens, or (token_cap ``solution``)
        what the prefix leaves of them."""
        s = self.settings
        if s.token_cap == "continuation" or not item.steps:
            return s.max_tokens
        return s.max_tokens - self.students[student_index].count_tokens(self._head(item))

    def _request(self, student_index: int, item: ScoreItem, max_tokens: int) -> GenerationRequest:
        s = self.settings
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=max_tokens, stop=())
        return GenerationRequest(
            self._prompt(self.students[student_index], item),
            None,
            s.k,
            params,
            seed=self._seed(student_index, item),
        )

    # -- scoring --------------------------------------------------------------------------------
    async def ascore_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        for item in items:
            if item.problem.answer is None:
                raise ScorerError(f"{self.identity}: problem {item.problem.id!r} has no reference answer")
        empties = {(i.problem.question, i.problem.answer): ScoreItem(i.problem, ()) for i in items}
        rates = await asyncio.gather(
            *(self._student_rates(s, items, empties) for s in range(len(self.students)))
        )
        scores = []
        for index, item in enumerate(items):
            per_student = []
            for s, (item_rates, tokens) in enumerate(rates):
                base = self._baselines[(item.problem.question, item.problem.answer, s)]
                per_student.append(
                    {
                        "student": self.students[s].name,
                        "solve_rate": item_rates[index],
                        "baseline": base,
                        "gain": item_rates[index] - base,
                        "tokens": tokens[index],
                    }
                )
            gain = sum(p["gain"] for p in per_student) / len(per_student)
            scores.append(
                Score(
                    gain,
                    None,
                    {
                        "students": per_student,
                        "rollouts": self.settings.k * len(per_student),
                        "tokens": sum(p["tokens"] for p in per_student),
                    },
                )
            )
        return scores

    async def _student_rates(
        self, s: int, items: Sequence[ScoreItem], empties: dict[tuple[str, str | None], ScoreItem]
    ) -> tuple[list[float], list[int]]:
        """Solve rates of student ``s`` for ``items`` (its missing baselines computed on the way)."""
        todo_base = [e for key, e in empties.items() if (*key, s) not in self._baselines]
        open_items = list(dict.fromkeys([i for i in items if not i.complete] + todo_base))
        left = {i: self._tokens_left(s, i) for i in open_items}  # tokenises the prefix: once
        rolled = [i for i in open_items if left[i] > 0]
        rolling = set(rolled)
        # finished, or (token_cap "solution") out of room: graded by their own text
        finished = [i for i in items if i.complete or i not in rolling]
        asked = [RolloutPrefix(i.problem, self._head(i)) for i in rolled]
        asked += [RolloutPrefix(i.problem, self.step_delimiter.join(i.steps), complete=True) for i in finished]

        async def sample(open_prefixes: list[RolloutPrefix]) -> list[list[Completion]]:
            # the open prefixes are ``rolled``, in order: one generate call for all of them
            outputs = await self.students[s].generate([self._request(s, i, left[i]) for i in rolled])
            return [out.completions for out in outputs]

        rates = dict(zip(rolled + finished, await solve_rates(asked, sample, self.grader), strict=True))
        for e in todo_base:
            self._baselines[(e.problem.question, e.problem.answer, s)] = rates[e].rate
        return [rates[i].rate for i in items], [rates[i].tokens for i in items]

    def _head(self, item: ScoreItem) -> str:
        """The prefix as the text a continuation extends."""
        return self.step_delimiter.join(item.steps) + self.step_delimiter if item.steps else ""

    def close(self) -> None:
        pass


def load_rollout(
    model: str | None = None,
    *,
    students: Sequence[Generator] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    k: int = 4,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_tokens: int = 1024,
    seed: int = 0,
    token_cap: str = "continuation",
    system_prompt: str | None = SCORER_SYSTEM_PROMPT,
    step_delimiter: str = "\n\n",
    grader: Grader | None = None,
) -> RolloutScorer:
    """Students are Generator objects, or ``model``: comma-separated paths or hub names
    ("embedded" for the bundled SmolLM2), each loaded with the transformers backend."""
    if students is None:
        if not model:
            raise ScorerError(
                "the rollout scorer needs student models: pass --scorer-model A[,B,...] "
                "(paths, hub names or 'embedded')"
            )
        load = BACKENDS.get("transformers").resolve()  # registered by pumsearch.backends
        names = [n.strip() for n in model.split(",") if n.strip()]
        students = [load(None if n == "embedded" else n, device=device, dtype=dtype, cache_dir=None,
                         trust_remote_code=False) for n in names]
    settings = RolloutSettings(
        k=int(k),
        temperature=float(temperature),
        top_p=float(top_p),
        max_tokens=int(max_tokens),
        seed=int(seed),
        token_cap=str(token_cap),
    )
    return RolloutScorer(
        students, settings=settings, system_prompt=system_prompt, step_delimiter=step_delimiter, grader=grader
    )
