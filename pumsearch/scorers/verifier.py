"""The ground-truth verifier: 1.0 when a finished prefix's answer matches the reference, else 0.0.

It is the outcome oracle (it needs the reference answer). An unfinished prefix scores by
whatever answer it already states, usually none, so 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

from pumsearch.search.grading import Grader, default_grader, extract_answer
from pumsearch.search.protocols import Score, ScoreItem


class VerifierScorer:
    identity = "verifier"
    value_kind = "probability"
    needs_reference = True

    def __init__(self, grader: Grader | None = None, step_delimiter: str = "\n\n") -> None:
        self.grader = grader or default_grader()
        self.step_delimiter = step_delimiter

    def count_tokens(self, item: ScoreItem) -> int:
        return 1  # no model runs; batches are bounded by item count

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        answers = [extract_answer(self.step_delimiter.join(item.steps)) for item in items]
        pairs = [(a, item.problem.answer) for a, item in zip(answers, items, strict=True)]
        verdicts = self.grader.grade_many(pairs)
        return [Score(float(ok), None, {"answer": a}) for ok, a in zip(verdicts, answers, strict=True)]

    def close(self) -> None:
        pass
