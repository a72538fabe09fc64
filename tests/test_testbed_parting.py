"""The ``parting`` testbed world, where usefulness and correctness part: 4-operation chains solved
under a whole-solution cap of 28 tokens, so a detour (correct, useless) costs the answer while the
exact step PRM scores it correct. Also the rollout scorer's ``token_cap="solution"``, which lets
the rollout gain see that cost, and the exact PRM's ``detours="wrong"`` yardstick."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.scorers import ScorerError, load_scorer
from pumsearch.search.grading import default_grader, extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.testbed import policy_path, testbed_problems
from pumsearch.testbed.tasks import SOLUTION_TOKEN_CAPS, parse_question, parse_spec

CAP = SOLUTION_TOKEN_CAPS["parting"]
REPO = Path(__file__).resolve().parents[1]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(policy_path("weak")))


def solution_tokens(tokenizer, text: str) -> int:
    """Tokens a policy generates for ``text`` and its end token."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1


def with_detour(problem: Problem, before: int, symbol: str = "*") -> list[str]:
    """The gold steps with one detour inserted before operation ``before``."""
    steps = problem.metadata["gold_solution"].split("\n\n")
    value = parse_question(problem.question).values()[before]
    identity = {"*": 1, "+": 0, "-": 0}[symbol]
    return [*steps[:before], f"{value} {symbol} {identity} = {value}", *steps[before:]]


def test_parting_draws_four_operation_test_chains_of_its_own_seed() -> None:
    spec = parse_spec("parting")
    assert (spec.min_ops, spec.max_ops, spec.split, spec.seed, spec.n, spec.detours) == (4, 4, "test", 1, 200, 0.0)
    problems = testbed_problems("parting,n=50")
    assert [p.question for p in problems] == [p.question for p in testbed_problems("parting")[:50]]
    assert all(len(parse_question(p.question).ops) == 4 for p in problems)
    assert [p.question for p in problems] != [p.question for p in testbed_problems("ops=4,n=50,split=test,seed=0")]


def test_under_the_cap_the_gold_solution_fits_and_a_detour_costs_the_answer(tokenizer) -> None:
    """Every chain of the world: its gold solution (with the end token) fits the cap exactly; with
    any one detour it does not, and the first CAP tokens of it hold no answer, so it grades wrong,
    while the exact PRM scores every step of the detoured solution correct."""
    prm, grader = load_scorer("testbed-prm"), default_grader()
    problems = testbed_problems("parting")
    rng = random.Random(0)
    items = []
    for problem in problems:
        assert solution_tokens(tokenizer, problem.metadata["gold_solution"]) == CAP
        detoured = with_detour(problem, rng.randrange(4), rng.choice("*+-"))
        text = "\n\n".join(detoured)
        assert solution_tokens(tokenizer, text) > CAP
        cut = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:CAP])
        assert not grader.grade(extract_answer(cut), problem.answer)
        assert grader.grade(extract_answer(text), problem.answer)  # uncapped, the detour is harmless
        items += [ScoreItem(problem, tuple(detoured[:-1])), ScoreItem(problem, tuple(detoured), complete=True)]
    scores = run(prm.score(items))
    assert all(score.value == 1.0 for score in scores)
    assert all("detour" in score.extra["labels"] for score in scores)


def test_the_progress_yardstick_scores_a_detour_wrong() -> None:
    problem = testbed_problems("parting,n=1")[0]
    detoured = tuple(with_detour(problem, 1))
    exact, progress = load_scorer("testbed-prm"), load_scorer("testbed-prm", detours="wrong")
    gold = tuple(problem.metadata["gold_solution"].split("\n\n"))
    [d_exact] = run(exact.score([ScoreItem(problem, detoured[:3])]))
    [d_progress, g_progress] = run(progress.score([ScoreItem(problem, detoured[:3]), ScoreItem(problem, gold, True)]))
    assert d_exact.value == 1.0 and d_progress.value == 0.0 and g_progress.value == 1.0
    assert d_progress.step_values == [1.0, 0.0, 0.0]
    assert exact.identity != progress.identity  # cached apart
    with pytest.raises(ScorerError, match="detours must be correct or wrong"):
        load_scorer("testbed-prm", detours="maybe")


# -- the rollout scorer's token cap -----------------------------------------------------------------
def colon_answer(question: str, done: tuple[str, ...], rng: object) -> str:
    """Five words, the boxed answer last: cut short, no answer."""
    return "The answer is : \\boxed{5}"


@pytest.mark.parametrize("token_cap, rates, caps", [("continuation", [1.0, 1.0, 1.0], [8, 8, 8]),
                                                     ("solution", [1.0, 0.0, 0.0], [5, 4])])
def test_rollouts_share_the_solution_cap_with_their_prefix(token_cap: str, rates: list[float],
                                                           caps: list[int]) -> None:
    """max_tokens 8 (scripted tokens are words): the rollouts after prefixes of 3 and 4 words get
    5 and 4 under ``solution`` (4 cannot finish the answer); a prefix of 9 words has no room left
    and is graded by its own text, with no rollout."""
    problem = Problem("p", "What is 2 + 3 ?", "5")
    student = ScriptedGenerator(colon_answer)
    scorer = load_scorer("rollout", students=[student], k=2, max_tokens=8, token_cap=token_cap)
    items = [ScoreItem(problem, ("a b c",)), ScoreItem(problem, ("a b c d",)),
             ScoreItem(problem, ("a b c d e f g h i",))]
    scores = run(scorer.score(items))
    assert [s.extra["students"][0]["solve_rate"] for s in scores] == rates
    asked = sorted(r.params.max_tokens for r in student.calls[0])
    assert asked == sorted([*caps, 8])  # and the empty prefix's baseline, always the full cap
    assert (":cap=solution" in scorer.identity) == (token_cap == "solution")


def test_an_unknown_rollout_token_cap_is_one_clear_error() -> None:
    with pytest.raises(ScorerError, match="unknown rollout token_cap 'words'"):
        load_scorer("rollout", students=[ScriptedGenerator()], token_cap="words")


def test_with_a_real_student_a_detoured_prefix_leaves_no_room_to_answer() -> None:
    """The shipped weak policy as student: three operations and a detour take 24 of the 28 tokens,
    too few for the last step and the answer (9), so the rollout gain of that prefix is exactly
    its baseline's negative, whatever is sampled; the exact PRM scores the same prefix 1.0."""
    pytest.importorskip("torch")
    problem = testbed_problems("parting,n=1")[0]
    detoured = tuple(with_detour(problem, 3)[:4])
    rollout = load_scorer("rollout", model="testbed:weak", k=4, max_tokens=CAP, token_cap="solution")
    [score] = run(rollout.score([ScoreItem(problem, detoured)]))
    [student] = score.extra["students"]
    assert student["solve_rate"] == 0.0 and score.value == -student["baseline"]
    [prm] = run(load_scorer("testbed-prm").score([ScoreItem(problem, detoured)]))
    assert prm.value == 1.0


@pytest.mark.slow
def test_the_bench_runs_beam_in_the_parting_world(tmp_path: Path) -> None:
    """bench_pum_testbed.py's parting options, on two chains: the exact-progress yardstick and the
    rollout gain under the solution cap and the exact PRM with the shipped PUM breaking its ties,
    recorded per scorer, N and seed, and each paired with the exact PRM's records (the same
    problems and seed)."""
    out = tmp_path / "bench"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_pum_testbed.py"), "--spec", "parting,n=2", "--seeds", "0",
           "--parts", "beam", "--beam-scorers", "exact-progress,testbed-prm,prm>pum", "--beam-budgets", "4",
           "--rollout-beam-budgets", "4", "--rollout-token-cap", "solution", "--k", "1", "--max-tokens", str(CAP),
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "comparison.json").read_text())
    assert data["settings"]["rollout_token_cap"] == "solution" and data["settings"]["max_tokens"] == CAP
    assert set(data["beam"]) == {"exact-progress", "testbed-prm", "prm>pum", "rollout"}
    assert len(data["beam"]["rollout"]["4"]["0"]["records"]) == 2
    beam, paired = data["beam"], data["summary"]["beam_minus_prm"]
    for name in ("exact-progress", "prm>pum", "rollout"):
        mine, prm = beam[name]["4"]["0"]["records"], beam["testbed-prm"]["4"]["0"]["records"]
        assert paired[name]["4"]["accuracy"] == pytest.approx((sum(mine) - sum(prm)) / 2, abs=1e-4)
    for part in beam["testbed-prm"]["4"]["0"]["returned"]:
        assert set(part) == {"detour", "cut"} and 0.0 <= part["detour"] <= 1.0 and 0.0 <= part["cut"] <= 1.0
    assert set(data["summary"]["beam_returned_cut"]) == set(beam)
    report = (out / "comparison.md").read_text()
    assert "at most 28 tokens per solution" in report and "minus the exact PRM" in report


def test_the_bench_counts_returned_beams_with_a_detour_and_cut_by_the_cap() -> None:
    """bench_pum_testbed.returned_beams on a hand-built tree: a gold beam, a detoured beam cut at
    the cap before its answer, and a detoured beam that answered anyway."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_pum_testbed import returned_beams
    finally:
        sys.path.pop(0)
    from pumsearch.search.result import SearchResult
    from pumsearch.search.selection import Candidate
    from pumsearch.search.tree import ROOT, SearchTree

    problem = testbed_problems("parting,n=1")[0]
    gold, detoured = problem.metadata["gold_solution"].split("\n\n"), with_detour(problem, 2)
    tree = SearchTree(problem)
    leaves = []
    for steps, finish in ((gold, "eos"), (detoured[:-2], "length"), (detoured, "eos")):
        node = ROOT
        for step in steps:
            node = tree.add_child(node, step, finish_reason="step", num_tokens=6)
        tree[node]["finish_reason"] = finish
        leaves.append(node)
    answers = [problem.answer, None, problem.answer]
    candidates = [Candidate(n, a) for n, a in zip(leaves, answers, strict=True)]
    result = SearchResult(problem, "beam", tree, candidates=candidates)
    assert returned_beams(result) == {"detour": round(2 / 3, 4), "cut": round(1 / 3, 4)}
