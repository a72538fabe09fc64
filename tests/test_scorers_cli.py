"""`pumsearch score` and the --scorer-* flags of `solve`, on tiny real checkpoints."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pumsearch.cli import app
from pumsearch.scorers import load_scorer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.search.tree import load_tree

torch.set_num_threads(1)
runner = CliRunner()
QUESTION = "What is 2 + 3 ?"


@pytest.fixture(scope="module")
def ckpts(scorer_checkpoints: dict[str, Path]) -> dict[str, Path]:
    return {**scorer_checkpoints, "policy": scorer_checkpoints["rlhflow"]}


def steps_file(tmp_path: Path, text: str, name: str = "steps.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_score_prints_per_step_and_prefix_values(ckpts: dict[str, Path], tmp_path: Path) -> None:
    steps = ("First add 2 and 3 .", "So the answer is 5 .")
    f = steps_file(tmp_path, "\n\n".join(steps) + "\n")
    out = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "prm",
            "--prm-format",
            "qwen",
            "--scorer-model",
            str(ckpts["qwen"]),
            "--question",
            QUESTION,
            "--steps-file",
            str(f),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    direct = asyncio.run(
        load_scorer("prm", model=str(ckpts["qwen"]), prm_format="qwen").score(
            [ScoreItem(Problem("q", QUESTION), steps[:1]), ScoreItem(Problem("q", QUESTION), steps)]
        )
    )
    assert data["scorer"] == f"prm:qwen:{ckpts['qwen']}"
    assert [r["step_value"] for r in data["prefixes"]] == pytest.approx(direct[1].step_values, abs=1e-6)
    assert [r["prefix_value"] for r in data["prefixes"]] == pytest.approx(
        [direct[0].value, direct[1].value], abs=1e-6
    )
    table = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "pum",
            "--scorer-model",
            str(ckpts["pum"]),
            "--question",
            QUESTION,
            "--steps-file",
            str(f),
        ],
    )
    assert table.exit_code == 0 and "prefix value" in table.stdout and "pum:" in table.stdout


def test_score_json_steps_and_bad_input(ckpts: dict[str, Path], tmp_path: Path) -> None:
    good = steps_file(tmp_path, json.dumps(["The answer is \\boxed{5} ."]), "s.json")
    out = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "verifier",
            "--question",
            QUESTION,
            "--steps-file",
            str(good),
            "--answer",
            "5",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["prefixes"][0]["prefix_value"] == 1.0
    cases = [
        (["--scorer", "verifier", "--steps-file", str(good)], "needs the reference answer"),
        (["--scorer", "prm", "--steps-file", str(good)], "--scorer-model"),
        (
            ["--scorer", "verifier", "--answer", "5", "--steps-file", str(steps_file(tmp_path, "  \n"))],
            "has no steps",
        ),
        (
            [
                "--scorer",
                "verifier",
                "--answer",
                "5",
                "--steps-file",
                str(steps_file(tmp_path, '["a", " "]', "e.json")),
            ],
            "step 2",
        ),
        (
            [
                "--scorer",
                "prm",
                "--prm-format",
                "mistral",
                "--scorer-model",
                str(ckpts["qwen"]),
                "--steps-file",
                str(good),
            ],
            "prm-format",
        ),
        (
            ["--scorer", "pum", "--scorer-model", str(tmp_path / "nowhere"), "--steps-file", str(good)],
            "not a directory",
        ),
        (
            [
                "--scorer",
                "pum",
                "--scorer-model",
                str(ckpts["pum"]),
                "--scorer-option",
                "k",
                "--steps-file",
                str(good),
            ],
            "KEY=VALUE",
        ),
    ]
    for args, message in cases:
        out = runner.invoke(app, ["score", "--question", QUESTION, *args])
        assert out.exit_code == 2, (args, out.output)
        assert message in out.output and "Traceback" not in out.output


def test_score_names_a_missing_value_head(ckpts: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "pum"
    shutil.copytree(ckpts["pum"], ckpt)
    (ckpt / "value_head.pt").unlink()
    f = steps_file(tmp_path, "step one")
    out = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "pum",
            "--scorer-model",
            str(ckpt),
            "--question",
            QUESTION,
            "--steps-file",
            str(f),
        ],
    )
    assert out.exit_code == 2 and "value_head.pt" in out.output


def test_solve_threads_the_scorer_flags(ckpts: dict[str, Path], tmp_path: Path) -> None:
    tree = tmp_path / "t.tree.json"
    out = runner.invoke(
        app,
        [
            "solve",
            QUESTION,
            "--model",
            str(ckpts["policy"]),
            "--budget",
            "2",
            "--max-tokens",
            "4",
            "--scorer",
            "orm",
            "--scorer-model",
            str(ckpts["orm"]),
            "--scorer-device",
            "cpu",
            "--scorer-dtype",
            "float32",
            "--tree-out",
            str(tree),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["scorer"] == "orm" and record["counters"]["scorer_calls"] >= 1
    graph, _ = load_tree(tree)
    identity = f"orm:{ckpts['orm']}"
    scored = [n for n in graph.terminals() if identity in graph[n]["scores"]]
    assert len(scored) == 2
    bad = runner.invoke(
        app,
        [
            "solve",
            QUESTION,
            "--model",
            str(ckpts["policy"]),
            "--scorer",
            "pum",
            "--scorer-model",
            str(ckpts["pum"]),
            "--prm-format",
            "qwen",
        ],
    )
    assert bad.exit_code == 2 and "no option prm_format" in bad.output
