"""A problem to search over: a question, optionally its reference answer."""

from __future__ import annotations

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
