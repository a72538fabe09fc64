"""Adaptive Best-of-N: the stop rules against hand-computed values, waves on the scripted generator,
the saved-token counter, and read-off budgets that equal direct runs at those caps.

References (line numbers at these commits):
- AC: Pranjal2041/AdaptiveConsistency @ 899ab56, adaptive_consistency/stopping_criterias.py:
  BetaStoppingCriteria 17-53 (P(p > 0.5) under Beta(a+1, b+1) by numerical integration, 44),
  MajorityStoppingCriteria 98-117 (most common count / number of answers).
- DeepConf (Fu et al. 2025): beta = V(leader) / sum_a V(a) >= tau; facebookresearch/deepconf @
  675529d ships no adaptive-sampling code (wrapper.py:223-235 launches every trace at once).
- its_hub @ e4d00d1 has no early stop (algorithms/self_consistency.py:50-78 samples `budget` at once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pumsearch.api import make_strategy
from pumsearch.backends.scripted import ScriptedGenerator, counting_policy
from pumsearch.cli import app
from pumsearch.runs.records import merge_record_files
from pumsearch.runs.subsample import subsample
from pumsearch.search.engine import Engine
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import ROOT
from pumsearch.strategies import StrategyError, search_config
from pumsearch.strategies.adaptive_bon import (
    beta_rule,
    class_totals,
    consensus_rule,
    leader_beats_runner_up,
    supermajority_rule,
)
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_search import problems, run, scripted_scorer


# -- the rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "expected"), [
    (0, 0, Fraction(1, 2)),
    (3, 0, Fraction(15, 16)),    # P(Bin(4, 1/2) <= 3) = 1 - 1/16
    (4, 0, Fraction(31, 32)),
    (3, 1, Fraction(13, 16)),    # (1 + 5 + 10 + 10) / 32
    (5, 1, Fraction(15, 16)),    # 1 - (7 + 1) / 128
    (6, 1, Fraction(247, 256)),  # 1 - (8 + 1) / 256
])
def test_beta_posterior_that_the_leader_beats_the_runner_up(a: int, b: int, expected: Fraction) -> None:
    assert leader_beats_runner_up(a, b) == pytest.approx(float(expected), abs=1e-15)


@pytest.mark.parametrize(("a", "b"), [(1, 0), (2, 1), (7, 3), (12, 9), (30, 2)])
def test_the_closed_form_equals_the_references_integral(a: int, b: int) -> None:
    # AC stopping_criterias.py:44: integral_0.5^1 x^a (1-x)^b dx / integral_0^1 x^a (1-x)^b dx
    x = np.linspace(0.0, 1.0, 400_001)
    f = x**a * (1 - x) ** b
    upper = np.trapezoid(f[x >= 0.5], x[x >= 0.5])
    assert leader_beats_runner_up(a, b) == pytest.approx(upper / np.trapezoid(f, x), rel=1e-8)


def test_beta_rule_reads_the_two_largest_classes() -> None:
    assert beta_rule([4.0], 4, 0.95).settled  # 31/32
    assert not beta_rule([3.0], 3, 0.95).settled  # 15/16 = 0.9375
    verdict = beta_rule([1.0, 6.0, 1.0], 9, 0.95)  # a = 6, b = 1: 247/256
    assert verdict.settled and verdict.statistic == pytest.approx(247 / 256)
    assert not beta_rule([], 4, 0.95).settled  # nobody answered: 1/2


def test_supermajority_counts_every_solution_drawn() -> None:
    # AC 113-115: most common count / len(answers), every answer counted
    assert supermajority_rule([4.0, 1.0], 5, 0.8).settled
    verdict = supermajority_rule([3.0, 1.0], 5, 0.8)  # one solution stated no answer
    assert not verdict.settled and verdict.statistic == pytest.approx(0.6)
    assert not supermajority_rule([1.0], 1, 0.8).settled  # AC 113: one answer is no majority


def test_consensus_is_the_leaders_share_of_the_weighted_vote() -> None:
    verdict = consensus_rule([19.0, 0.9], 10, 0.95)  # 19 / 19.9 = 0.9548
    assert verdict.settled and verdict.statistic == pytest.approx(19 / 19.9)
    assert consensus_rule([20.0, 19.0, 15.0], 10, 0.95).statistic == pytest.approx(20 / 54)


def test_class_totals_count_voters_by_class_and_skip_missing_answers() -> None:
    cands = [Candidate(1, "3"), Candidate(2, None), Candidate(3, "4"), Candidate(4, "3"), Candidate(5, "")]
    assert class_totals(cands) == [2.0, 1.0]
    assert class_totals(cands, [0.5, 9.0, 0.25, 0.5, 9.0]) == [1.0, 0.25]


# -- waves on the scripted generator ----------------------------------------------------------------
def answering(answers: list[str]) -> Callable:
    """Solution k (in call order) has two steps and states ``answers[k]`` (the last one thereafter)."""
    calls = [0]

    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        k = calls[0]
        calls[0] += 1
        return f"Step one {k}.\n\nThe answer is \\boxed{{{answers[min(k, len(answers) - 1)]}}}."

    return policy


def adaptive(**options) -> object:
    return search_config(strategy="bon", adaptive=True, **options)


def test_a_unanimous_first_wave_stops_and_saves_the_rest_of_the_cap() -> None:
    generator = ScriptedGenerator(answering(["7"] * 16))
    (result,), _ = run(problems(1), adaptive(budget=16, wave_size=4), generator, scripted_scorer())
    assert len(generator.calls) == 1 and len(result.candidates) == 4  # (4, 0): 31/32 >= 0.95
    tokens = sum(a["num_tokens"] for _, a in result.tree.iter_nodes())
    assert result.counters.saved_tokens == round(12 * tokens / 4)
    assert result.tree[ROOT]["adaptive"] == {"rule": "beta", "threshold": 0.95, "statistic": 0.96875,
                                             "settled": True, "solutions": 4, "undrawn": 12}
    assert result.answer == "7"


def test_waves_continue_until_the_rule_settles() -> None:
    # waves of 2: (2, 0) gives 7/8, (4, 0) 31/32 -> two waves
    generator = ScriptedGenerator(answering(["5"] * 16))
    (result,), _ = run(problems(1), adaptive(budget=16, wave_size=2), generator, scripted_scorer())
    assert len(generator.calls) == 2 and len(result.candidates) == 4
    assert [r.n for call in generator.calls for r in call] == [2, 2]


def test_an_unsettled_vote_draws_the_whole_cap_and_saves_nothing() -> None:
    generator = ScriptedGenerator(answering(["1", "2", "3"] * 4))
    (result,), _ = run(problems(1), adaptive(budget=10, wave_size=4), generator, scripted_scorer())
    assert [r.n for call in generator.calls for r in call] == [4, 4, 2]  # the last wave fills the cap
    assert len(result.candidates) == 10 and result.counters.saved_tokens == 0
    assert result.tree[ROOT]["adaptive"]["settled"] is False


def test_supermajority_and_its_threshold() -> None:
    generator = ScriptedGenerator(answering(["1", "1", "1", "2", "1", "1", "1", "1"]))
    config = adaptive(budget=8, wave_size=4, stop_rule="supermajority", stop_threshold=0.75)
    (result,), _ = run(problems(1), config, generator, scripted_scorer())
    assert len(result.candidates) == 4  # 3 of 4 = 0.75
    generator = ScriptedGenerator(answering(["1", "1", "1", "2", "1", "1", "1", "1"]))
    (result,), _ = run(problems(1), adaptive(budget=8, wave_size=4, stop_rule="supermajority"), generator,
                       scripted_scorer())
    assert len(result.candidates) == 8  # 0.75 then 7 of 8 = 0.875 >= 0.8 at the cap


def by_answer(values: dict[str, float]) -> Callable[[tuple[str, ...]], float]:
    return lambda steps: next((v for a, v in values.items() if f"boxed{{{a}}}" in steps[-1]), 0.5)


def test_consensus_weighs_votes_by_score_when_the_run_has_a_scorer() -> None:
    answers = ["1", "1", "1", "2"] * 4
    scores = by_answer({"1": 0.95, "2": 0.1})
    # weighted: 2.85 / 2.95 = 0.966 >= 0.95 after one wave; counted: 3/4 = 0.75 at every wave
    (weighted,), _ = run(problems(1), adaptive(budget=16, stop_rule="consensus"),
                         ScriptedGenerator(answering(answers)), scripted_scorer(scores))
    assert len(weighted.candidates) == 4
    assert weighted.tree[ROOT]["adaptive"]["statistic"] == pytest.approx(2.85 / 2.95, abs=1e-6)
    strategy = make_strategy(adaptive(budget=16, stop_rule="consensus"), False)
    engine = Engine(ScriptedGenerator(answering(answers)))
    (counted,) = asyncio.run(engine.run(problems(1), strategy))
    assert len(counted.candidates) == 16 and counted.tree[ROOT]["adaptive"]["statistic"] == 0.75


def test_consensus_with_a_scorer_answers_by_the_weighted_vote_it_read() -> None:
    scores = by_answer({"1": 0.97, "2": 0.01})  # V(1) = 0.97, V(2) = 0.03: settled at 0.97
    config = adaptive(budget=16, stop_rule="consensus")
    (result,), _ = run(problems(1), config, ScriptedGenerator(answering(["2", "2", "1", "2"])), scripted_scorer(scores))
    assert len(result.candidates) == 4 and result.answer == "1"  # the majority would say 2
    (majority,), _ = run(problems(1), adaptive(budget=16, stop_rule="consensus", select="majority"),
                         ScriptedGenerator(answering(["2", "2", "1", "2"])), scripted_scorer(scores))
    assert len(majority.candidates) == 4 and majority.answer == "2"  # an explicit --select wins


def test_one_backend_call_per_wave_for_every_live_problem() -> None:
    generator = ScriptedGenerator(counting_policy(2, answers=("1", "2")))
    results, _ = run(problems(3), adaptive(budget=12, wave_size=3), generator, scripted_scorer())
    waves = max(len(r.candidates) for r in results) // 3
    assert len(generator.calls) == waves
    for i, call in enumerate(generator.calls):
        live = sum(1 for r in results if len(r.candidates) > 3 * i)
        assert len(call) == live  # one request of 3 samples per problem still sampling
    for r in results:
        assert r.counters.backend_calls == len(r.candidates) // 3


def test_without_the_option_bon_is_plain_best_of_n() -> None:
    generator = ScriptedGenerator(answering(["7"] * 8))
    (result,), _ = run(problems(1), search_config(strategy="bon", budget=8, wave_size=2), generator,
                       scripted_scorer())
    assert len(generator.calls) == 1 and len(result.candidates) == 8
    assert "adaptive" not in result.tree[ROOT] and result.counters.saved_tokens == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"stop_threshold": 0.0}, r"--stop-threshold must be in \(0, 1\]"),
    ({"stop_threshold": 1.2}, r"--stop-threshold must be in \(0, 1\]"),
    ({"wave_size": 0}, "--wave-size must be at least 1"),
    ({"stop_rule": "entropy"}, "unknown --stop-rule 'entropy'"),
])
def test_bad_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        make_strategy(adaptive(budget=8, **options), False)


# -- read-off budgets ------------------------------------------------------------------------------
def test_read_off_budgets_equal_direct_runs_at_those_caps(tmp_path: Path) -> None:
    """A run at cap 8 read at n is the run at cap n: below where it stopped, the first n solutions
    (cap n stops there); above, the whole run (its rule never looks at the cap)."""
    data = write_gsm8k_style(tmp_path / "d.jsonl", 12)
    flags = ["--backend", "scripted", "--dataset", str(data), "--adaptive", "--wave-size", "2",
             "--stop-rule", "supermajority", "--stop-threshold", "0.6", "--max-tokens", "64"]
    runner = CliRunner()
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", *flags, "--strategies", "bon", "--budgets", "3,5,8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (big,) = [d for d in out.iterdir() if d.is_dir()]
    read = merge_record_files(big.glob("records*.jsonl"))
    stopped = [r for r in read.values() if r["subsample"]["stopped_early"]]
    assert 0 < len(stopped) < len(read)  # some problems settled early, some did not
    assert any(len(r["subsample"]["groups"]) < 3 for r in stopped)  # read-off 3 and 5 reuse whole runs
    for cap in (3, 5):
        direct_dir = tmp_path / f"cap{cap}"
        result = runner.invoke(app, ["run", *flags, "--strategy", "bon", "--budget", str(cap),
                                     "--out", str(direct_dir)])
        assert result.exit_code == 0, result.output
        direct = merge_record_files(direct_dir.glob("records*.jsonl"))
        for pid, record in read.items():
            sub = subsample(record["subsample"], cap, "majority")
            want = direct[pid]
            assert sub is not None
            assert (sub.prediction, sub.correct, sub.generated_tokens) == (
                want["prediction"], want["correct"], want["counters"]["generated_tokens"]), (cap, pid)
    report = runner.invoke(app, ["report", str(out), "--json", str(tmp_path / "r.json")])
    assert report.exit_code == 0, report.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {(r["budget"], r["n"]) for r in rows if r["select"] == "majority"} == {(3, 12), (5, 12), (8, 12)}
