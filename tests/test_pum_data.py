"""PUM training data: prefix cutting, group utility, pair construction, the loss (hand-computed)."""

from __future__ import annotations

import math

import pytest

from pumsearch.pum.label import Trajectory, auto_cut_lengths, cut_prefixes, group_utility, text_pieces
from pumsearch.pum.pairs import PairError, PairSettings, build_pairs, students_disagree


# -- cutting ------------------------------------------------------------------------------------
def test_auto_cut_lengths_are_evenly_spaced_inside_the_median() -> None:
    assert auto_cut_lengths([10, 20, 30], 3) == [5, 10, 15]  # median 20: 20/4, 40/4, 60/4
    assert auto_cut_lengths([7], 1) == [4]  # round(3.5) -> 4 (banker's rounding of 3.5 gives 4)
    assert auto_cut_lengths([], 3) == []
    assert auto_cut_lengths([10], 0) == []


def test_text_cut_keeps_the_delimiter_with_the_step_it_ends() -> None:
    assert text_pieces("a b\n\nc d") == ["a ", "b\n\n", "c ", "d"]
    assert "".join(text_pieces("  x  y\n")) == "  x  y\n"


def test_cut_prefixes_vertical_and_horizontal_on_fixed_text_trajectories() -> None:
    trajs = [Trajectory("p", "a b\n\nc d", None, 4, "eos"), Trajectory("p", "x y z", None, 3, "eos")]
    got = [(p.trajectory, p.length, p.text, p.complete) for p in cut_prefixes(trajs, [3, 2], include_complete=True)]
    assert got == [
        (0, 2, "a b\n\n", False),
        (0, 3, "a b\n\nc ", False),
        (0, 4, "a b\n\nc d", True),
        (1, 2, "x y ", False),  # length 3 is not shorter than this trajectory: no cut there
        (1, 3, "x y z", True),
    ]
    without = cut_prefixes(trajs, [2], include_complete=False)
    assert [(p.trajectory, p.text) for p in without] == [(0, "a b\n\n"), (1, "x y ")]


def test_cut_prefixes_with_token_ids_uses_the_decoder_and_keeps_ids() -> None:
    traj = Trajectory("p", "ignored", [11, 12, 13, 14], 4, "eos")
    prefixes = cut_prefixes([traj], [1, 3], include_complete=True,
                            decode=lambda t, n: "|".join(str(i) for i in (t.token_ids or [])[:n]))
    assert [(p.length, p.text, p.token_ids) for p in prefixes] == [
        (1, "11", [11]), (3, "11|12|13", [11, 12, 13]), (4, "ignored", [11, 12, 13, 14])]


# -- utility ------------------------------------------------------------------------------------
def test_group_utility_standardises_each_student_then_averages() -> None:
    rates = [[1.0, 0.5, 0.3], [0.0, 0.5, 0.3], [0.5, 1.0, 0.3]]
    rows = group_utility(rates, [0.5, 0.5, 0.3], "problem")
    # student 0 gains .5, -.5, 0: mean 0, population std sqrt(1/6)
    z0 = [0.5 / math.sqrt(1 / 6), -0.5 / math.sqrt(1 / 6), 0.0]
    # student 1 gains 0, 0, .5: mean 1/6, std sqrt(1/18)
    z1 = [(-1 / 6) / math.sqrt(1 / 18), (-1 / 6) / math.sqrt(1 / 18), (1 / 3) / math.sqrt(1 / 18)]
    # student 2 gains all 0: no preference, contributes 0
    for i, row in enumerate(rows):
        assert row[:3] == pytest.approx([rates[i][0] - 0.5, rates[i][1] - 0.5, 0.0])
        assert row[3] == pytest.approx((z0[i] + z1[i] + 0.0) / 3)
    raw = group_utility(rates, [0.5, 0.5, 0.3], "none")
    assert [r[3] for r in raw] == pytest.approx([0.5 / 3, -0.5 / 3, 0.5 / 3])


# -- pairs --------------------------------------------------------------------------------------
def _prefix(traj: int, length: int, text: str, utility: float, complete: bool = False,
            gains: tuple[float, ...] = (0.0,)) -> dict:
    return {"trajectory": traj, "length": length, "text": text, "complete": complete, "utility": utility,
            "gains": list(gains), "solve_rates": []}


def fixed_record() -> dict:
    """Three trajectories (0, 1 from policy A; 2 from B). Trajectory 2 repeats trajectory 0's text
    with other utilities, which makes identical and conflicting pairs."""
    return {
        "problem": {"id": "q1", "question": "Q?", "answer": "5"},
        "trajectories": [{"policy": "A"}, {"policy": "A"}, {"policy": "B"}],
        "prefixes": [
            _prefix(0, 2, "a b", 1.0),  # P0
            _prefix(0, 4, "a b c d", 2.0, True),  # P1
            _prefix(1, 2, "x y", 0.2),  # P2
            _prefix(1, 3, "x y z", 0.5),  # P2b
            _prefix(1, 4, "x y z w", 2.0, True),  # P3
            _prefix(2, 2, "a b", 1.0),  # P4 (same text as P0)
            _prefix(2, 4, "a b c d", 0.5, True),  # P5 (same text as P1)
        ],
    }


def test_pairs_on_a_fixed_record_match_the_hand_computed_set() -> None:
    pairs, summary = build_pairs([fixed_record()], PairSettings(margin=0.5, tie_margin=0.1))
    got = [(p.a, p.b, p.label, p.kind, p.across_policies) for p in pairs]
    # By hand (margin .5, tie margin .1), the 11 candidates:
    #  P0-P1 V  "a b c d" > "a b"  -- conflicts with P4-P5 V "a b" > "a b c d": both dropped
    #  P0-P2 H  "a b" > "x y"      -- kept (P2-P4 H across says the same: a duplicate, dropped)
    #  P0-P4 H  tie of identical texts: dropped;  P1-P5 H  identical texts: dropped
    #  P1-P3 H  tie (end)          -- conflicts with P3-P5 H "x y z w" > "a b c d": both dropped
    #  P2-P2b V diff .3: inside the margin, dropped
    #  P2-P3 V  "x y z w" > "x y";  P2b-P3 V "x y z w" > "x y z"
    assert sorted(got) == sorted([
        ("a b", "x y", 1.0, "horizontal", False),
        ("x y z w", "x y", 1.0, "vertical", False),
        ("x y z w", "x y z", 1.0, "vertical", False),
    ])
    assert summary["candidates"] == 11
    assert summary["dropped_margin"] == 1
    assert summary["dropped_identical"] == 2
    assert summary["dropped_conflict"] == 4
    assert summary["dropped_duplicate"] == 1
    assert summary["by_kind"] == {"horizontal_within": {"preferences": 1, "ties": 0},
                                  "vertical_within": {"preferences": 2, "ties": 0}}


def test_pairs_without_conflict_filtering_keep_ties_and_across_policy_pairs() -> None:
    pairs, summary = build_pairs([fixed_record()], PairSettings(margin=0.5, tie_margin=0.1, conflicts="none"))
    assert len(pairs) == 10  # 11 candidates, one inside the margin
    ties = [(p.a, p.b) for p in pairs if p.label == 0.5]
    assert sorted(ties) == [("a b", "a b"), ("a b c d", "x y z w")]
    across = sorted((p.a, p.b, p.label) for p in pairs if p.across_policies)
    assert across == [("a b", "a b", 0.5), ("a b", "x y", 1.0), ("a b c d", "a b c d", 1.0),
                      ("x y z w", "a b c d", 1.0)]
    assert summary["by_kind"]["horizontal_across"] == {"preferences": 3, "ties": 1}
    no_ties, _ = build_pairs([fixed_record()], PairSettings(margin=0.5, tie_margin=0.1, conflicts="none",
                                                            ties=False))
    assert all(p.label == 1.0 for p in no_ties) and len(no_ties) == 8
    vertical_only, _ = build_pairs([fixed_record()], PairSettings(margin=0.5, conflicts="none", horizontal=False))
    assert {p.kind for p in vertical_only} == {"vertical"} and len(vertical_only) == 4


def test_student_conflicts_drop_pairs_a_student_disagrees_with() -> None:
    better = {"gains": [0.5, -0.1]}
    worse = {"gains": [0.0, 0.0]}
    assert students_disagree(better, worse)
    assert not students_disagree({"gains": [0.5, 0.1]}, worse)
    record = {"problem": {"id": "q", "question": "Q"}, "trajectories": [{"policy": "A"}],
              "prefixes": [_prefix(0, 1, "a", 1.0, gains=(0.5, -0.1)), _prefix(0, 2, "a b", 0.0, gains=(0.0, 0.0))]}
    kept, summary = build_pairs([record], PairSettings(conflicts="students"))
    assert kept == [] and summary["dropped_student_conflict"] == 1
    kept, _ = build_pairs([record], PairSettings(conflicts="duplicates"))
    assert [(p.a, p.b) for p in kept] == [("a", "a b")]


def test_pair_settings_refuse_bad_values() -> None:
    with pytest.raises(PairError, match="conflicts"):
        PairSettings(conflicts="maybe")
    with pytest.raises(PairError, match="tie-margin"):
        PairSettings(margin=0.2, tie_margin=0.3)


# -- the loss -----------------------------------------------------------------------------------
def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bradley_terry_loss_with_ties_matches_a_hand_computation() -> None:
    torch = pytest.importorskip("torch")
    from pumsearch.pum.train import TrainSettings, pairwise_loss

    a = torch.tensor([2.0, 0.5, 1.0])
    b = torch.tensor([1.0, 0.5, 3.0])
    labels = torch.tensor([1.0, 0.5, 0.5])
    gaps = torch.tensor([2.0, 0.0, 0.0])
    pref = -math.log(1 / (1 + math.exp(-1.0)))  # -log sigmoid(2 - 1)
    tie_zero = math.log(2.0)  # -(1/2) log(1/2) twice
    tie_two = 0.5 * (-math.log(1 / (1 + math.exp(2.0)))) + 0.5 * (-math.log(1 / (1 + math.exp(-2.0))))
    loss = pairwise_loss(a, b, labels, gaps, TrainSettings())
    assert float(loss) == pytest.approx((pref + tie_zero + tie_two) / 3, rel=1e-6)
    weighted = pairwise_loss(a, b, labels, gaps, TrainSettings(tie_weight=0.25))
    assert float(weighted) == pytest.approx((pref + 0.25 * (tie_zero + tie_two)) / 3, rel=1e-6)
    mse = pairwise_loss(a, b, labels, gaps, TrainSettings(tie_loss="mse"))
    assert float(mse) == pytest.approx((pref + 0.0 + 4.0) / 3, rel=1e-6)
    margin = pairwise_loss(a, b, labels, gaps, TrainSettings(margin_scale=0.25))  # -log sigmoid(1 - .25*2)
    assert float(margin) == pytest.approx((_softplus(-0.5) + tie_zero + tie_two) / 3, rel=1e-6)
