"""The confidence scorer (DeepConf, facebookresearch/deepconf @ 675529d172ef6d240aa1f21cb60940d427cc1ea6),
the token confidences the search records on its nodes, the --keep filter, and the default scorer.

Reference lines cited are of deepconf/utils.py and deepconf/wrapper.py at that commit. The worked
examples (hand-computed) follow the paper's definitions as the reference code implements them.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pumsearch.api import (
    CONFIDENCE_NOTE,
    MEASURED_WITH_CONFIDENCE,
    NO_LOGPROBS,
    NO_SCORER_ERROR,
    NO_SCORER_NOTE,
    NOT_MEASURED,
    UNKNOWN_LOGPROBS,
    apply_default,
    asearch,
    search_default,
    solve,
)
from pumsearch.backends import load_generator
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.cli import app
from pumsearch.runs.subsample import subsample
from pumsearch.scorers import load_scorer
from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.confidence import MEASURES, group_confidences, likelihood
from pumsearch.search.context import token_confidence
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.search.selection import Candidate, choose, most_confident
from pumsearch.strategies import StrategyError, make_strategy, search_config
from pumsearch.testbed import testbed_problems
from tests.helpers_search import scripted_scorer

runner = CliRunner()


# -- the measures: hand-computed cases ----------------------------------------------------------------
def test_token_confidence_is_minus_the_mean_of_the_top_k_log_probabilities() -> None:
    """utils.py:41-50 (C = -mean of the returned top-k log-probabilities); k = 3 here."""
    assert token_confidence([(5, -0.05), (9, -3.2), (2, -4.1)]) == pytest.approx(7.35 / 3)
    assert token_confidence([(0, -1.0986)] * 3) == pytest.approx(1.0986)  # uniform over 3: ln 3
    assert token_confidence([]) == 0.0


CONFS = [2.0, 1.0, 3.0, 0.4, 2.6, 1.2]


def test_group_lowest_bottom_tail_and_mean_confidence() -> None:
    """Sliding windows of stride 1 (utils.py:53-62), the lowest group (min_conf, utils.py:290-301), the
    mean of the lowest max(1, int(G * 0.1)) groups (utils.py:116-147), the mean of the last tokens
    (utils.py:104-113), the mean (utils.py:93-101)."""
    assert group_confidences(CONFS, 3) == pytest.approx([2.0, 4.4 / 3, 2.0, 1.4])
    measure = {name: (lambda confs, window, bottom=0.1, f=f: f(confs, window, bottom)) for name, f in MEASURES.items()}
    assert measure["lowest_group"](CONFS, 3) == pytest.approx(1.4)
    assert measure["bottom_group"](CONFS, 3) == pytest.approx(1.4)  # int(4 * 0.1) = 0 -> the lowest one
    assert measure["bottom_group"](CONFS, 3, 0.5) == pytest.approx((1.4 + 4.4 / 3) / 2)
    assert measure["tail"](CONFS, 2) == pytest.approx(1.9)
    assert measure["mean"](CONFS, 3) == pytest.approx(1.7)
    for name in MEASURES:  # a prefix shorter than the window is one group: every measure is the mean
        assert measure[name](CONFS, 8) == pytest.approx(1.7), name
    assert all(measure[name]([], 3) == 0.0 for name in MEASURES)  # an empty trace scores 0 (utils.py:56, 99)


def test_likelihood_is_the_per_token_probability_of_the_sampled_tokens() -> None:
    """Not a DeepConf measure: exp(mean log p) of the sampled tokens; ln 0.5 and ln 0.125 -> 0.25."""
    assert likelihood([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert likelihood([]) == 0.0
    scorer = load_scorer("confidence", measure="likelihood")
    item = ScoreItem(Problem("p", "q"), ("a",), token_confidences=(9.0, 9.0),
                     token_logprobs=(math.log(0.5), math.log(0.125)))
    (score,) = asyncio.run(scorer.score([item]))
    assert score.value == pytest.approx(0.25) and scorer.identity.startswith("confidence:likelihood:")


# -- the filter and the votes ------------------------------------------------------------------------
# Ten traces, (confidence, answer): the weighted vote sums confidences per answer (utils.py:76-90)
TRACES = [(5, "A"), (3, "B"), (8, "A"), (6, "B"), (2, "B"), (7, "A"), (4, "B"), (9, "C"), (1, "B"), (10, "C")]


def _candidates() -> list[Candidate]:
    return [Candidate(i, answer, float(conf)) for i, (conf, answer) in enumerate(TRACES)]


def test_the_filter_keeps_traces_at_or_above_the_percentile_of_the_fraction_dropped() -> None:
    """threshold = np.percentile(confs, (1 - keep) * 100), linear; keep conf >= threshold
    (utils.py:170-178): keep 0.1 -> P90 = 9.1, keep 0.9 -> P10 = 1.9, keep 0.5 -> P50 = 5.5."""
    scores = [float(c) for c, _ in TRACES]
    assert [c for c, k in zip(scores, most_confident(scores, 0.1), strict=True) if k] == [10.0]
    assert sorted(c for c, k in zip(scores, most_confident(scores, 0.9), strict=True) if k) == list(range(2, 11))
    assert sorted(c for c, k in zip(scores, most_confident(scores, 0.5), strict=True) if k) == [6, 7, 8, 9, 10]
    assert all(most_confident([3.0, 3.0, 3.0], 0.1))  # ties at the threshold are all kept


@pytest.mark.parametrize(("how", "keep", "answer"), [
    ("majority", 1.0, "B"),    # 5 votes
    ("weighted", 1.0, "A"),    # A 20, C 19, B 16: the paper's confidence-weighted vote, raw confidences
    ("weighted", 0.1, "C"),    # only 10:C is kept
    ("weighted", 0.9, "A"),    # 1:B dropped: A 20, C 19, B 15
    ("weighted", 0.5, "C"),    # {8A, 6B, 7A, 9C, 10C}: C 19, A 15, B 6
    # the reference's deepthink() answer: the voting traces (filtered in online mode), then PLAIN
    # majority (wrapper.py:147-159 overwrite the weighted vote of wrapper.py:304-338)
    ("majority", 0.9, "B"),    # B still has 4 votes of the 9 kept
    ("majority", 0.5, "A"),    # A 2, C 2, B 1: the tie goes to the class seen first (8:A)
])
def test_filtered_and_weighted_votes_follow_deepconf(how: str, keep: float, answer: str) -> None:
    choice = choose(_candidates(), how, "positive", keep)
    assert choice.candidate is not None and choice.candidate.answer == answer


def test_positive_values_weigh_votes_as_they_are_unbounded_ones_normalised() -> None:
    cands = [Candidate(0, "A", 10.0), Candidate(1, "B", 9.0), Candidate(2, "B", 9.0)]
    assert choose(cands, "weighted", "positive").candidate.answer == "B"  # 18 > 10
    assert choose(cands, "weighted", "unbounded").candidate.answer == "A"  # min-max: A 1, B 0 + 0


def test_the_filter_drops_unscored_and_unanswered_voters_first() -> None:
    cands = [Candidate(0, "A", None), Candidate(1, None, 99.0), Candidate(2, "B", 1.0), Candidate(3, "C", 2.0)]
    assert choose(cands, "majority", "positive", keep=0.5).candidate.answer == "C"
    none_scored = [Candidate(0, "A", None), Candidate(1, "A", None), Candidate(2, "B", None)]
    choice = choose(none_scored, "majority", "positive", keep=0.5)
    assert choice.candidate.answer == "A" and "no filter" in choice.note


def test_read_off_budgets_filter_as_the_run_did() -> None:
    groups = [{"tokens": 3, "candidates": [{"answer": a, "score": float(c), "correct": a == "C"}]} for c, a in TRACES]
    block = {"unit": "solutions", "budget_per_group": 1, "value_kind": "positive", "groups": groups}
    assert subsample(block, 10, "majority").prediction == "B"
    assert subsample({**block, "keep": 0.1}, 10, "majority").prediction == "C"
    assert subsample({**block, "keep": 0.1}, 10, "majority").maj_at_n is False  # maj@N stays unfiltered


# -- the scorer ----------------------------------------------------------------------------------------
def test_the_scorer_counts_calls_but_no_tokens_and_needs_the_confidences() -> None:
    scorer = load_scorer("confidence", measure="lowest_group", window=3)
    assert scorer.identity == "confidence:lowest_group:window=3:k=20" and scorer.top_logprobs == 20
    assert scorer.value_kind == "positive"
    problem = Problem("p", "q")
    item = ScoreItem(problem, ("a",), token_confidences=tuple(CONFS), token_logprobs=(-0.1,) * len(CONFS))
    (score,) = asyncio.run(scorer.score([item]))
    assert score.value == pytest.approx(1.4) and score.extra["tokens"] == 0
    assert scorer.stats.tokens == 0 and scorer.stats.calls == 1
    with pytest.raises(ScorerError, match="inside a search"):
        asyncio.run(scorer.score([ScoreItem(problem, ("b",))]))


@pytest.mark.parametrize(("options", "message"), [
    ({"measure": "median"}, "unknown confidence measure 'median'"),
    ({"window": 0}, "window must be a whole number of at least 1"),
    ({"window": 2.5}, "window must be a whole number"),
    ({"k": -1}, "k must be a whole number of at least 1"),
    ({"bottom": 0}, "bottom must be a fraction in (0, 1]"),
    ({"temperature": 1}, "has no option temperature"),
])
def test_bad_scorer_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ScorerError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_scorer("confidence", **options)


# -- recording on the nodes, on a real model --------------------------------------------------------------
@pytest.fixture(scope="module")
def testbed_policy():
    return load_generator("testbed:weak")


def _reference_values(generator, prompt_ids: tuple[int, ...], generated: list[int], k: int
                      ) -> tuple[list[float], list[float]]:
    """From one plain forward: -mean of the top-k of log_softmax at each generated position, and the
    log-probability of each generated token."""
    with torch.inference_mode():
        logits = generator.model(torch.tensor([list(prompt_ids) + generated])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(generated)], dim=-1)
    sampled = logprobs.gather(1, torch.tensor(generated)[:, None])[:, 0]
    return (-logprobs.topk(k, dim=-1).values.mean(dim=-1)).tolist(), sampled.tolist()


def test_beam_with_confidence_records_each_tokens_confidence_and_costs_no_scorer_tokens(testbed_policy) -> None:
    scorer = load_scorer("confidence", measure="lowest_group", k=5)
    problem = testbed_problems("standard,n=1")[0]
    strategy = make_strategy(search_config(strategy="beam", budget=4, max_tokens=64, max_step_tokens=16), True)
    (result,) = asyncio.run(asearch([problem], generator=testbed_policy, scorer=scorer, strategy=strategy))
    assert result.counters.scorer_calls >= 1 and result.counters.scorer_tokens == 0
    prompt_ids = testbed_policy.chat_prompt(problem.question, strategy.config.system_prompt)[1]
    nodes = [n for n, _ in result.tree.iter_nodes() if n != 0]
    for node in nodes:
        attrs = result.tree[node]
        assert len(attrs["token_confidences"]) == attrs["num_tokens"]
        value = attrs["scores"][scorer.identity]
        path = result.tree.path(node)
        every = [c for n in path for c in result.tree[n]["token_confidences"]]
        assert value == pytest.approx(sum(every) / len(every))  # lowest group over a 2048 window = the mean
    deepest = max(nodes, key=lambda n: result.tree[n]["depth"])
    ids = [t for n in result.tree.path(deepest) for t in result.tree[n]["token_ids"]]
    expected, sampled = _reference_values(testbed_policy, prompt_ids, ids, 5)
    recorded = [c for n in result.tree.path(deepest) for c in result.tree[n]["token_confidences"]]
    assert recorded == pytest.approx(expected, abs=1e-4)
    recorded = [v for n in result.tree.path(deepest) for v in result.tree[n]["token_logprobs"]]
    assert recorded == pytest.approx(sampled, abs=1e-4)


def test_best_of_n_chains_share_out_the_confidences_like_the_token_counts(testbed_policy) -> None:
    scorer = load_scorer("confidence")  # the default measure: likelihood
    problem = testbed_problems("standard,n=1")[0]
    strategy = make_strategy(search_config(strategy="bon", budget=3, max_tokens=64, select="weighted", keep=0.5), True)
    (result,) = asyncio.run(asearch([problem], generator=testbed_policy, scorer=scorer, strategy=strategy))
    for cand in result.candidates:
        path = result.tree.path(cand.node)
        for key in ("token_confidences", "token_logprobs"):
            assert all(len(result.tree[n][key]) == result.tree[n]["num_tokens"] for n in path)
        every = [v for n in path for v in result.tree[n]["token_logprobs"]]
        assert cand.score == pytest.approx(math.exp(sum(every) / len(every)))
        # each token's log-probability once: they add up to the solution's
        assert sum(every) == pytest.approx(sum(result.tree[n]["logprob"] or 0.0 for n in path), abs=1e-4)


def test_log_probabilities_are_asked_for_only_where_something_reads_them() -> None:
    """Zero cost otherwise: no scorer or strategy that reads them, no log-probabilities requested."""
    problem = Problem("p", "q")
    for config, scorer, wanted in (
        (search_config(strategy="beam", budget=4), scripted_scorer(), (False, 0)),
        (search_config(strategy="mcts", budget=2, priors="uniform"), scripted_scorer(), (False, 0)),
        (search_config(strategy="mcts", budget=2), scripted_scorer(), (True, 0)),  # priors: each step's logprob
    ):
        generator = ScriptedGenerator()
        asyncio.run(asearch([problem], generator=generator, scorer=scorer, strategy=make_strategy(config, True)))
        asked = {(r.params.want_logprobs, r.params.top_logprobs) for call in generator.calls for r in call}
        assert asked == {wanted}, config.strategy


def test_a_backend_without_log_probabilities_cannot_feed_the_confidence_scorer() -> None:
    generator = ScriptedGenerator()
    strategy = make_strategy(search_config(strategy="beam", budget=4), True)
    (outcome,) = asyncio.run(asearch([Problem("p", "q")], generator=generator, scorer=load_scorer("confidence"),
                                     strategy=strategy))
    assert isinstance(outcome, ValueError) and "no per-token top log-probabilities" in str(outcome)
    assert {r.params.top_logprobs for call in generator.calls for r in call} == {20}


# -- bad input on the command line -------------------------------------------------------------------
def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    text = " ".join(result.output.split())
    assert len(lines) <= 2 and all(n in text for n in needles), result.output  # rich may wrap the one line


@pytest.mark.parametrize(("args", "needles"), [
    (["--scorer", "confidence", "--scorer-option", "windw=8"], ["has no option windw", "window"]),
    (["--scorer", "confidence", "--scorer-option", "window=0"], ["window must be a whole number of at least 1"]),
    (["--scorer", "confidence", "--scorer-option", "k=0"], ["k must be a whole number of at least 1"]),
    (["--scorer", "confidence", "--scorer-option", "measure=best"], ["unknown confidence measure"]),
    (["--strategy", "bon", "--keep", "0"], ["--keep must be a fraction in (0, 1]"]),
    (["--strategy", "bon", "--keep", "1.5"], ["--keep must be a fraction in (0, 1]"]),
    (["--strategy", "bon", "--keep", "0.5"], ["--keep filters the solutions by score: pass --scorer"]),
    (["--scorer", "confidence", "--backend", "scripted"], ["does not return", "use --backend transformers"]),
    (["--strategy", "mcts", "--scorer", "verifier", "--answer", "4", "--priors", "softmax"], ["unknown --priors"]),
    # no scorer, and no log-probabilities for the confidence scorer: refused, not run as Best-of-N
    (["--strategy", "particles", "--backend", "scripted"],
     ["no --scorer: particles needs one", "--backend scripted returns no token log-probabilities",
      "--scorer confidence with a backend that returns them (transformers,", "--scorer prm|pum|orm"]),
    (["--strategy", "rebase", "--backend", "scripted"], ["no --scorer: rebase needs one", "--scorer prm|pum|orm"]),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needles: list[str]) -> None:
    result = runner.invoke(app, ["solve", "what is 1 + 3", "--model", "/nonexistent/model", *args])
    _one_line_error(result, *needles)


def test_score_cannot_read_confidences_off_a_steps_file(tmp_path: Path) -> None:
    steps = tmp_path / "steps.txt"
    steps.write_text("1 + 3 = 4\n\n\\boxed{4}")
    result = runner.invoke(app, ["score", "--scorer", "confidence", "--question", "what is 1 + 3",
                                 "--steps-file", str(steps)])
    _one_line_error(result, "inside a search", "transformers")


def test_run_refuses_a_backend_that_cannot_feed_it_before_making_a_directory(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--backend", "scripted", "--dataset", str(data), "--strategy", "beam",
                                 "--scorer", "confidence", "--out", str(out)])
    _one_line_error(result, "--backend scripted does not return", "transformers")
    assert not out.exists()
    refused = runner.invoke(app, ["run", "--backend", "scripted", "--dataset", str(data), "--strategy", "rebase",
                                  "--out", str(out)])  # no scorer: nothing to weigh REBASE's nodes with
    _one_line_error(refused, "no --scorer: rebase needs one", "--backend scripted returns no token")
    assert not out.exists()


# -- the default when no scorer is named ----------------------------------------------------------------
def test_the_default_rule() -> None:
    """A named scorer always wins (not this function's business); the model family's scorer next;
    then, for a strategy that needs a scorer, the confidence scorer where it was measured to beat
    majority vote at equal tokens and the backend returns log-probabilities, else Best-of-N
    majority, or for particle filtering and REBASE a one-line refusal (docs/scorers.md, "The default
    scorer")."""
    assert search_default(None, "bon") is None  # Best-of-N votes without one
    default = search_default("some/model", "beam")
    assert default is not None and (default.scorer, default.strategy) == ("confidence", None)
    assert default.note == CONFIDENCE_NOTE.format(strategy="beam", measured=MEASURED_WITH_CONFIDENCE["beam"])
    assert "majority vote" in default.note and "--scorer prm|pum|orm --scorer-model PATH" in default.note
    asked = search_config(strategy="beam", budget=8, beam_width=2)
    assert apply_default(asked, default) is asked  # beam as asked, with its settings
    for strategy, backend, why, name in [
        ("beam", "scripted", NO_LOGPROBS.format(backend="scripted"), "beam"),  # the backend cannot feed it
        ("mcts", None, UNKNOWN_LOGPROBS, "mcts"),  # a generator object: its log-probabilities are unknown
        ("tests.test_recipes:KeepBest", "transformers", NOT_MEASURED, "keep-best"),  # not measured with it
    ]:
        fallback = search_default("some/model", strategy, backend)
        assert fallback is not None and (fallback.scorer, fallback.strategy) == (None, "bon"), strategy
        assert fallback.note == NO_SCORER_NOTE.format(strategy=name, why=why)
    for strategy in ("particles", "rebase"):  # measured with it too, so they take it where it can run
        default = search_default("some/model", strategy)
        assert default is not None and (default.scorer, default.strategy) == ("confidence", None)
        assert default.note == CONFIDENCE_NOTE.format(strategy=strategy, measured=MEASURED_WITH_CONFIDENCE[strategy])
        # where it cannot, they are refused: Best-of-N in their place would not be what was asked for
        for backend, why in (("scripted", NO_LOGPROBS.format(backend="scripted")), (None, UNKNOWN_LOGPROBS)):
            with pytest.raises(StrategyError) as refused:
                search_default("some/model", strategy, backend)
            able = "transformers, sglang, sglang-server, openai"
            assert str(refused.value) == NO_SCORER_ERROR.format(strategy=strategy, why=why, able=able)
        family = search_default("testbed:weak", strategy, "scripted")  # the family's scorer needs no logprobs
        assert family is not None and family.scorer == "testbed-prm" and family.from_family
    testbed = search_default("testbed:weak", "beam")  # the model family's own default wins
    assert testbed is not None and testbed.scorer == "testbed-prm" and testbed.strategy is None and testbed.from_family
    config = apply_default(search_config(strategy="beam", budget=8, beam_width=2), fallback)
    assert (config.strategy, config.budget, config.strategy_options) == ("bon", 8, {})


def test_solve_a_tree_search_with_no_scorer_scores_by_confidence_and_says_so(step_llama_dir: Path,
                                                                              tmp_path: Path) -> None:
    args = ["solve", "what is 1 + 3", "--model", str(step_llama_dir), "--strategy", "beam", "--budget", "4",
            "--max-tokens", "24", "--max-step-tokens", "8"]
    result = runner.invoke(app, [*args, "--json", "--tree-out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert (record["strategy"], record["scorer"]) == ("beam", "confidence")
    assert record["scorer_default"] == search_default(str(step_llama_dir), "beam").note
    assert record["counters"]["scorer_tokens"] == 0 and record["counters"]["scorer_calls"] > 0
    shown = runner.invoke(app, [*args, "--tree-out", str(tmp_path / "u.json")])
    assert shown.exit_code == 0 and "no --scorer: beam scores by the policy's own" in " ".join(shown.output.split())
    named = runner.invoke(app, [*args, "--scorer", "verifier", "--answer", "4", "--json",
                                "--tree-out", str(tmp_path / "v.json")])
    record = json.loads(named.stdout.strip().splitlines()[-1])
    assert (record["strategy"], record["scorer"]) == ("beam", "verifier")  # a named scorer wins
    assert "scorer_default" not in record


@pytest.mark.parametrize("strategy", ["particles", "rebase"])
def test_particles_and_rebase_with_no_scorer_weigh_by_confidence(strategy: str, step_llama_dir: Path,
                                                                  tmp_path: Path) -> None:
    result = runner.invoke(app, ["solve", "what is 1 + 3", "--model", str(step_llama_dir), "--strategy", strategy,
                                 "--budget", "4", "--max-tokens", "24", "--max-step-tokens", "8", "--json",
                                 "--tree-out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert (record["strategy"], record["scorer"]) == (strategy, "confidence")
    assert record["scorer_default"] == search_default(str(step_llama_dir), strategy).note
    assert record["counters"]["scorer_calls"] > 0 and record["counters"]["scorer_tokens"] == 0


def test_the_api_says_which_default_it_took(step_llama_dir: Path) -> None:
    with pytest.warns(UserWarning, match="no --scorer: beam scores by the policy's own"):
        result = solve("what is 1 + 3", model=str(step_llama_dir), strategy="beam", budget=2, beam_width=2,
                       max_tokens=16)
    assert result.strategy == "beam"
    assert list(result.tree[result.chosen_node]["scores"]) == ["confidence:likelihood:window=2048:k=20"]
    with pytest.warns(UserWarning, match="no --scorer: beam needs one"):  # a generator object: unknown logprobs
        result = solve("what is 1 + 3", generator=ScriptedGenerator(), strategy="beam", budget=2, beam_width=2)
    assert result.strategy == "bon" and len(result.candidates) == 2
    with pytest.raises(StrategyError, match="no --scorer: particles needs one, and a generator object may"):
        solve("what is 1 + 3", generator=ScriptedGenerator(), strategy="particles", budget=2)


def test_run_with_no_scorer_records_the_default_and_keys_like_naming_it(step_llama_dir: Path,
                                                                        tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "what is 1 + 3", "answer": "4"}) + "\n")
    common = ["run", "--model", str(step_llama_dir), "--dataset", str(data), "--budget", "4", "--max-tokens", "16",
              "--strategy", "beam", "--beam-width", "2"]
    default = runner.invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert default.exit_code == 0, default.output
    assert "no --scorer: beam scores by the policy's own" in " ".join(default.output.split())
    (record,) = [json.loads(line) for line in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    assert (record["strategy"], record["scorer"]) == ("beam", "confidence")
    assert record["scorer_default"] == search_default(str(step_llama_dir), "beam").note
    named = runner.invoke(app, [*common, "--scorer", "confidence", "--out", str(tmp_path / "b")])
    assert named.exit_code == 0, named.output
    (other,) = [json.loads(line) for line in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    assert other["run_key"] == record["run_key"] and "scorer_default" not in other
    assert other["prediction"] == record["prediction"]  # the same search


def test_keep_needs_a_fraction_in_the_api_too() -> None:
    with pytest.raises(StrategyError, match="--keep must be a fraction"):
        make_strategy(search_config(strategy="bon", keep=0.0), True)


@pytest.mark.slow
@pytest.mark.embedded
def test_beam_runs_on_the_embedded_model_with_no_scorer(embedded_model_dir: Path, tmp_path: Path) -> None:
    """`pumsearch solve "..." --strategy beam --budget N` with no --scorer runs on the embedded SmolLM2,
    scored by the confidence scorer (shortened: budget 4, 32 tokens)."""
    env = {"XDG_CACHE_HOME": str(embedded_model_dir.parent.parent)}
    args = ["solve", "Natalia sold 48 clips in April and half as many in May. How many?", "--strategy", "beam",
            "--budget", "4", "--max-tokens", "32", "--json"]
    result = runner.invoke(app, [*args, "--tree-out", str(tmp_path / "t.json")], env=env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert (record["strategy"], record["scorer"]) == ("beam", "confidence") and "scorer_default" in record
    assert record["counters"]["scorer_tokens"] == 0
