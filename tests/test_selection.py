"""Aggregation of step scores and the three answer selections."""

from __future__ import annotations

import math

import pytest

from pumsearch.search.selection import (
    Candidate,
    aggregate_steps,
    choose,
    normalise_per_problem,
    select_candidate,
)


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


# -- issue 13: missing scores, empty answers, commas, equivalence classes ------------------------
def test_a_missing_score_never_wins_best_or_weighted():
    """An unscored candidate (a search cut short by --time-limit) used to count as 0.0, which
    beats every negative PUM value."""
    unbounded = [Candidate(1, "5", None), Candidate(2, "6", -3.0), Candidate(3, "7", -1.0)]
    assert select_candidate(unbounded, "best", "unbounded").node == 3
    # weighted: "5" has no known weight; "6" (-3 -> 0.0) and "6" (-2 -> 1.0) outweigh it
    weighted = [Candidate(1, "5", None), Candidate(2, "6", -3.0), Candidate(3, "6", -2.0)]
    assert select_candidate(weighted, "weighted", "unbounded").answer == "6"
    assert select_candidate(weighted, "weighted", "unbounded").node == 3
    # within the winning majority answer the scored member is returned, never the unscored one
    members = [Candidate(1, "4", None), Candidate(2, "4", -5.0)]
    assert select_candidate(members, "majority", "unbounded").node == 2


def test_empty_answers_cast_no_vote():
    cands = [Candidate(1, "", 0.1), Candidate(2, " ", 0.2), Candidate(3, "$ $", 0.3), Candidate(4, "4", 0.05)]
    assert select_candidate(cands, "majority").node == 4
    assert select_candidate(cands, "weighted").node == 4


def test_commas_that_are_not_thousands_separators_split_votes():
    """'2, 3' is a pair, not 23 (the old normalisation dropped every comma between digits)."""
    cands = [Candidate(1, "2, 3"), Candidate(2, "23"), Candidate(3, "7"), Candidate(4, "7")]
    assert select_candidate(cands, "majority").answer == "7"
    thousands = [Candidate(1, "1,000"), Candidate(2, "1000"), Candidate(3, "7")]
    assert select_candidate(thousands, "majority").node == 1


def test_majority_and_weighted_follow_the_equivalence_classes_they_are_given():
    """The classes come from the grader (math-verify); selection only counts them. Candidates
    0.5, \\frac12, 1/2, 3, 3: majority picks the 0.5 group, as search-and-learn's
    find_majority_answer does on canonical forms (src/sal/utils/math.py:175-214), and returns the
    group's first answer when nothing is scored (math.py:205-207)."""
    forms = ["0.5", "\\frac12", "1/2", "3", "3"]
    classes = [0, 0, 0, 1, 1]
    cands = [Candidate(i, a, None, vote_class=k, parsed=True)
             for i, (a, k) in enumerate(zip(forms, classes, strict=True))]
    assert select_candidate(cands, "majority").answer == "0.5"
    scored = [Candidate(i, a, s, vote_class=k, parsed=True)
              for i, (a, s, k) in enumerate(zip(forms, [0.1, 0.1, 0.1, 0.2, 0.2], classes, strict=True))]
    assert select_candidate(scored, "weighted").answer == "3"  # 0.4 > 0.3 (search-and-learn math.py:141-172)
    assert select_candidate(scored, "majority").node == 0  # group 0; its members tie on score: first


def test_a_vote_over_answers_none_of_which_parses_is_decided_by_score_then_order():
    cands = [Candidate(1, "??", 0.2, vote_class=0, parsed=False), Candidate(2, "??", 0.1, vote_class=0, parsed=False),
             Candidate(3, "(", 0.7, vote_class=1, parsed=False), Candidate(4, None, 0.9)]
    choice = choose(cands, "majority")
    assert choice.candidate.node == 3  # best score among the candidates that state an answer
    assert choice.note is not None and "parsed" in choice.note
    unscored = [Candidate(1, "??", None, vote_class=0, parsed=False),
                Candidate(2, "((", None, vote_class=1, parsed=False)]
    assert choose(unscored, "weighted").candidate.node == 1  # then order
    assert choose(CANDS, "majority").note is None


def test_notes_say_when_the_rule_asked_for_could_not_apply():
    nobody = [Candidate(1, None, 0.2), Candidate(2, "", 0.7)]
    choice = choose(nobody, "majority")
    assert choice.candidate.node == 2 and "no candidate stated an answer" in choice.note
    unscored = [Candidate(1, "5", None), Candidate(2, "6", None)]
    best = choose(unscored, "best")
    assert best.candidate.node == 1 and "scored" in best.note
