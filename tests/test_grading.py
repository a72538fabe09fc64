"""Answer extraction and math-verify grading, including all 500 MATH-500 references."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from pumsearch.search.grading import (
    Grader,
    extract_answer,
    last_boxed,
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


def test_all_math500_references_verify_against_their_own_solutions(grader):
    rows = _rows("math500.jsonl")
    assert len(rows) == 500
    verdicts = grader.grade_many([(last_boxed(r["solution"]), r["answer"]) for r in rows])
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
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalise_answer():
    assert normalise_answer(" 1,000 ") == "1000"
    assert normalise_answer("\\$18.00") == "18"
    assert normalise_answer("\\text{(B)}") == "(B)"
    assert normalise_answer("\\dfrac{1}{2}") == normalise_answer("\\frac{1}{2}")
    assert normalise_answer(None) is None


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
