"""What `run` and `solve` tell the user (issue 15, item 7): "resuming 17/40" and a progress bar whose
accuracy counts every finished problem of the run; a records file repaired after a crash is said on
the console; a search without an answer says "no answer found" and why; a table of candidates
names an aggregation only when a scorer made scores; converting the embedded model is one line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.cli import app
from pumsearch.cli_runs import RichProgress
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.strategies import make_strategy
from tests.helpers_runs import write_gsm8k_style

runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


def _record(correct: bool) -> dict:
    return {"status": "ok", "correct": correct, "reference": "1", "counters": {"generated_tokens": 10}}


def test_the_progress_bar_counts_accuracy_over_every_finished_problem_of_the_run() -> None:
    progress = RichProgress()
    with progress:
        progress.begin("bon", total=4, already_done=3, previous=[_record(True)] * 3)
        progress.record(_record(False))
        (task,) = progress.progress.tasks
    assert task.fields["acc"] == "0.750"  # 3 right before, 1 wrong now: not 0.000 over this session's one
    assert task.completed == 4


def test_a_resumed_run_says_how_far_it_got(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 6)
    args = ["run", "--backend", "scripted", "--dataset", str(data), "--budget", "2", "--out", str(tmp_path / "r")]
    assert runner.invoke(app, [*args, "--limit", "3"]).exit_code == 0
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming 3/6 (finished before; 3 to run)" in said(resumed)
    assert "6 of 6 finished, 0 failed" in said(resumed)


def test_a_repaired_records_file_is_said_on_the_console(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 3)
    out = tmp_path / "r"
    args = ["run", "--backend", "scripted", "--dataset", str(data), "--budget", "2", "--out", str(out)]
    assert runner.invoke(app, [*args, "--limit", "2"]).exit_code == 0
    with (out / "records.jsonl").open("a") as f:
        f.write('{"format": "pumsearch-record", "problem_id": "d:3", "sta')  # killed mid-write
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert f"{out / 'records.jsonl'} ended in a line cut off mid-write (a killed run): it was removed" in said(resumed)


def _search(policy, max_tokens: int = 64):
    config = SearchConfig(strategy="bon", budget=3, max_tokens=max_tokens)
    engine = Engine(ScriptedGenerator(policy))
    (result,) = asyncio.run(engine.run([Problem("q", "What is 1 + 1?", "2")], make_strategy(config, False)))
    return result, config


def test_no_answer_says_why() -> None:
    from pumsearch.cli_solve import why_no_answer

    result, config = _search(lambda q, done, rng: "Step 1: I am thinking.")
    assert result.answer in (None, "")
    assert why_no_answer(result, config) == "none of the 3 solutions states a final answer"
    capped, config = _search(lambda q, done, rng: "one two three four five six seven eight", max_tokens=3)
    assert why_no_answer(capped, config) == ("none of the 3 solutions states a final answer; 3 of them stopped at "
                                             "the token cap (--max-tokens 3): raise it")


def test_solve_without_an_answer_or_a_scorer_says_so(tiny_llama_dir: Path) -> None:
    result = runner.invoke(app, ["solve", "What is 2 + 3?", "--model", str(tiny_llama_dir), "--budget", "2",
                                 "--max-tokens", "1", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    answer_line = next(line for line in result.output.splitlines() if line.startswith("answer:"))
    assert answer_line.strip() != "answer:"
    if "no answer found" in answer_line:  # one token rarely states an answer; if it does, it is printed
        assert "stopped at the token cap (--max-tokens 1)" in said(result)
    assert "candidates (no scorer)" in result.output and "aggregation" not in result.output
    scored = runner.invoke(app, ["solve", "What is 2 + 3?", "--model", str(tiny_llama_dir), "--budget", "2",
                                 "--max-tokens", "1", "--scorer", "verifier", "--answer", "5"])
    assert scored.exit_code == 0, scored.output
    assert "candidates (last aggregation)" in scored.output


@pytest.mark.slow
def test_converting_the_embedded_model_is_one_line_with_sizes_and_time(tmp_path: Path, capfd) -> None:
    from pumsearch.backends.embedded import embedded_model_dir
    from pumsearch.models import ModelLoadError

    try:
        target = embedded_model_dir(tmp_path / "cache")
    except ModelLoadError as err:
        pytest.skip(str(err))
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # not transformers' bar of one step per tensor
    assert "converted the embedded model once" in lines[0] and "MB GGUF ->" in lines[0] and str(target) in lines[0]
    assert lines[0].rstrip().endswith(" s")
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
