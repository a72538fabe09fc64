"""Grading and voting checked against the conventions of the field's graders.

Every verdict below is written by hand from the convention it cites; none is read back from
pumsearch. References (read at these commits):

- MV: huggingface/Math-Verify @5d148cf (math-verify, which grades every pumsearch answer):
  tests/test_all.py, src/math_verify/parser.py, src/math_verify/grader.py;
- SAL: huggingface/search-and-learn @6f81cac: src/sal/utils/math.py (votes) and
  src/sal/utils/qwen_math_parser.py (Qwen2.5-Math's extraction and ``strip_string``).

Where the two disagree, the case says which one pumsearch follows (docs/strategies.md,
"pumsearch vs search-and-learn").
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.runs.subsample import group_rows, subsample
from pumsearch.search.config import SearchConfig
from pumsearch.search.grading import Grader, extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.selection import Candidate, choose, classify_answers, select_candidate
from pumsearch.strategies import BestOfN

# (prediction, reference, expected verdict, the convention it follows)
PAIRS = [
    # fractions
    ("\\frac{1}{2}", "0.5", True, "MV numeric equality (grader.py sympy_expr_eq); SAL canonical form"),
    ("\\frac12", "\\frac{1}{2}", True, "MV tests/test_all.py:139-140; SAL qwen_math_parser.py:370-371 _fix_fracs"),
    ("1/2", "\\frac{1}{2}", True, "MV tests/test_all.py:148-149 simple fractions; SAL qwen_math_parser.py:373-374"),
    ("\\dfrac{3}{4}", "\\frac34", True, "MV tests/test_all.py:144-147 frac variants"),
    ("\\frac{2}{4}", "\\frac{1}{2}", True, "MV symbolic equality"),
    ("-\\frac{10}{9}", "-10/9", True, "MV tests/test_all.py:100"),
    ("\\frac{1}{3}", "0.5", False, "different values"),
    # decimals
    ("0.50", "\\frac{1}{2}", True, "MV numeric equality"),
    ("18.00", "18", True, "SAL strip_string qwen_math_parser.py:352-354 drops .00"),
    (".5", "0.5", True, "SAL qwen_math_parser.py:359-360 leading zero; MV parser.py:178-179 decimal part only"),
    ("0.333", "\\frac{1}{3}", False, "MV float_rounding=6: tests/test_all.py:529-535"),
    ("0.3333333", "\\frac{1}{3}", True, "MV float_rounding=6"),
    # thousands separators (issue 13 item 1)
    ("1,000", "1000", True, "MV parser.py:173-175 numbers with thousand separators"),
    ("7,425,000", "7425000", True, "MV tests/test_all.py:64"),
    ("1,000.99", "1000.99", True, "MV tests/test_all.py:76"),
    ("10,\\!080", "10080", True, "MATH-500 writes thousands with \\!; MV parses them"),
    ("1,2", "12", False, "not a thousands separator: MV parses the set {1, 2}"),
    ("2, 3", "23", False, "not a thousands separator: MV parses the set {2, 3}"),
    ("-1,5", "-15", False, "not a thousands separator: MV parses the set {-1, 5}"),
    # tuples and intervals
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True, "MV tests/test_all.py:213 (polar point)"),
    ("(1,2)", "(2,1)", False, "order matters in a tuple"),
    ("1,-2", "-2,1", True, "MV reads a bare list as a set: order free"),
    ("[0,1)", "[0,1)", True, "MV tests/test_all.py:110"),
    ("(0,9)", "[0,9)", False, "MV tests/test_all.py:113"),
    ("(-\\infty, 0]", "(-\\infty,0]", True, "MV intervals"),
    # units
    ("5 \\text{ cm}", "5", True, "MV tests/test_all.py:153 (\\text{meters}); SAL qwen_math_parser.py:272-276"),
    ("15\\mbox{ cm}^2", "15", True, "MV tests/test_all.py:248-249"),
    ("\\$18.00", "18", True, "SAL qwen_math_parser.py:292-294 drops dollars"),
    # percent
    ("50\\%", "50", True, "SAL qwen_math_parser.py:307-310 drops the percent sign"),
    ("28\\%", "0.28", True, "MV percent: 28% = 0.28 (tests/test_all.py:167-175)"),
    ("0.5", "50\\%", True, "MV percent"),
    # degrees
    ("90^\\circ", "90", True, "MV tests/test_all.py:228; SAL qwen_math_parser.py:288-290"),
    ("30^{\\circ}", "30", True, "SAL qwen_math_parser.py:288-290"),
    ("45^\\circ", "90^\\circ", False, "different angles"),
    # \text{}
    ("\\text{Evelyn}", "\\text{Evelyn}", True, "MV tests/test_all.py:222-223"),
    ("\\text{Evelyn}", "\\text{Briana}", False, "different names"),
    ("\\text{(B)}", "B", True, "SAL qwen_math_parser.py:301 and 318-329 unwrap \\text{} and (B)"),
    ("\\text{13}", "13", True, "SAL qwen_math_parser.py:301 unwraps \\text{}; math-verify agrees"),
    # equations
    ("x = 5", "5", True, "MV tests/test_all.py:459; SAL qwen_math_parser.py:362-365"),
    ("5", "x=5", True, "MV tests/test_all.py:460"),
    ("3+2 = 5", "5", True, "MV grader.py:655-659: an equation against a number is its right-hand side"),
    ("1", "2x + z = 1", False, "MV tests/test_all.py:457"),
    ("y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", True, "MV tests/test_all.py:463"),
    ("y = 2x + 3", "y = 2x + 3", True, "a MATH-500 reference"),
    # empty
    ("", "5", False, "an empty answer is wrong"),
    ("  ", "5", False, "an empty answer is wrong"),
    (None, "5", False, "no answer is wrong"),
]


@pytest.fixture(scope="module")
def grader():
    g = Grader(workers=2)  # as every run grades: the string shortcut on
    yield g
    g.close()


def test_at_least_forty_pairs_over_every_kind():
    assert len(PAIRS) >= 40


def test_reference_pairs(grader):
    verdicts = grader.grade_many([(p, r) for p, r, _, _ in PAIRS])
    wrong = [(p, r, why) for (p, r, want, why), got in zip(PAIRS, verdicts, strict=True) if got != want]
    assert wrong == []


# (solution text, reference, expected verdict, the convention it follows): extraction included
SOLUTIONS = [
    ("First \\boxed{12}, then on reflection \\boxed{13}.", "13", True,
     "the last box: SAL qwen_math_parser.py:495-515; MV parser.py:621-626 (rightmost match first)"),
    ("First \\boxed{12}, then on reflection \\boxed{13}.", "12", False, "the last box"),
    ("So \\boxed{7}. Final answer within \\boxed{}.", "7", True,
     "an empty box states nothing: MV parser.py:626-636 keeps the rightmost match that parses"),
    ("So, the answer is 3+2 = 5.", "5", True, "MV parser.py:223-228: after 'answer', the value after the last '='"),
    ("So the answer is that 48 + 49 + 52 = 141. \nNo.", "141", True, "MV parser.py:223-228"),
    ("The answer is 72 clips.", "72", True, "MV parser.py:205-208: a number needs no suffix"),
    ("Final answer within \\boxed{}.", "5", False, "states no answer"),
]


def test_reference_solutions(grader):
    verdicts = grader.grade_many([(extract_answer(t), r) for t, r, _, _ in SOLUTIONS])
    wrong = [(t, r, why) for (t, r, want, why), got in zip(SOLUTIONS, verdicts, strict=True) if got != want]
    assert wrong == []


# -- votes ---------------------------------------------------------------------------------------
def _vote(grader: Grader, answers: list[str | None], how: str = "majority",
          scores: list[float | None] | None = None) -> Candidate:
    cands = [Candidate(i, a, None if scores is None else scores[i]) for i, a in enumerate(answers)]
    classify_answers(cands, grader)
    chosen = select_candidate(cands, how)
    assert chosen is not None
    return chosen


def test_majority_groups_equivalent_answers(grader):
    """Issue 13 item 2: 0.5, \\frac12, 1/2, 3, 3 used to elect 3. search-and-learn groups by
    canonical form (math.py:175-214) and returns the group's first answer (math.py:205-207)."""
    assert _vote(grader, ["0.5", "\\frac12", "1/2", "3", "3"]).answer == "0.5"
    # the same without any shared string: only math-verify can see these are one answer
    assert _vote(grader, ["7", "\\frac{1}{4}", "0.25", "25\\%", "7"]).answer == "\\frac{1}{4}"


def test_weighted_sums_scores_per_equivalence_class(grader):
    """search-and-learn's find_answer_with_largest_sum (math.py:141-172)."""
    chosen = _vote(grader, ["3", "0.5", "1/2", "3"], "weighted", [0.5, 0.3, 0.3, 0.05])
    assert chosen.answer in ("0.5", "1/2")  # 0.6 > 0.55
    assert chosen.node == 1  # members tie on score: the first


def test_an_equation_and_its_value_vote_together_whichever_comes_first(grader):
    """math-verify is asymmetric (grader.py:655-659: a predicted equation against a number is its
    right-hand side, not the other way round); a vote compares both ways."""
    assert [c.group for c in grader.answer_classes(["m+n=17", "17", "16"])] == [0, 0, 1]
    assert [c.group for c in grader.answer_classes(["17", "m+n=17", "16"])] == [0, 0, 1]


def test_votes_do_not_merge_a_pair_with_a_number(grader):
    assert _vote(grader, ["2, 3", "23", "23"]).answer == "23"
    assert _vote(grader, ["2, 3", "2,3", "23"]).answer == "2, 3"


def test_empty_or_missing_answers_never_vote(grader):
    """search-and-learn votes with whatever extract_answer returned, '' included (math.py:198-203)."""
    assert _vote(grader, ["", "", "", None, "64"]).answer == "64"


def test_final_expressions_vote_together(grader):
    texts = ["So, the answer is 3+2 = 5.", "The answer is 5.", "\\boxed{x = 5}", "\\boxed{7}", "\\boxed{7}"]
    assert [extract_answer(t) for t in texts] == ["5", "5", "5", "7", "7"]
    assert _vote(grader, [extract_answer(t) for t in texts]).answer == "5"


def test_a_vote_none_of_whose_answers_parses_is_decided_by_score_then_order(grader):
    cands = [Candidate(1, "???", 0.1), Candidate(2, "???", 0.2), Candidate(3, "=", 0.6)]
    classify_answers(cands, grader)
    assert [c.parsed for c in cands] == [False, False, False]
    choice = choose(cands, "majority")
    assert choice.candidate.node == 3 and "parsed" in (choice.note or "")


@pytest.mark.slow
def test_an_answer_that_makes_math_verify_time_out_votes_as_its_own_string():
    """Comparing 9^(9^(9^9)) with a number makes sympy evaluate it: math-verify's own timeout
    stops it after 5 s, ours (the grader's per-answer timeout) sooner. The vote goes on."""
    hard = "9^{9^{9^{9}}}"
    g = Grader(workers=1, timeout=2.0)
    try:
        started = time.perf_counter()
        classes = g.answer_classes([hard, "5", hard, "\\frac{10}{2}", "5"])
        elapsed = time.perf_counter() - started
        assert [c.group for c in classes] == [0, 1, 0, 1, 1]
        assert [c.parsed for c in classes] == [False, True, False, True, True]
        assert elapsed < 15  # one timeout, not one per comparison with the hard answer
        assert g.grade("5", "5")  # the workers still answer
    finally:
        g.close()


# -- votes in runs: a live run and a read-off budget ----------------------------------------------
FORMS = {"0.5": Fraction(1, 2), "\\frac{1}{2}": Fraction(1, 2), "1/2": Fraction(1, 2),
         "3": Fraction(3), "3.0": Fraction(3)}


def _forms_policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
    forms = list(FORMS)
    return f"Work {int(rng.integers(0, 1000))}.\n\nSo \\boxed{{{forms[int(rng.integers(0, len(forms)))]}}}"


def _by_value(answers: list[str]) -> Fraction:
    """The majority value, ties to the first seen: an oracle independent of pumsearch."""
    counts: dict[Fraction, int] = {}
    for a in answers:
        counts[FORMS[a]] = counts.get(FORMS[a], 0) + 1
    return max(counts, key=lambda v: (counts[v], -[FORMS[a] for a in answers].index(v)))


def _bon(budget: int, seed: int):
    from tests.helpers_search import run

    config = SearchConfig(strategy="bon", budget=budget, seed=seed, select="majority")
    (result,), _ = run([Problem("p", "q", "1/2")], config, ScriptedGenerator(_forms_policy), None)
    return result


def test_a_live_run_votes_by_value_and_a_read_off_budget_votes_like_a_run_at_that_budget():
    seed = 2  # string votes elect 3 at n = 4 and 8, value votes 1/2
    full = _bon(8, seed)
    answers = [c.answer for c in full.candidates]
    block = {"unit": "solutions", "budget_per_group": 1, "value_kind": "probability",
             "groups": group_rows(full.tree, full.candidates, BestOfN(SearchConfig()).subsample_groups(
                 full.tree, full.candidates))}
    assert all("vote_class" in g["candidates"][0] for g in block["groups"])
    discriminating = False
    for n in (1, 2, 4, 8):
        live = full if n == 8 else _bon(n, seed)
        assert [c.answer for c in live.candidates] == answers[:n]  # the premise of reading off
        assert FORMS[live.answer] == _by_value(answers[:n])
        read = subsample(block, n, "majority")
        assert read is not None and read.prediction == live.answer
        assert read.correct == live.correct and read.maj_at_n == live.correct
        by_string = select_candidate([Candidate(i, a) for i, a in enumerate(answers[:n])], "majority")
        discriminating |= FORMS[by_string.answer] != FORMS[live.answer]
    assert discriminating, "pick a seed where grouping by string elects another value"
