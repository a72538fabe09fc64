"""`pumsearch pum label|pairs|train` end to end on a tiny model, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app

runner = CliRunner()


def test_label_pairs_train_end_to_end(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    model = str(tiny_qwen3_dir)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 3?", "answer": str(i + 3)}) + "\n"
                            for i in range(3)))
    labels = tmp_path / "labels.jsonl"
    args = ["pum", "label", "--dataset", str(data), "--policy", model, "--students", f"{model},{model}",
            "--out", str(labels), "--trajectories", "3", "--cut-lengths", "2,4", "--rollouts", "2",
            "--max-tokens", "8", "--chunk", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [r["problem"]["id"] for r in records] == ["q0", "q1", "q2"]
    assert all(len(r["baselines"]) == 2 and len(r["trajectories"]) == 3 for r in records)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 problems labelled, 3 already done" in again.output

    pairs = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["pum", "pairs", str(labels), "--out", str(pairs), "--margin", "0.0001",
                                 "--no-ties"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "pairs.summary.json").read_text())
    lines = pairs.read_text().splitlines()
    assert summary["pairs"] == len(lines)

    if not lines:  # a random model rarely answers, so every utility may tie: train on fixed pairs then
        from pumsearch.pum.pairs import Pair, write_pairs

        write_pairs([Pair("q0", "What is 0 + 3?", "0 + 3 = 3", "0 + 3 = 4", 1.0, "horizontal", False, 1.0, -1.0,
                          [1.0], [-1.0])], pairs)
    out = tmp_path / "pum"
    result = runner.invoke(app, ["pum", "train", str(pairs), "--base", model, "--out", str(out), "--epochs", "1",
                                 "--max-steps", "1", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert (out / "value_head.pt").exists() and (out / "backbone" / "adapter_config.json").exists()
    adapter = json.loads((out / "backbone" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(model).resolve())


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pum", "pairs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["pum", "label", "--dataset", str(tmp_path / "none.jsonl"), "--policy", "x",
                                 "--students", "y", "--out", str(tmp_path / "l.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    result = runner.invoke(app, ["pum", "pairs", str(labels), "--out", str(tmp_path / "p.jsonl"),
                                 "--conflicts", "sometimes"])
    assert result.exit_code == 2 and "conflicts" in result.output
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("not json\n")
    result = runner.invoke(app, ["pum", "train", str(pairs), "--base", "x", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a pair line" in result.output
