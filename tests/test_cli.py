"""The command line: solve, tree show, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app

runner = CliRunner()


def _solve(*args: str):
    return runner.invoke(app, ["solve", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "the question is empty"),
        (["q", "--budget", "0"], "budget must be at least 1"),
        (["q", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["q", "--scorer", "nope"], "unknown scorer 'nope'"),
        (["q", "--scorer", "verifier"], "needs the reference answer: pass --answer"),
        (["q", "--model", "/definitely/not/here"], "does not exist"),
        (["q", "--aggregate", "max"], "unknown aggregate"),
        (["q", "--select", "random"], "unknown select"),
        (["q", "--max-tokens", "0"], "max-tokens must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message):
    result = _solve(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_directory_that_is_not_a_model(tmp_path):
    result = _solve("q", "--model", str(tmp_path))
    assert result.exit_code == 2 and "not a model directory" in result.output


def test_hub_name_while_offline():
    result = _solve("q", "--model", "some-org/some-model-that-is-not-cached")
    assert (
        result.exit_code == 2 and "could not load 'some-org/some-model-that-is-not-cached'" in result.output
    )


def test_solve_prints_answer_path_candidates_counters_and_writes_the_tree(tiny_llama_dir, tmp_path):
    tree_file = tmp_path / "t.tree.json"
    result = _solve(
        "What is 2 + 3?",
        "--model",
        str(tiny_llama_dir),
        "--budget",
        "3",
        "--max-tokens",
        "8",
        "--tree-out",
        str(tree_file),
        "--scorer",
        "verifier",
        "--answer",
        "5",
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "answer:",
        "chosen path",
        "candidates",
        "generated_tokens",
        "backend_calls",
        str(tree_file),
    ):
        assert expected in result.output
    shown = runner.invoke(app, ["tree", "show", str(tree_file)])
    assert shown.exit_code == 0 and "problem: What is 2 + 3?" in shown.output
    assert shown.output.count("answer=") == 3


def test_solve_json_prints_the_record(tiny_llama_dir, tmp_path):
    result = _solve(
        "What is 2 + 3?",
        "--model",
        str(tiny_llama_dir),
        "--budget",
        "2",
        "--max-tokens",
        "6",
        "--json",
        "--tree-out",
        str(tmp_path / "t.json"),
        "--answer",
        "5",
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["format"] == "pumsearch-record" and record["version"] == 1
    assert record["status"] == "ok" and record["reference"] == "5" and record["num_candidates"] == 2
    assert record["tree_file"] == str(tmp_path / "t.json")
    counters = record["counters"]
    for key in (
        "generated_tokens",
        "prompt_tokens",
        "cached_prompt_tokens",
        "backend_calls",
        "mean_batch_size",
        "scorer_calls",
        "scorer_tokens",
        "scorer_cache_hits",
        "wall_time",
    ):
        assert key in counters
    assert 0 < counters["generated_tokens"] <= 12 and counters["backend_calls"] == 1


def test_tree_show_rejects_a_file_that_is_not_a_tree(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    result = runner.invoke(app, ["tree", "show", str(bad)])
    assert result.exit_code == 2 and "not a pumsearch tree" in result.output


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    """The one bad-input case through the installed `pumsearch` console script, in its own process
    (the others run in-process, as `pumsearch.cli:main` runs `app()`): one line on stderr, exit 2,
    nothing written."""
    script = Path(sysconfig.get_path("scripts")) / "pumsearch"
    assert script.exists(), f"no {script}: install the package (bash scripts/setup.sh dev)"
    out = subprocess.run([str(script), "run", "--backend", "scripted", "--dataset", "nosuchset", "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown dataset 'nosuchset'"), out.stderr
    assert out.stdout == "" and not (tmp_path / "run").exists()


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from pumsearch.cli import app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
@pytest.mark.embedded
def test_solve_on_the_embedded_model(embedded_model_dir, tmp_path):
    """The README's first command, shortened: a real run of the embedded SmolLM2."""
    result = runner.invoke(
        app,
        ["solve", "Natalia sold 48 clips in April and half as many in May. How many altogether?", "--strategy",
         "bon", "--budget", "2", "--max-tokens", "24", "--json", "--tree-out", str(tmp_path / "t.json")],
        env={"XDG_CACHE_HOME": str(embedded_model_dir.parent.parent)},
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["num_candidates"] == 2 and record["counters"]["generated_tokens"] > 0
    assert (tmp_path / "t.json").exists()


def test_model_text_is_printed_as_text_not_markup(tmp_path):
    """Steps and answers are the model's words: rich must not read [brackets] in them as markup."""
    from pumsearch.search.problem import Problem
    from pumsearch.search.tree import ROOT, SearchTree

    tree = SearchTree(Problem("q", "Is [bold]x[/bold] a [link=http://e]link[/link]?", "[red]5[/red]"))
    node = tree.add_child(ROOT, "say [red]boxed[/red] \\boxed{[b]5}", finish_reason="eos", terminal=True,
                          answer="[b]5")
    path = tree.save(tmp_path / "t.tree.json", {"chosen_path": [node]})
    shown = runner.invoke(app, ["tree", "show", str(path)])
    assert shown.exit_code == 0
    assert "[bold]x[/bold]" in shown.output and "say [red]boxed[/red]" in shown.output


def test_error_messages_keep_their_brackets(tmp_path):
    missing = tmp_path / "[draft] model"
    result = _solve("q", "--model", str(missing))
    assert result.exit_code == 2 and "[draft] model does not exist" in result.output


def test_a_testbed_policy_brings_its_default_scorer(tmp_path):
    result = _solve("start 3, add 4, times 2.", "--model", "testbed:weak", "--budget", "2", "--max-tokens", "40",
                    "--json", "--tree-out", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["scorer"] == "testbed-prm" and record["counters"]["scorer_calls"] == 1
    named = _solve("start 3, add 4.", "--model", "testbed:weak", "--budget", "2", "--max-tokens", "40",
                   "--scorer", "testbed-prm", "--json", "--tree-out", str(tmp_path / "u.json"))
    assert json.loads(named.stdout.strip().splitlines()[-1])["scorer"] == "testbed-prm"
