"""The whole PUM pipeline on the testbed in seconds: ``pum label`` -> ``pum pairs`` -> ``pum train
--mode full`` -> ``solve --scorer pum`` scores every candidate exactly as the trained model did.

Real parts throughout: the shipped weak testbed policy samples trajectories and rollouts, the
exact grader grades them, and the trained PUM is loaded back by the ``pum`` scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app

torch = pytest.importorskip("torch")

runner = CliRunner()
DATASET = "testbed:ops=2,n=3,split=train,seed=3"
LABEL_ARGS = ["--dataset", DATASET, "--policy", "testbed:weak", "--students", "testbed:weak",
              "--trajectories", "3", "--cut-lengths", "5", "--rollouts", "3", "--max-tokens", "24", "--chunk", "2"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("roundtrip")
    labels = tmp / "labels.jsonl"
    result = runner.invoke(app, ["pum", "label", *LABEL_ARGS, "--out", str(labels)])
    assert result.exit_code == 0, result.output
    pairs = tmp / "pairs.jsonl"
    result = runner.invoke(app, ["pum", "pairs", str(labels), "--out", str(pairs), "--margin", "0.1",
                                 "--min-confidence", "0.6"])
    assert result.exit_code == 0, result.output
    return labels, pairs


def test_a_second_rollout_draw_keeps_the_trajectories_and_redraws_the_rollouts(labelled, tmp_path: Path) -> None:
    labels, _ = labelled
    second = tmp_path / "labels_b.jsonl"
    result = runner.invoke(app, ["pum", "label", *LABEL_ARGS, "--rollout-seed", "7", "--out", str(second)])
    assert result.exit_code == 0, result.output
    first = [json.loads(line) for line in labels.read_text().splitlines()]
    again = [json.loads(line) for line in second.read_text().splitlines()]
    assert [r["trajectories"] for r in first] == [r["trajectories"] for r in again]
    assert [[p["text"] for p in r["prefixes"]] for r in first] == [[p["text"] for p in r["prefixes"]] for r in again]
    rates = [[p["solve_rates"] for p in r["prefixes"] if not p["complete"]] for r in first]
    assert rates != [[p["solve_rates"] for p in r["prefixes"] if not p["complete"]] for r in again]
    result = runner.invoke(app, ["pum", "label", *LABEL_ARGS, "--out", str(second)])  # other settings: refused
    assert result.exit_code == 2 and "other settings" in result.output


def test_label_pairs_train_full_then_solve_scores_like_training(labelled, tmp_path: Path) -> None:
    from pumsearch.pum.pairs import read_pairs
    from pumsearch.pum.train import TrainSettings, train_pum
    from pumsearch.search.tree import load_tree
    from pumsearch.testbed import resolve_model_name

    _, pairs_file = labelled
    pairs = read_pairs(pairs_file)
    assert pairs and json.loads(pairs_file.with_name("pairs.summary.json").read_text())["pairs"] == len(pairs)
    out = tmp_path / "pum"
    result = runner.invoke(app, ["pum", "train", str(pairs_file), "--base", "testbed:weak", "--out", str(out),
                                 "--mode", "full", "--epochs", "2", "--lr", "1e-3", "--schedule", "cosine",
                                 "--val-fraction", "0.4", "--keep", "best", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "kept epoch" in result.output
    train_args = json.loads((out / "train_args.json").read_text())
    assert train_args["mode"] == "full" and train_args["keep"] == "best" and train_args["schedule"] == "cosine"

    # the same training in Python keeps the model, to score with as it was trained
    report = train_pum(pairs, resolve_model_name("testbed:weak"), out, TrainSettings(
        mode="full", epochs=2, lr=1e-3, schedule="cosine", val_fraction=0.4, keep="best"), base_name="testbed:weak")
    tree_file = tmp_path / "tree.json"
    question = "start 3, add 4, times 2."
    result = runner.invoke(app, ["solve", question, "--model", "testbed:weak", "--budget", "4", "--max-tokens", "32",
                                 "--scorer", "pum", "--scorer-model", str(out), "--tree-out", str(tree_file)])
    assert result.exit_code == 0, result.output
    tree, meta = load_tree(tree_file)
    assert meta is not None
    candidates = meta["candidates"]
    texts = ["\n\n".join(tree.steps(c["node"])) for c in candidates]
    with torch.no_grad():
        expected = report.model.scores([report.model.encode(question, t) for t in texts]).tolist()
    assert [c["score"] for c in candidates] == pytest.approx(expected, abs=1e-5)
    assert len({round(v, 6) for v in expected}) > 1 or len(set(texts)) == 1  # not a constant scorer
