"""The arithmetic testbed: generator, exact PRM, tokenizer, shipped policies, search quality."""

from __future__ import annotations

import json
import operator
import random
import re

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app
from pumsearch.scorers import load_scorer
from pumsearch.scorers.base import ScorerError
from pumsearch.search.grading import default_grader, extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.testbed import policy_path, testbed_problems
from pumsearch.testbed.scorers import TestbedPRM
from pumsearch.testbed.tasks import Chain, TaskSpec, iter_chains, parse_spec, split_of

WORD_OPS = {"add": operator.add, "subtract": operator.sub, "times": operator.mul}
STEP = re.compile(r"^-?\d+ [+\-*] -?\d+ = -?\d+$")


def evaluate_words(question: str) -> int:
    """The chain's value computed straight from the words (independent of tasks.Chain)."""
    first, *rest = question.rstrip(".").split(", ")
    value = int(first.split()[1])
    for part in rest:
        word, number = part.split()
        value = WORD_OPS[word](value, int(number))
    return value


# -- generator --------------------------------------------------------------------------------------
def test_spec_parsing_named_and_key_values():
    spec = parse_spec("ops=3-4,n=50,split=train,seed=2,mix=add+times")
    assert (spec.min_ops, spec.max_ops, spec.n, spec.split, spec.seed, spec.mix) == (
        3,
        4,
        50,
        "train",
        2,
        ("+", "*"),
    )
    assert parse_spec("standard,n=10") == TaskSpec(min_ops=3, max_ops=4, n=10, split="test", seed=0)
    for bad in ("ops=0", "split=dev", "colour=red", "n=ten", "nosuchconfig", "mix=divide"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_fixed_seeds_give_fixed_data_and_answers_match_the_words():
    first, again = testbed_problems("ops=3-4,n=60,seed=3"), testbed_problems("ops=3-4,n=60,seed=3")
    assert [p.question for p in first] == [p.question for p in again]
    assert [p.question for p in first] != [p.question for p in testbed_problems("ops=3-4,n=60,seed=4")]
    assert len({p.question for p in first}) == 60
    for problem in first:
        assert int(problem.answer) == evaluate_words(problem.question)
        assert 3 <= problem.question.count(",") <= 4


def test_train_and_test_splits_never_overlap():
    test = {p.question for p in testbed_problems("ops=2,n=150,split=test")}
    stream = iter_chains(TaskSpec(min_ops=1, max_ops=5, split="train", seed=0), unique=False)
    train = {next(stream).question() for _ in range(20_000)}
    assert len(train) > 5000 and test.isdisjoint(train)
    assert {split_of(q) for q in test} == {"test"} and {split_of(q) for q in train} == {"train"}


def test_gold_solutions_verify_with_the_grader_and_stay_in_range():
    problems = testbed_problems("ops=3-4,n=40,detours=0.3")
    solutions = [p.metadata["gold_solution"] for p in problems]
    verdicts = default_grader().grade_many(
        [(extract_answer(s), p.answer) for s, p in zip(solutions, problems, strict=True)]
    )
    assert all(verdicts)
    for solution in solutions:
        *steps, final = solution.split("\n\n")
        assert all(STEP.match(s) for s in steps) and re.fullmatch(r"\\boxed\{\d+\}", final)
        assert all(0 <= int(n) <= 50 for n in re.findall(r"-?\d+", solution))


def test_detours_are_correct_but_do_not_advance():
    chain = Chain(4, (("+", 3), ("*", 2)))
    steps = chain.gold_steps(random.Random(0), detours=1.0)  # a detour before every operation
    assert len(steps) == 5
    detours = [steps[0], steps[2]]
    for step in detours:
        left, _, _, _, result = step.split()
        assert left == result and eval(step.replace("=", "==")) is True  # right, yet the same value
    assert [s for s in steps if s not in detours] == chain.gold_steps()


# -- exact PRM --------------------------------------------------------------------------------------
QUESTION = "start 7, add 5, times 3, subtract 4."


def prm_score(steps: list[str], complete: bool = False):
    return TestbedPRM().score_one(ScoreItem(Problem("p", QUESTION), tuple(steps), complete))


def test_prm_gold_solution_scores_one_at_every_step():
    score = prm_score(["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "\\boxed{32}"], complete=True)
    assert score.value == 1.0 and score.step_values == [1.0, 1.0, 1.0, 1.0]
    assert score.extra["labels"] == ["progress", "progress", "progress", "answer"]


@pytest.mark.parametrize(
    "steps, wrong_at",
    [
        (["7 + 5 = 13", "13 * 3 = 39"], 0),  # bad arithmetic
        (["7 + 5 = 12", "12 * 4 = 48"], 1),  # right arithmetic, wrong operand
        (["7 + 5 = 12", "36 - 4 = 32"], 1),  # skips an operation
        (["7 + 5 = 12", "\\boxed{12}"], 1),  # answers too early
        (["7 + 5 = 12", "so we get twelve"], 1),  # no step at all
    ],
)
def test_prm_wrong_step_scores_zero_from_there_on(steps, wrong_at):
    score = prm_score(steps)
    assert score.step_values == [1.0] * wrong_at + [0.0] * (len(steps) - wrong_at)
    assert score.value == 0.0


def test_prm_detour_scores_as_correct_without_progress():
    score = prm_score(["7 + 5 = 12", "12 * 1 = 12", "12 + 0 = 12"])
    assert score.value == 1.0 and score.step_values == [1.0, 1.0, 1.0]
    assert score.extra["labels"] == ["progress", "detour", "detour"] and score.extra["progress"] == 1


def test_prm_finished_solution_without_right_answer_scores_zero():
    assert prm_score(["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32"], complete=True).value == 0.0
    assert prm_score(["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32"], complete=False).value == 1.0


async def test_prm_through_load_scorer_and_refuses_other_questions():
    scorer = load_scorer("testbed-prm")
    assert not scorer.needs_reference
    good, bad = (
        ScoreItem(Problem("p", QUESTION), ("7 + 5 = 12",)),
        ScoreItem(Problem("p", QUESTION), ("7 + 5 = 11",)),
    )
    assert [s.value for s in await scorer.score([good, bad])] == [1.0, 0.0]
    with pytest.raises(ScorerError, match="testbed"):
        await scorer.score([ScoreItem(Problem("q", "What is 2 + 3?"), ("2 + 3 = 5",))])


# -- tokenizer and policies ------------------------------------------------------------------------
def test_tokenizer_round_trips_and_renders_the_chat_template():
    from pumsearch.testbed.train import build_tokenizer

    tokenizer = build_tokenizer()
    text = "7 + 5 = 12\n\n12 * 3 = 36\n\n\\boxed{36} Odd text: ~{}[]!"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer("12 * 3 = 36")["input_ids"]) == 5  # numbers are single tokens
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": QUESTION}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == f"<|system|>SYS\n<|user|>{QUESTION}\n<|assistant|>"
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_training_writes_a_checkpoint_the_backend_loads(tmp_path):
    from pumsearch.backends import load_generator
    from pumsearch.testbed.train import TrainSettings, train_policy

    info = train_policy(tmp_path / "p", TrainSettings(size="small", max_steps=2, batch_size=4, threads=1))
    assert info["steps"] == 2 and (tmp_path / "p" / "training.json").exists()
    generator = load_generator(str(tmp_path / "p"))
    text, ids = generator.chat_prompt(QUESTION, "SYS")
    assert text.endswith("<|assistant|>") and ids[-1] == generator.tokenizer.convert_tokens_to_ids(
        "<|assistant|>"
    )


@pytest.mark.parametrize("name", ["weak", "strong"])
def test_shipped_policy_produces_the_step_format(name):
    from pumsearch.backends import load_generator
    from pumsearch.testbed.evaluate import sample

    assert (policy_path(name) / "DATA_CARD.md").exists()
    generator = load_generator(f"testbed:{name}")
    problems = testbed_problems("ops=3-4,n=6,seed=5")
    texts = [t for (t,) in sample(generator, problems, 1, 0.0, 96, 0)]
    for text in texts:
        *steps, final = text.split("\n\n")
        assert steps and all(STEP.match(s) for s in steps), text
        assert re.fullmatch(r"\\boxed\{-?\d+\}", final), text


# -- search quality on fixed seeds ----------------------------------------------------------------
# Fixed set: the "small" config (40 test chains of 3-4 operations, seed 0), the weak policy, N = 8,
# temperature 0.8, run seed 0. Thresholds: see QUALITY_* below and where they were measured.
QUALITY_SPEC = "small"
QUALITY_N = 8
# Measured on the merged main (commit 342100a: 2-core CPU, the shipped weak policy, run seeds 0 / 1 / 2,
# one BoN-8 run and one beam run (N = 8, M = 4) per seed, the exact PRM scoring every candidate):
#   single sample           0.316 / 0.356 / 0.328
#   BoN majority            0.525 / 0.450 / 0.500
#   BoN best-by-exact-PRM   0.650 / 0.775 / 0.750
#   beam with the exact PRM 0.700 / 0.750 / 0.750
# (The testbed branch before the merges measured majority 0.375 / 0.450 / 0.475 and PRM 0.650 each: the
# samples have changed since, so the margins are set on the smallest gap of either measurement.)
# Smallest gaps over the seeds: majority - single 0.094, PRM - majority 0.125, beam - majority 0.175;
# the tests run seed 0 and ask for about half of these.
QUALITY_MAJORITY_MARGIN = 0.04
QUALITY_PRM_MARGIN = 0.06
QUALITY_BEAM_MARGIN = 0.08


def run_search(strategy: str, budget: int, scorer: str | None = None, limit: int | None = None) -> list:
    """One search of the fixed set (its first ``limit`` problems) with the weak policy."""
    import asyncio

    from pumsearch.api import asearch, resolve_scorer
    from pumsearch.backends import load_generator
    from pumsearch.search.config import SearchConfig

    config = SearchConfig(
        strategy=strategy, budget=budget, temperature=0.8, max_tokens=64, max_step_tokens=16, seed=0
    )
    problems = testbed_problems(QUALITY_SPEC)[:limit]
    results = asyncio.run(asearch(problems, generator=load_generator("testbed:weak"),
                                  scorer=resolve_scorer(scorer, config), config=config))
    assert not [r for r in results if isinstance(r, BaseException)]
    return results


@pytest.fixture(scope="module")
def bon_results() -> list:
    """BoN-8 with the exact PRM over the fixed set, shared by the tests below (the policy is the
    slow part)."""
    return run_search("bon", QUALITY_N, scorer="testbed-prm")


def accuracy(results) -> float:
    return sum(bool(r.correct) for r in results) / len(results)


def majority_accuracy(results) -> float:
    from pumsearch.search.selection import select_candidate

    return sum(bool(select_candidate(r.candidates, "majority").correct) for r in results) / len(results)


@pytest.mark.slow
def test_bon_majority_beats_a_single_sample_with_the_weak_policy(bon_results):
    single = sum(bool(c.correct) for r in bon_results for c in r.candidates) / (len(bon_results) * QUALITY_N)
    majority = majority_accuracy(bon_results)
    assert majority >= single + QUALITY_MAJORITY_MARGIN, (single, majority)


@pytest.mark.slow
def test_bon_with_the_exact_prm_beats_bon_majority(bon_results):
    assert accuracy(bon_results) >= majority_accuracy(bon_results) + QUALITY_PRM_MARGIN


@pytest.mark.slow
def test_beam_with_the_exact_prm_beats_bon_majority(bon_results):
    from pumsearch.strategies import StrategyError, get_strategy

    try:
        get_strategy("beam")
    except StrategyError:
        pytest.skip("beam search is not in this build (it comes with the tree-search branch)")
    beam = accuracy(run_search("beam", QUALITY_N, scorer="testbed-prm"))
    majority = majority_accuracy(bon_results)
    # An exact PRM prunes every wrong step, so beam keeps the right prefixes that majority vote over
    # whole samples cannot find; margin measured above.
    assert beam >= majority + QUALITY_BEAM_MARGIN, (beam, majority)


# -- command line ---------------------------------------------------------------------------------
def test_cli_solves_with_a_testbed_policy_and_the_exact_prm(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "solve",
            QUESTION,
            "--model",
            "testbed:strong",
            "--scorer",
            "testbed-prm",
            "--budget",
            "4",
            "--max-tokens",
            "64",
            "--json",
            "--tree-out",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])  # stderr carries progress bars
    assert (
        record["prediction"] is not None
        and record["scorer"] == "testbed-prm"
        and (tmp_path / "t.json").exists()
    )


def test_cli_refuses_bad_testbed_input_in_one_line(tmp_path):
    for args in (
        ["solve", QUESTION, "--model", "testbed:medium"],
        ["testbed", "train", str(tmp_path), "--size", "x"],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert ("testbed:weak" in result.output) or ("base or small" in result.output)


def test_shipped_policy_stops_at_the_step_delimiter():
    """Tree search extends one step at a time with the stop string "\\n\\n" (a single token here)."""
    from pumsearch.backends import load_generator
    from pumsearch.search.protocols import GenerationRequest, SamplingParams

    generator = load_generator("testbed:weak")
    text, ids = generator.chat_prompt(QUESTION, "SYS")
    params = SamplingParams(temperature=0.0, max_tokens=16, stop=("\n\n",))
    (output,) = generator.generate_sync([GenerationRequest(text, ids, 1, params, seed=0)])
    (completion,) = output.completions
    assert completion.finish_reason == "step" and completion.matched_stop == "\n\n"
    assert STEP.match(completion.text), completion.text


def test_testbed_chains_load_as_a_dataset():
    from pumsearch.datasets import DatasetError, load_problems

    problems = load_problems("testbed:small", limit=5)
    assert [p.id for p in problems] == [p.id for p in testbed_problems("small")[:5]]
    with pytest.raises(DatasetError, match="testbed:nonsense=1"):
        load_problems("testbed:nonsense=1")


def test_dvts_read_off_groups_whole_subtrees():
    """DVTS gives the root M children per subtree: a run at N records N/M read-off groups, and
    every generated token lies in exactly one of them (two problems of the fixed set)."""
    from pumsearch.runs.subsample import group_rows, subsample
    from pumsearch.search.config import SearchConfig
    from pumsearch.strategies import DVTS

    dvts = DVTS(SearchConfig(strategy="dvts", budget=QUALITY_N))
    for result in run_search("dvts", QUALITY_N, scorer="testbed-prm", limit=2):
        groups = group_rows(result.tree, result.candidates, dvts.subsample_groups(result.tree, result.candidates))
        assert len(groups) == QUALITY_N // 4  # default beam width M = 4
        assert sum(g["tokens"] for g in groups) == result.counters.generated_tokens
        assert sum(len(g["candidates"]) for g in groups) == len(result.candidates)
        block = {"unit": "subtrees", "budget_per_group": 4, "value_kind": "probability", "groups": groups}
        assert subsample(block, 4, "best").generated_tokens == groups[0]["tokens"]


def test_a_search_that_states_no_answer_counts_as_wrong():
    """MCTS at N = 1 expands 8 first steps and finishes no solution: with a reference answer the
    result is wrong (False), not ungraded (None), so reports and summaries do not drop it."""
    from types import SimpleNamespace

    from pumsearch.runs.report import wrong_if_unanswered
    from pumsearch.runs.runner import record_extras

    results = run_search("mcts", 1, scorer="testbed-prm")
    unanswered = [r for r in results if r.answer is None]
    assert unanswered and all(r.correct is False for r in unanswered)
    run_dir = SimpleNamespace(spec=SimpleNamespace(key="k", subsample=None))
    extras = record_extras(unanswered[0], run_dir, "probability")
    assert extras["pass_at_n"] is False and extras["maj_at_n"] is False
    assert wrong_if_unanswered(None, {"reference": "3"}) is False
    assert wrong_if_unanswered(None, {"reference": None}) is None
    assert wrong_if_unanswered(True, {"reference": "3"}) is True
