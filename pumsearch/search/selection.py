"""Turning step scores into solution scores, and candidates into one answer.

Normalisation (the one documented way): values of ``probability`` scorers are used as they are;
``unbounded`` values (the PUM's) are min-max scaled over the candidates of one problem into [0, 1]
(all equal -> 1.0), so that votes and PUCT see non-negative, comparable weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pumsearch.search.grading import normalise_answer
from pumsearch.search.protocols import ValueKind


def aggregate_steps(step_values: Sequence[float] | None, value: float, how: str) -> float:
    """One score for a solution from its per-step values (``value`` when there are none)."""
    if not step_values:
        return value
    if how == "last":
        return float(step_values[-1])
    if how == "min":
        return float(min(step_values))
    if how == "prod":
        return float(math.prod(step_values))
    if how == "mean":
        return float(sum(step_values) / len(step_values))
    raise ValueError(f"unknown aggregate {how!r}: use last, min, prod or mean")


def normalise_per_problem(values: Sequence[float], kind: ValueKind) -> list[float]:
    if kind == "probability" or not values:
        return [float(v) for v in values]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return [1.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


@dataclass
class Candidate:
    """A finished solution: its leaf node, extracted answer and aggregated score."""

    node: int
    answer: str | None
    score: float | None = None
    correct: bool | None = None


def select_candidate(candidates: Sequence[Candidate], how: str, kind: ValueKind = "probability") -> Candidate | None:
    """best: highest score; majority: most frequent answer; weighted: highest sum of normalised
    scores per distinct answer. Answers compare by their normalised string. Ties go to the
    candidate seen first; within the winning answer, the best-scored candidate is returned."""
    if not candidates:
        return None
    scores = [c.score if c.score is not None else 0.0 for c in candidates]
    if how == "best":
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
        return candidates[best]
    weights = [1.0] * len(candidates) if how == "majority" else normalise_per_problem(scores, kind)
    if how not in ("majority", "weighted"):
        raise ValueError(f"unknown select {how!r}: use best, majority or weighted")
    totals: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        key = normalise_answer(cand.answer)
        if key is None:
            continue
        totals[key] = totals.get(key, 0.0) + weights[i]
        first_seen.setdefault(key, i)
    if not totals:  # nobody stated an answer: fall back to the best-scored candidate
        return select_candidate(candidates, "best", kind)
    winner = max(totals, key=lambda k: (totals[k], -first_seen[k]))
    members = [i for i, c in enumerate(candidates) if normalise_answer(c.answer) == winner]
    return candidates[max(members, key=lambda i: (scores[i], -i))]
