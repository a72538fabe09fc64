"""PUM training options of issue 14: ``--mode full`` (every weight trained, stored as peft
``modules_to_save`` copies in the released layout), ``--keep best``, the cosine schedule, pair
confidence filtering and a second rollout draw (``--rollout-seed``)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pumsearch.pum.label import LabelSettings, settings_key  # noqa: E402
from pumsearch.pum.pairs import (  # noqa: E402
    Pair,
    PairError,
    PairSettings,
    build_pairs,
    preference_confidence,
    rollouts_per_prefix,
)
from pumsearch.pum.train import TrainError, TrainSettings, lr_factor, train_pum  # noqa: E402

QUESTIONS = [f"What is {i} + 3?" for i in range(10)]


def fixed_pairs() -> list[Pair]:
    pairs = []
    for i, question in enumerate(QUESTIONS):
        right, wrong = f"{i} + 3 = {i + 3}", f"{i} + 3 = {i + 4}"
        pairs.append(Pair(f"q{i}", question, right, wrong, 1.0, "horizontal", False, 1.0, -1.0, [1.0], [-1.0]))
    return pairs


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("pum-full") / "base", "qwen3")


@pytest.fixture(scope="module")
def full(base: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pum-full") / "pum"
    settings = TrainSettings(mode="full", epochs=2, batch_pairs=4, lr=1e-2, head_lr=1e-2, val_fraction=0.3)
    return out, train_pum(fixed_pairs(), str(base), out, settings, base_name=str(base))


# -- full mode ----------------------------------------------------------------------------------
def test_full_mode_trains_every_base_weight_and_keeps_the_released_layout(base: Path, full) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, _ = full
    adapter = json.loads((out / "backbone" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["base_model_name_or_path"] == str(base)
    assert json.loads((out / "model_args.json").read_text())["mode"] == "full"
    saved = load_file(out / "backbone" / "adapter_model.safetensors")
    decoder = AutoModelForCausalLM.from_pretrained(str(base)).model
    for name, param in decoder.named_parameters():  # every weight is stored, trained off the base
        copy = saved[f"base_model.model.model.{name}"]
        assert copy.shape == param.shape and not torch.equal(copy, param.detach()), name
    assert all(float(v.abs().max()) == 0 for k, v in saved.items() if "lora_B" in k)  # the LM head stays


def test_full_mode_export_scores_like_training_through_the_pum_scorer(full) -> None:
    import warnings

    from pumsearch.scorers import load_scorer
    from pumsearch.search.problem import Problem
    from pumsearch.search.protocols import ScoreItem

    out, report = full
    probes = [("What is 2 + 3?", "2 + 3 = 5"), ("What is 2 + 3?", "2 + 3 = 6"), ("What is 7 + 3?", "")]
    with torch.no_grad():
        expected = report.model.scores([report.model.encode(q, p) for q, p in probes]).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the tied LM head placeholder loads quietly
        scorer = load_scorer("pum", model=str(out))
    items = [ScoreItem(Problem(str(i), q), tuple(p.split("\n\n")) if p else ()) for i, (q, p) in enumerate(probes)]
    assert [s.value for s in scorer.inner.score_batch(items)] == pytest.approx(expected, abs=1e-5)


# -- keep best, schedule --------------------------------------------------------------------------
def test_keep_best_exports_the_epoch_with_the_best_held_out_accuracy(base: Path, tmp_path: Path) -> None:
    settings = TrainSettings(mode="head", epochs=6, batch_pairs=2, head_lr=0.3, val_fraction=0.4, keep="best")
    report = train_pum(fixed_pairs(), str(base), tmp_path / "pum", settings)
    best = max(report.history, key=lambda e: e["val_accuracy"])  # the first of equals wins
    assert report.kept_epoch == best["epoch"]
    assert json.loads((tmp_path / "pum" / "train_args.json").read_text())["kept_epoch"] == best["epoch"]
    from pumsearch.pum.train import is_held_out, score_rows

    val = fixed_pairs()
    rows = [report.model.encode(p.question, t) for p in val for t in (p.a, p.b)]
    scores = score_rows(report.model, rows)
    held = [i for i, p in enumerate(val) if is_held_out(p.question, 0.4)]
    accuracy = sum(scores[2 * i] > scores[2 * i + 1] for i in held) / len(held)
    assert accuracy == pytest.approx(best["val_accuracy"])  # the restored weights are that epoch's


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    factor = lr_factor(TrainSettings(schedule="cosine"), 100)
    assert factor(0) == pytest.approx(0.2) and factor(4) == pytest.approx(1.0)  # warm-up: 5 steps
    assert factor(52) == pytest.approx(0.5, abs=0.02) and factor(100) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(TrainSettings(), 100)(50) == 1.0
    with pytest.raises(TrainError, match="keep"):
        TrainSettings(keep="first")
    with pytest.raises(TrainError, match="val-fraction"):
        TrainSettings(keep="best", val_fraction=0.0)
    with pytest.raises(TrainError, match="schedule"):
        TrainSettings(schedule="linear")


# -- pair confidence --------------------------------------------------------------------------------
def _prefix(traj: int, text: str, rates: list[float], utility: float, complete: bool = False) -> dict:
    return {"trajectory": traj, "length": len(text.split()), "text": text, "complete": complete,
            "solve_rates": rates, "gains": [r - 0.25 for r in rates], "utility": utility}


def confidence_record() -> dict:
    """Two students, k = 4 rollouts per open prefix (3 open prefixes + the empty one: 16 each)."""
    return {
        "problem": {"id": "q", "question": "Q?", "answer": "1"},
        "trajectories": [{"policy": "A"}, {"policy": "A"}],
        "prefixes": [
            _prefix(0, "a", [0.5, 0.5], 1.0),  # 4 of 8 pooled
            _prefix(0, "a b", [1.0, 1.0], 2.0, complete=True),
            _prefix(1, "c", [0.25, 0.0], 0.0),  # 1 of 8
            _prefix(1, "c d", [0.0, 0.0], -0.6),  # 0 of 8
            _prefix(1, "c d e", [0.0, 0.0], -1.2, complete=True),
        ],
        "cost": {"students": [{"rollouts": 16}, {"rollouts": 16}]},
    }


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_preference_confidence_is_a_two_proportion_test_on_pooled_rollouts() -> None:
    record = confidence_record()
    half, right, one, none, wrong = record["prefixes"]
    k = rollouts_per_prefix(record)
    assert k == [4, 4]
    assert preference_confidence(right, wrong, k) == 1.0  # both exact
    assert preference_confidence(wrong, right, k) == 0.0
    # 4/8 against exact 0: (4 + 1) / 10 = 0.5, variance 0.5 * 0.5 / 10
    assert preference_confidence(half, wrong, k) == pytest.approx(_phi(0.5 / math.sqrt(0.025)))
    # 1/8 against 0/8: 0.2 vs 0.1, variances 0.016 and 0.009
    assert preference_confidence(one, none, k) == pytest.approx(_phi(0.1 / math.sqrt(0.025)))


def test_min_confidence_drops_preferences_the_rollouts_cannot_tell_apart() -> None:
    loose, _ = build_pairs([confidence_record()], PairSettings(margin=0.5, conflicts="none"))
    strict, summary = build_pairs([confidence_record()], PairSettings(margin=0.5, conflicts="none",
                                                                      min_confidence=0.9))
    dropped = {(p.a, p.b) for p in loose} - {(p.a, p.b) for p in strict}
    assert ("c", "c d") in dropped and ("a b", "c d e") not in dropped  # 1/8 vs 0/8 goes, exact stays
    assert summary["dropped_confidence"] == len(dropped) > 0
    assert all(preference_confidence(*_by_text(p), rollouts_per_prefix(confidence_record())) >= 0.9
               for p in strict if p.label == 1.0)
    with pytest.raises(PairError, match="min-confidence"):
        PairSettings(min_confidence=1.0)


def _by_text(pair: Pair) -> tuple[dict, dict]:
    texts = {p["text"]: p for p in confidence_record()["prefixes"]}
    return texts[pair.a], texts[pair.b]


# -- a second rollout draw ------------------------------------------------------------------------------
def test_an_unset_rollout_seed_keeps_the_settings_key_of_older_label_files() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    settings = LabelSettings(rollouts=6, cut_lengths=(5, 11))
    later = ("rollout_seed", "token_cap", "branches")  # options added after the first label files
    older = {k: v for k, v in asdict(settings).items() if k not in later}
    blob = json.dumps({"settings": older, "policies": ["p"], "students": ["s"]}, sort_keys=True)
    key = settings_key(settings, [Named("p")], [Named("s")])  # type: ignore[list-item]
    assert key == hashlib.sha256(blob.encode()).hexdigest()[:16]
    second = settings_key(LabelSettings(rollouts=6, cut_lengths=(5, 11), rollout_seed=1), [Named("p")],
                          [Named("s")])  # type: ignore[list-item]
    assert second != key
    capped = settings_key(LabelSettings(rollouts=6, cut_lengths=(5, 11), token_cap="solution"), [Named("p")],
                          [Named("s")])  # type: ignore[list-item]
    assert capped not in (key, second)


def test_the_held_out_split_follows_the_question_so_a_chain_under_two_ids_stays_on_one_side() -> None:
    from pumsearch.pum.train import split_pairs

    pairs = [Pair(f"{source}-{i}", f"start {i}, add 3.", "a", "b", 1.0, "vertical", False, 1.0, 0.0, [], [])
             for i in range(40) for source in ("set-a", "set-b")]
    train, val = split_pairs(pairs, 0.3)
    assert train and val
    assert not {p.question for p in train} & {p.question for p in val}


# -- a whole-solution token cap ---------------------------------------------------------------------------
async def test_a_solution_token_cap_leaves_each_rollout_what_its_prefix_has_not_used() -> None:
    """``token_cap="solution"``: a rollout after a prefix of L tokens (words, for the scripted
    backend) gets max_tokens - L, as a search caps a whole solution; all rollouts of a student
    still go out in one backend call."""
    import numpy as np

    from pumsearch.backends.scripted import ScriptedGenerator
    from pumsearch.pum.label import label_problems
    from pumsearch.search.grading import Grader
    from pumsearch.search.problem import Problem

    def policy(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
        return "one two\n\nthree four\n\n\\boxed{5}"

    def student(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
        return "five six seven \\boxed{5}"  # four words: fits only when four are left

    student_gen = ScriptedGenerator(student, name="student")
    settings = LabelSettings(trajectories=1, cut_lengths=(1, 3), rollouts=2, max_tokens=7, token_cap="solution")
    (record,) = await label_problems([Problem("p", "q", "5")], [ScriptedGenerator(policy, name="policy")],
                                     [student_gen], settings, grader=Grader(string_shortcut=True))
    assert len(student_gen.calls) == 1
    caps = sorted(r.params.max_tokens for r in student_gen.calls[0])
    assert caps == [4, 6, 7]  # prefixes of 3 and 1 words, and the empty one
    rates = {p["length"]: p["solve_rates"][0] for p in record["prefixes"] if not p["complete"]}
    assert rates == {1: 1.0, 3: 1.0}
    tight = LabelSettings(trajectories=1, cut_lengths=(1, 3), rollouts=2, max_tokens=6, token_cap="solution")
    (record,) = await label_problems([Problem("p", "q", "5")], [ScriptedGenerator(policy, name="policy")],
                                     [ScriptedGenerator(student, name="student")], tight,
                                     grader=Grader(string_shortcut=True))
    rates = {p["length"]: p["solve_rates"][0] for p in record["prefixes"] if not p["complete"]}
    assert rates == {1: 1.0, 3: 0.0}  # three words used, three left: the answer is cut off
