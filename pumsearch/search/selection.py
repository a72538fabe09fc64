"""Turning step scores into solution scores, and candidates into one answer.

Normalisation (the one documented way): values of ``probability`` scorers are used as they are;
``unbounded`` values (the PUM's) are min-max scaled over the candidates of one problem into [0, 1]
(all equal -> 1.0), so that votes and PUCT see non-negative, comparable weights. ``positive``
values (token confidence) weigh votes as they are, as in DeepConf's confidence-weighted vote, and
are min-max scaled like unbounded ones for PUCT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pumsearch.search.grading import Grader, vote_key
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
    """Values on [0, 1]: probabilities as they are, the others min-max scaled (for PUCT)."""
    if kind == "probability" or not values:
        return [float(v) for v in values]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return [1.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


def vote_weights(values: Sequence[float], kind: ValueKind) -> list[float]:
    """Weights of a weighted vote: probabilities and positive values as they are, unbounded ones
    min-max scaled."""
    return [float(v) for v in values] if kind == "positive" else normalise_per_problem(values, kind)


def most_confident(scores: Sequence[float], keep: float) -> list[bool]:
    """Which of ``scores`` a filter keeping the top ``keep`` fraction keeps: those at or above the
    (1 - keep) quantile, linearly interpolated (np.percentile), as DeepConf's offline filter does
    (facebookresearch/deepconf deepconf/utils.py:170-178). Ties at the threshold are all kept."""
    if keep >= 1 or not scores:
        return [True] * len(scores)
    threshold = float(np.percentile(np.asarray(scores, dtype=np.float64), (1 - keep) * 100))
    return [s >= threshold for s in scores]


@dataclass
class Candidate:
    """A finished solution: its leaf node, extracted answer and aggregated score, and where its
    answer stands in a vote (``classify_answers``; both None until classified)."""

    node: int
    answer: str | None
    score: float | None = None
    correct: bool | None = None
    vote_class: int | None = None  # equivalence class of the answer; None: no answer, no vote
    parsed: bool | None = None  # math-verify read the answer (False: it votes as its string)


@dataclass(frozen=True)
class Choice:
    """The chosen candidate, and a note where the rule asked for could not apply as asked."""

    candidate: Candidate | None
    note: str | None = None


SELECTIONS = ("best", "majority", "weighted")
NO_ANSWER = "no candidate stated an answer: chosen by score, then order"
NONE_PARSED = "no answer could be parsed: chosen by score, then order"
NONE_SCORED = "no candidate was scored: chosen by order"
NO_WEIGHTS = "no answering candidate was scored: majority vote instead of weighted"
NONE_FILTERED = "no answering candidate was scored: every answer votes (no filter by score)"


def classify_answers(candidates: Sequence[Candidate], grader: Grader) -> None:
    """Set each candidate's vote class from the grader's equivalence classes (math-verify)."""
    classes = grader.answer_classes([c.answer for c in candidates])
    for cand, cls in zip(candidates, classes, strict=True):
        cand.vote_class, cand.parsed = cls.group, cls.parsed


def vote_classes(candidates: Sequence[Candidate]) -> list[int | None]:
    """The grader's classes where every candidate was classified, else (candidates built by hand,
    records written before classes were recorded) one class per normalised string."""
    if all(c.parsed is not None for c in candidates):
        return [c.vote_class for c in candidates]
    ids: dict[str, int] = {}
    keys = [vote_key(c.answer) for c in candidates]
    return [None if k is None else ids.setdefault(k, len(ids)) for k in keys]


def _best(candidates: Sequence[Candidate], among: Sequence[int]) -> Candidate:
    """Scored before unscored (a missing score never wins), then the higher score, then a stated
    answer, then the earlier candidate."""

    def rank(i: int) -> tuple[bool, float, bool, int]:
        score = candidates[i].score
        return score is not None, score if score is not None else 0.0, vote_key(candidates[i].answer) is not None, -i

    return candidates[max(among, key=rank)]


def choose(candidates: Sequence[Candidate], how: str, kind: ValueKind = "probability", keep: float = 1.0
           ) -> Choice:
    """best: highest score; majority: the largest class of equivalent answers; weighted: the class
    with the highest sum of scores (``vote_weights``). Missing or empty answers cast no vote, unscored
    candidates no weight. ``keep`` < 1 first keeps only the top ``keep`` fraction of the voters by
    score (``most_confident``; unscored voters are dropped), then votes. Ties go to the class seen
    first; within the winning class, the best-scored candidate is returned (the first where none is
    scored)."""
    if how not in SELECTIONS:
        raise ValueError(f"unknown select {how!r}: use best, majority or weighted")
    if not candidates:
        return Choice(None)
    everyone = range(len(candidates))
    scored = [i for i in everyone if candidates[i].score is not None]
    if how == "best":
        return Choice(_best(candidates, everyone), None if scored else NONE_SCORED)
    class_of = {i: k for i, k in enumerate(vote_classes(candidates)) if k is not None}  # the voters
    if not class_of:
        return Choice(_best(candidates, everyone), NO_ANSWER)
    note = None
    if keep < 1:
        class_of, note = _most_confident_voters(candidates, class_of, keep)
    if all(candidates[i].parsed is False for i in class_of):
        return Choice(_best(candidates, list(class_of)), NONE_PARSED)
    if how == "weighted" and not class_of.keys() & set(scored):
        how, note = "majority", NO_WEIGHTS
    if how == "majority":
        weights = dict.fromkeys(class_of, 1.0)
    else:  # over every scored candidate of the problem (unbounded: normalised); an unscored one has none
        values = vote_weights([float(candidates[i].score or 0.0) for i in scored], kind)
        weights = {i: w for i, w in zip(scored, values, strict=True) if i in class_of}
    totals: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for i, k in class_of.items():
        first_seen.setdefault(k, i)
        if i in weights:
            totals[k] = totals.get(k, 0.0) + weights[i]
    winner = max(totals, key=lambda k: (totals[k], -first_seen[k]))
    return Choice(_best(candidates, [i for i, k in class_of.items() if k == winner]), note)


def _most_confident_voters(candidates: Sequence[Candidate], class_of: dict[int, int], keep: float
                           ) -> tuple[dict[int, int], str | None]:
    """The voters the ``keep`` filter leaves (in candidate order), and a note when none is scored."""
    scored = [i for i in class_of if candidates[i].score is not None]
    if not scored:
        return class_of, NONE_FILTERED
    kept = most_confident([float(candidates[i].score) for i in scored], keep)  # type: ignore[arg-type]
    return {i: class_of[i] for i, k in zip(scored, kept, strict=True) if k}, None


def select_candidate(candidates: Sequence[Candidate], how: str, kind: ValueKind = "probability",
                     keep: float = 1.0) -> Candidate | None:
    """The candidate ``choose`` picks (see there)."""
    return choose(candidates, how, kind, keep).candidate
