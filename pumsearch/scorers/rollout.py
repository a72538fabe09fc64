"""Monte-Carlo prefix gain, the quantity a PUM is trained to predict. Expensive: labelled as such.

For a prefix p of problem x and each student model s (one or more generators, weak to strong):
k continuations from p, graded against the reference answer, give the solve rate q_s(x, p); the
same from the empty prefix gives q_s(x, empty), computed once per problem and student and cached.
The value is the mean over students of q_s(x, p) - q_s(x, empty), in [-1, 1] (``unbounded``: it
is normalised per problem before votes and PUCT). The paper standardises each student's gain
profile before averaging; that needs every prefix of a problem, so here the raw gains are kept
per student in ``Score.extra["students"]`` for later analysis.

A complete prefix needs no rollouts: its solve rate is 1 or 0 by grading its own answer.

This scorer implements ``ascore_batch`` (see scorers/base.py): the wrapper hands it every unique,
uncached item of a call and it sends one ``generate`` call per student with all of them, so the
generators batch the rollouts themselves and nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.hf import DEFAULT_SYSTEM_PROMPT
from pumsearch.search.grading import Grader, default_grader, extract_answer
from pumsearch.search.protocols import GenerationRequest, Generator, SamplingParams, Score, ScoreItem


@dataclass(frozen=True)
class RolloutSettings:
    k: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0


class RolloutScorer:
    value_kind = "unbounded"
    needs_reference = True

    def __init__(
        self,
        students: Sequence[Generator],
        *,
        settings: RolloutSettings | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        step_delimiter: str = "\n\n",
        grader: Grader | None = None,
    ) -> None:
        if not students:
            raise ScorerError("the rollout scorer needs at least one student model (--scorer-model A,B,...)")
        self.students = list(students)
        self.settings = settings or RolloutSettings()
        if self.settings.k < 1:
            raise ScorerError(f"rollout k must be at least 1, got {self.settings.k}")
        self.system_prompt = system_prompt
        self.step_delimiter = step_delimiter
        self.grader = grader or default_grader()
        s = self.settings
        self.identity = (
            f"rollout:{','.join(g.name for g in self.students)}:k={s.k}:t={s.temperature}"
            f":p={s.top_p}:max={s.max_tokens}:seed={s.seed}"
        )
        self._baselines: dict[tuple[str, str | None, int], float] = {}

    # -- requests -------------------------------------------------------------------------------
    def _prompt(self, student: Generator, item: ScoreItem) -> str:
        prompt, _ = student.chat_prompt(item.problem.question, self.system_prompt)
        if not item.steps:
            return prompt
        return prompt + self.step_delimiter.join(item.steps) + self.step_delimiter

    def _seed(self, student_index: int, item: ScoreItem) -> int:
        text = "\x1f".join([str(self.settings.seed), str(student_index), item.problem.question, *item.steps])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF

    def _request(self, student_index: int, item: ScoreItem) -> GenerationRequest:
        s = self.settings
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, stop=())
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
        rolled = list(dict.fromkeys([i for i in items if not i.complete] + todo_base))
        outputs = await self.students[s].generate([self._request(s, i) for i in rolled]) if rolled else []
        texts: list[list[str]] = []
        for item, out in zip(rolled, outputs, strict=True):
            head = self.step_delimiter.join(item.steps) + self.step_delimiter if item.steps else ""
            texts.append([head + c.text for c in out.completions])
        pairs = [
            (extract_answer(t), i.problem.answer) for i, ts in zip(rolled, texts, strict=True) for t in ts
        ]
        finished = [i for i in items if i.complete]
        pairs += [(extract_answer(self.step_delimiter.join(i.steps)), i.problem.answer) for i in finished]
        verdicts = await asyncio.to_thread(self.grader.grade_many, pairs) if pairs else []
        rate_of: dict[ScoreItem, float] = {}
        tokens_of: dict[ScoreItem, int] = {}
        cursor = 0
        for item, out in zip(rolled, outputs, strict=True):
            n = len(out.completions)
            rate_of[item] = sum(verdicts[cursor : cursor + n]) / max(n, 1)
            tokens_of[item] = sum(c.num_tokens for c in out.completions)
            cursor += n
        for item in finished:
            rate_of[item], tokens_of[item] = float(verdicts[cursor]), 0
            cursor += 1
        for e in todo_base:
            self._baselines[(e.problem.question, e.problem.answer, s)] = rate_of[e]
        return [rate_of[i] for i in items], [tokens_of[i] for i in items]

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
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
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
        from pumsearch.backends import load_generator

        names = [n.strip() for n in model.split(",") if n.strip()]
        students = [load_generator(None if n == "embedded" else n, device=device, dtype=dtype) for n in names]
    settings = RolloutSettings(
        k=int(k),
        temperature=float(temperature),
        top_p=float(top_p),
        max_tokens=int(max_tokens),
        seed=int(seed),
    )
    return RolloutScorer(
        students, settings=settings, system_prompt=system_prompt, step_delimiter=step_delimiter, grader=grader
    )
