"""Aggregation of step scores and the three answer selections."""

from __future__ import annotations

import math

import pytest

from pumsearch.search.selection import Candidate, aggregate_steps, normalise_per_problem, select_candidate


def test_aggregate_steps():
    steps = [0.9, 0.5, 0.8]
    assert aggregate_steps(steps, 0.1, "last") == 0.8
    assert aggregate_steps(steps, 0.1, "min") == 0.5
    assert math.isclose(aggregate_steps(steps, 0.1, "prod"), 0.36)
    assert math.isclose(aggregate_steps(steps, 0.1, "mean"), 2.2 / 3)
    assert aggregate_steps(None, 0.1, "min") == 0.1
    with pytest.raises(ValueError):
        aggregate_steps(steps, 0.1, "max")


def test_normalise_per_problem():
    assert normalise_per_problem([0.2, 0.4], "probability") == [0.2, 0.4]
    assert normalise_per_problem([-2.0, 0.0, 2.0], "unbounded") == [0.0, 0.5, 1.0]
    assert normalise_per_problem([3.0, 3.0], "unbounded") == [1.0, 1.0]


CANDS = [
    Candidate(1, "5", 0.9),
    Candidate(2, "6", 0.3),
    Candidate(3, "6", 0.35),
    Candidate(4, "7", 0.2),
    Candidate(5, "6.0", 0.1),
    Candidate(6, None, 0.95),
]


def test_best_picks_the_highest_score():
    assert select_candidate(CANDS, "best").node == 6


def test_majority_counts_normalised_answers():
    chosen = select_candidate(CANDS, "majority")
    assert chosen.answer == "6" and chosen.node == 3  # "6" x3 (6.0 included); best-scored member


def test_weighted_sums_scores_per_answer():
    # "5": 0.9 vs "6": 0.3 + 0.35 + 0.1 = 0.75 -> "5" wins; unanswered candidates do not vote
    assert select_candidate(CANDS, "weighted").node == 1
    # unbounded values are min-max scaled first: 5 -> 0, the three sixes -> 1 + 0.5 + 0 ...
    unbounded = [Candidate(1, "5", -1.0), Candidate(2, "6", 1.0), Candidate(3, "6", 0.0)]
    assert select_candidate(unbounded, "weighted", "unbounded").answer == "6"


def test_ties_go_to_the_first_seen_and_empty_inputs():
    tie = [Candidate(1, "a", 0.5), Candidate(2, "b", 0.5)]
    assert select_candidate(tie, "majority").node == 1
    assert select_candidate(tie, "best").node == 1
    assert select_candidate([], "best") is None
    nobody = [Candidate(1, None, 0.2), Candidate(2, None, 0.7)]
    assert select_candidate(nobody, "majority").node == 2
    with pytest.raises(ValueError):
        select_candidate(tie, "random")
