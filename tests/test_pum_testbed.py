"""The PUM on the arithmetic testbed: a checkpoint trained on a shipped testbed policy records its
base as ``testbed:NAME`` and the ``pum`` scorer resolves that alias to the shipped directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pumsearch.pum.pairs import Pair  # noqa: E402
from pumsearch.pum.train import TrainSettings, train_pum  # noqa: E402
from pumsearch.scorers import ScorerError, load_scorer  # noqa: E402
from pumsearch.search.problem import Problem  # noqa: E402
from pumsearch.search.protocols import ScoreItem  # noqa: E402
from pumsearch.testbed import resolve_model_name  # noqa: E402

CHAINS = [(f"start {i}, add 4, times 2.", i, 4) for i in range(1, 9)]


def chain_pairs() -> list[Pair]:
    """A right first step beats a wrong one; a step and the same step with its delimiter tie."""
    pairs = []
    for question, start, k in CHAINS:
        right, wrong = f"{start} + {k} = {start + k}", f"{start} + {k} = {start + k + 1}"
        pid = question
        pairs.append(Pair(pid, question, right, wrong, 1.0, "horizontal", False, 1.0, -1.0, [1.0], [-1.0]))
        pairs.append(Pair(pid, question, right + "\n\n", right, 0.5, "vertical", False, 1.0, 1.0, [1.0], [1.0]))
    return pairs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pum-testbed") / "pum"
    settings = TrainSettings(mode="lora", epochs=1, batch_pairs=4, max_steps=3, val_fraction=0.0, lr=1e-2)
    report = train_pum(chain_pairs(), resolve_model_name("testbed:weak"), out, settings, base_name="testbed:weak")
    return out, report


def test_the_adapter_records_the_testbed_alias(checkpoint) -> None:
    out, _ = checkpoint
    config = json.loads((out / "backbone" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "testbed:weak"


def test_the_pum_scorer_resolves_a_testbed_base_with_the_training_scores(checkpoint) -> None:
    out, report = checkpoint
    probes = [("start 3, add 4, times 2.", ["3 + 4 = 7"]), ("start 5, add 4, times 2.", ["5 + 4 = 9", "9 * 2 = 18"]),
              ("start 2, add 4, times 2.", ["2 + 4 = 7"])]
    with torch.no_grad():
        expected = report.model.scores([report.model.encode(q, "\n\n".join(steps)) for q, steps in probes]).tolist()
    scorer = load_scorer("pum", model=str(out))
    items = [ScoreItem(Problem(f"p{i}", q), tuple(steps)) for i, (q, steps) in enumerate(probes)]
    got = [s.value for s in scorer.inner.score_batch(items)]
    assert got == pytest.approx(expected, abs=1e-4)
    assert len(set(round(v, 6) for v in got)) > 1  # the probes are told apart: not a constant head


def test_an_unknown_testbed_base_is_one_clear_error(checkpoint, tmp_path: Path) -> None:
    import shutil

    out, _ = checkpoint
    broken = tmp_path / "pum"
    shutil.copytree(out, broken)
    config_path = broken / "backbone" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "testbed:medium"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ScorerError, match="testbed:medium"):
        load_scorer("pum", model=str(broken))


# -- the default scorer for a testbed policy -----------------------------------------------------
def test_a_testbed_policy_defaults_to_the_measured_best_shipped_scorer() -> None:
    """The exact PRM (docs/testbed.md, "Default scorer": the shipped PUM was worse than majority
    vote); the choice is data, DEFAULT_SCORER."""
    from pumsearch.testbed import DEFAULT_SCORER, POLICY_DIR, default_scorer_for

    assert DEFAULT_SCORER == ("testbed-prm", None)
    assert default_scorer_for("testbed:weak") == ("testbed-prm", None)
    assert default_scorer_for(str(POLICY_DIR / "strong")) == ("testbed-prm", None)
    for other in (None, "", "testbed:medium", "HuggingFaceTB/SmolLM2-135M-Instruct", str(POLICY_DIR)):
        assert default_scorer_for(other) is None


@pytest.fixture
def pum_as_default(checkpoint, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DEFAULT_SCORER naming a PUM checkpoint (the fixture's) instead of the exact PRM."""
    import pumsearch.testbed

    out, _ = checkpoint
    monkeypatch.setattr(pumsearch.testbed, "DEFAULT_SCORER", ("pum", str(out)))
    return out


def test_no_default_when_the_named_checkpoint_is_not_installed(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    import pumsearch.testbed

    monkeypatch.setattr(pumsearch.testbed, "DEFAULT_SCORER", ("pum", str(tmp_path / "missing")))
    assert pumsearch.testbed.default_scorer_for("testbed:strong") is None


def test_solve_scores_a_testbed_policy_with_the_default_unless_a_scorer_is_named() -> None:
    from pumsearch.api import solve, with_default_scorer

    question = "start 3, add 4, times 2."
    assert with_default_scorer("testbed:weak", "pum", None) == ("pum", None)
    assert with_default_scorer("testbed:weak", None, "other-dir") == (None, "other-dir")
    result = solve(question, model="testbed:weak", budget=3, max_tokens=32, answer="14")
    assert result.candidates and {c.score for c in result.candidates} <= {0.0, 1.0}  # the exact PRM's values


def test_a_pum_named_as_default_scores_like_the_pum(pum_as_default: Path) -> None:
    from pumsearch.api import solve

    result = solve("start 3, add 4, times 2.", model="testbed:weak", budget=3, max_tokens=32, answer="14")
    pum = load_scorer("pum", model=str(pum_as_default))
    items = [ScoreItem(result.problem, result.tree.steps(c.node), complete=True) for c in result.candidates]
    expected = [s.value for s in pum.inner.score_batch(items)]
    assert [c.score for c in result.candidates] == pytest.approx(expected, abs=1e-4)


def test_the_shipped_testbed_pum_loads() -> None:
    from pumsearch.testbed import PUM_DIR

    config = json.loads((PUM_DIR / "backbone" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "testbed:strong"
    scorer = load_scorer("pum", model=str(PUM_DIR))
    items = [ScoreItem(Problem("p", "start 3, add 4, times 2."), steps) for steps in (("3 + 4 = 7",), ("3 + 4 = 8",))]
    values = [s.value for s in scorer.inner.score_batch(items)]
    assert all(isinstance(v, float) and v == v for v in values)  # finite scores, one per prefix


# -- the shipped PUM in search ----------------------------------------------------------------------
# Best-of-8 on the first 100 `parting` test chains (weak policy, T = 0.8, --max-tokens 28), the vote
# weighted by the shipped PUM and its single best pick against plain majority vote. Measured on the
# shipped checkpoint (run seeds 0 / 1 / 2): majority 0.32 / 0.36 / 0.32, weighted 0.47 / 0.46 / 0.47
# (gaps +0.15 / +0.10 / +0.15), best 0.43 / 0.43 / 0.50 (gaps +0.11 / +0.07 / +0.18). The PUM shipped
# before it: weighted 0.39 / 0.41 / 0.38; the one before that 0.16 / 0.19 / 0.22. The test runs
# seed 0 and asks for about half the smallest gap.
SHIPPED_PUM_VOTE_MARGIN = 0.05
SHIPPED_PUM_BEST_MARGIN = 0.03


@pytest.mark.slow
def test_the_shipped_pum_beats_majority_vote_in_best_of_8() -> None:
    import asyncio

    from pumsearch.api import asearch
    from pumsearch.backends import load_generator
    from pumsearch.search.config import SearchConfig
    from pumsearch.search.selection import select_candidate
    from pumsearch.testbed import PUM_DIR, testbed_problems

    torch.set_num_threads(1)
    problems = testbed_problems("parting,n=100")
    config = SearchConfig(strategy="bon", budget=8, temperature=0.8, max_tokens=28, seed=0)
    results = asyncio.run(asearch(problems, generator=load_generator("testbed:weak"),
                                  scorer=load_scorer("pum", model=str(PUM_DIR)), config=config))
    assert not [r for r in results if isinstance(r, BaseException)]

    def accuracy(method: str) -> float:
        return sum(bool(select_candidate(r.candidates, method).correct) for r in results) / len(results)

    majority, weighted, best = accuracy("majority"), accuracy("weighted"), accuracy("best")
    assert weighted >= majority + SHIPPED_PUM_VOTE_MARGIN, (majority, weighted)
    assert best >= majority + SHIPPED_PUM_BEST_MARGIN, (majority, best)
