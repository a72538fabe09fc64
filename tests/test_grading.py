"""Answer extraction and math-verify grading, including all 500 MATH-500 references."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from pumsearch.search.grading import (
    Grader,
    extract_answer,
    normalise_answer,
    reference_from_gsm8k,
)


def _rows(name: str) -> list[dict]:
    text = files("pumsearch.data").joinpath(name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def grader():
    g = Grader(workers=2, string_shortcut=False)  # every pair goes through math-verify
    yield g
    g.close()


@pytest.mark.slow
def test_all_math500_references_verify_against_their_own_solutions(grader):
    """Extraction included: the final-expression rule must not cut an equation answer
    (``y = 2x + 3``, ``5x - 7y + 11z + 4 = 0``) down to its right-hand side."""
    rows = _rows("math500.jsonl")
    assert len(rows) == 500
    verdicts = grader.grade_many([(extract_answer(r["solution"]), r["answer"]) for r in rows])
    failures = [r["unique_id"] for r, ok in zip(rows, verdicts, strict=True) if not ok]
    assert failures == []


def test_math_verify_sees_equivalent_forms(grader):
    assert grader.grade("\\frac{1}{2}", "0.5")
    assert grader.grade("\\dfrac{3}{4}", "\\frac34")
    assert not grader.grade("\\frac{1}{3}", "0.5")
    assert grader.grade("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)")


def test_gsm8k_references():
    rows = _rows("gsm8k_test.jsonl")
    assert len(rows) == 1319
    assert reference_from_gsm8k(rows[0]["answer"]) == "18"
    assert all(reference_from_gsm8k(r["answer"]) for r in rows)
    assert reference_from_gsm8k("... #### 1,000") == "1000"
    with pytest.raises(ValueError):
        reference_from_gsm8k("no final line")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{12} and later \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{x^{2}}}", "\\sqrt{x^{2}}"),
        ("\\fbox{7}", "7"),
        ("Therefore, the answer is 42.", "42"),
        ("The answer is: $3x+1$", "3x+1"),
        ("48 + 24 = 72\n#### 72", "72"),
        ("no final answer here, just 5", None),
        ("unbalanced \\boxed{12", None),
        # an empty box states nothing; an earlier non-empty one is the answer
        ("Final answer within \\boxed{}.", None),
        ("so \\boxed{7}. Final answer within \\boxed{}.", "7"),
        # the final expression: the right-hand side of a trailing equation
        ("So, the answer is 3+2 = 5.", "5"),
        ("So the answer is that 48 + 49 + 52 = 141. \nNo, that is not a valid answer.", "141"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{k = \\frac{\\pi}{2}}", "\\frac{\\pi}{2}"),
        ("The answer is 72 clips.", "72"),
        ("So the answer is 10 + 1 = 11 bolts.", "11"),
        ("\\boxed{2 * 2 = 4 bolts in total}", "4"),
        ("The answer is 3 pi.", "3 pi"),
        ("The answer is 5 more than x.", "5 more than x"),
        # kept whole: equations in variables, lists of equations, inequalities
        ("\\boxed{y = 2x + 3}", "y = 2x + 3"),
        ("\\boxed{x^2+y^2=25}", "x^2+y^2=25"),
        ("\\boxed{x = 1, y = 2}", "x = 1, y = 2"),
        ("\\boxed{x \\le 5}", "x \\le 5"),
        ("The answer is 2 and 3.", "2 and 3"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalise_answer():
    assert normalise_answer(" 1,000 ") == "1000"
    assert normalise_answer("11,\\! 111,\\! 100") == "11111100"  # MATH writes thousands with \\!
    # a comma is dropped only as a thousands separator
    assert normalise_answer("2, 3") != normalise_answer("23")
    assert normalise_answer("1,2") != normalise_answer("12")
    assert normalise_answer("-1,5") != normalise_answer("-15")
    assert normalise_answer("2, 300") != normalise_answer("2300")
    assert normalise_answer("0,111") != normalise_answer("111")
    assert normalise_answer("007") == normalise_answer("7") == "7"  # integers are told apart by string
    assert normalise_answer("\\$18.00") == "18"
    assert normalise_answer("\\text{(B)}") == "(B)"
    assert normalise_answer("\\dfrac{1}{2}") == normalise_answer("\\frac{1}{2}")
    assert normalise_answer(None) is None


def test_grading_drops_commas_only_as_thousands_separators():
    """Issue 13: the string shortcut used to accept 1,2 for 12 before math-verify ran."""
    g = Grader(workers=1)  # the shortcut on, as in every run
    try:
        assert g.grade_many([("1,2", "12"), ("2, 3", "23"), ("-1,5", "-15")]) == [False, False, False]
        assert g.grade_many([("1,000", "1000"), ("1,234.5", "1234.5"), ("-12,000", "-12000")]) == [True] * 3
        assert g.grade_many([("", "5"), ("   ", "5"), (None, "5")]) == [False, False, False]
    finally:
        g.close()


def test_answer_classes_group_equivalent_answers():
    g = Grader(workers=1)
    try:
        answers = ["0.5", "\\frac12", "1/2", "3", "3", "", None, "2, 3", "23", "2,3", "\\frac{6}{2}"]
        classes = g.answer_classes(answers)
        assert [c.group for c in classes] == [0, 0, 0, 1, 1, None, None, 2, 3, 2, 1]
        assert [c.parsed for c in classes] == [True] * 5 + [False, False] + [True] * 4
        # online: the classes of a prefix are the classes of the whole list cut to that prefix,
        # so a read-off budget votes as a run at that budget would
        for k in range(len(answers) + 1):
            assert g.answer_classes(answers[:k]) == classes[:k]
    finally:
        g.close()


def test_grader_falls_back_when_math_verify_cannot_parse():
    g = Grader(workers=1)
    try:
        assert g.grade("banana", "banana")  # string match
        assert not g.grade("banana", "apple")
        assert not g.grade(None, "1")
    finally:
        g.close()


def test_grader_times_out_instead_of_hanging():
    import sys

    hanging = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
    g = Grader(workers=1, timeout=0.5, string_shortcut=False, worker_command=hanging)
    try:
        g.warm()
        (stuck,) = g._all
        assert g.grade_many([("1", "1")]) == [False]  # the stuck worker is killed, not waited for
        assert stuck.proc.poll() is not None
        (replacement,) = g._all
        assert replacement is not stuck and replacement.proc.poll() is None
        g.close()
        g.worker_command = Grader().worker_command
        assert g.grade("2", "2")  # a real worker answers
    finally:
        g.close()


def test_grading_needs_no_main_guard(tmp_path):
    """A user's script that grades at top level must not be re-run by the workers."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    marker = tmp_path / "runs.txt"
    script.write_text(
        "from pumsearch.search.grading import Grader\n"
        f"open({str(marker)!r}, 'a').write('x')\n"
        "print(Grader(string_shortcut=False).grade('\\\\frac{1}{2}', '0.5'))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    assert marker.read_text() == "x"
