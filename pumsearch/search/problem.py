"""A problem to search over: a question, optionally its reference answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One question. ``answer`` is the reference answer when known (needed by the verifier)."""

    id: str
    question: str
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("the question is empty: give the problem text to solve")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": self.answer, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(
            id=str(data["id"]),
            question=data["question"],
            answer=data.get("answer"),
            metadata=dict(data.get("metadata") or {}),
        )


def require_answers(problems: Problem | Sequence[Problem], *, who: str, fix: str,
                    error: Callable[[str], Exception] = ValueError) -> None:
    """Refuse, before anything runs, what grades against reference answers (``who``: a scorer that
    needs them, the verifier as MCTS's terminal reward) where a problem has none. ``problems``: one
    question, or a data set (the message then counts the problems without one); ``fix`` says what
    to pass."""
    if isinstance(problems, Problem):
        if problems.answer is None:
            raise error(f"{who} needs the reference answer: {fix}")
        return
    missing = [p.id for p in problems if p.answer is None]
    if missing:
        raise error(f"{who} needs reference answers, but {len(missing)} problem(s) have none "
                    f"(first: {missing[0]!r}); {fix}")
