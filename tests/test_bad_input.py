"""Bad input found by pushing the command line (issue 15): each case is one line that says what to
fix, a documented exit code (2: usage), never a traceback, and nothing is loaded or written first.

The cases: broken checkpoints (a cut-off model.safetensors, a cut-off PUM adapter, a garbage
value_head.pt), an --out that cannot be written, TOML values of the wrong type, a tree file that is
a JSON list, an unknown device (refused before any model loads), a question longer than the
model's context, a budget whose work cannot fit in memory, and malformed scheduling and grid flags.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pumsearch.testbed
from pumsearch.cli import app
from tests.helpers_runs import write_gsm8k_style

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, *needles: str, code: int = 2) -> str:
    """The command failed with ``code`` and said one line (rich may wrap it) holding ``needles``."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert said.startswith("error: ") and said.count("error: ") == 1, result.output
    for needle in needles:
        assert needle in said, result.output
    return said


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- broken checkpoints -------------------------------------------------------------------------------
def test_a_truncated_model_safetensors_is_named_not_a_traceback(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    _truncate(model / "model.safetensors")
    result = invoke("solve", "What is 2 + 3?", "--model", str(model), "--budget", "1", "--max-tokens", "2")
    one_line_error(result, f"{model / 'model.safetensors'} is truncated", "download or save it again")


def test_a_safetensors_file_that_is_not_safetensors_is_corrupt(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    (model / "model.safetensors").write_bytes(b"<html>404 not found</html>" * 10)
    result = invoke("solve", "What is 2 + 3?", "--model", str(model), "--budget", "1", "--max-tokens", "2")
    one_line_error(result, "is corrupt (not a safetensors file)")


@pytest.fixture()
def pum_copy(tmp_path: Path) -> Path:
    """The shipped testbed PUM, copied so it can be broken."""
    checkpoint = tmp_path / "pum"
    shutil.copytree(pumsearch.testbed.PUM_DIR, checkpoint)
    return checkpoint


def _score_with(checkpoint: Path, tmp_path: Path):
    steps = tmp_path / "steps.txt"
    steps.write_text("7 + 5 = 12\n\n12 * 3 = 36")
    return invoke("score", "--scorer", "pum", "--scorer-model", str(checkpoint), "--question",
                  "start 7, add 5, times 3.", "--steps-file", str(steps))


def test_a_truncated_pum_adapter_is_named(pum_copy: Path, tmp_path: Path) -> None:
    _truncate(pum_copy / "backbone" / "adapter_model.safetensors")
    one_line_error(_score_with(pum_copy, tmp_path), "adapter_model.safetensors is truncated")


def test_a_garbage_value_head_is_corrupt_and_loading_it_unsafely_is_never_suggested(
    pum_copy: Path, tmp_path: Path
) -> None:
    for garbage in (os.urandom(300), b"hello, this is not a checkpoint"):
        (pum_copy / "value_head.pt").write_bytes(garbage)
        said = one_line_error(_score_with(pum_copy, tmp_path), f"{pum_copy / 'value_head.pt'} is corrupt")
        assert "weights_only=False" not in said and "`weights_only` set to `False`" not in said


# -- where the run goes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_out_that_cannot_be_created_is_one_line(tmp_path: Path, command: str) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke(command, "--backend", "scripted", "--dataset", str(data), "--out", str(blocker / "run"))
    one_line_error(result, f"cannot create {blocker / 'run'}", "choose an --out you can write to")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_an_out_in_a_read_only_directory_is_one_line(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = invoke("run", "--backend", "scripted", "--dataset", str(data), "--out", str(locked / "run"))
    finally:
        locked.chmod(0o755)
    one_line_error(result, "Permission denied")


# -- config files of the wrong types --------------------------------------------------------------------
@pytest.mark.parametrize(("line", "message"), [
    ('temperature = "hot"', "temperature must be a number (got 'hot')"),
    ('beam-width = "x"', "beam-width must be a whole number (got 'x')"),
    ("[search]\nbeam_width = 2.5", "beam-width must be a whole number (got 2.5)"),
    ("stop-at-boxed = 1", "stop-at-boxed must be true or false (got 1)"),
    ("max-tokens = true", "max-tokens must be a whole number (got True)"),
])
def test_config_values_of_the_wrong_type_name_the_file_and_key(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = invoke("run", "--backend", "scripted", "--dataset", str(data), "--strategy", "beam", "--scorer",
                    "verifier", "--config", str(config), "--out", str(tmp_path / "run"))
    one_line_error(result, f"{config}: {message}")
    assert not (tmp_path / "run").exists()


def test_config_numbers_where_text_or_floats_are_taken_still_work(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("temperature = 1\nbudgets = 2\nseeds = [0, 1]\n")
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = invoke("sweep", "--backend", "scripted", "--dataset", str(data), "--config", str(config), "--out",
                    str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    (run,) = sorted((tmp_path / "s").glob("*-s1-*/config.json"))
    assert json.loads(run.read_text())["search"]["temperature"] == 1.0


# -- tree files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["html", "-o", "x.html"], ["stats"], ["show"], ["graphml", "-o", "x.graphml"]])
def test_a_tree_file_holding_a_json_list_is_one_line(tmp_path: Path, command: list[str]) -> None:
    tree = tmp_path / "list.tree.json"
    tree.write_text("[1, 2, 3]")
    name, *options = command
    result = invoke("tree", name, str(tree), *[str(tmp_path / o) if o.startswith("x.") else o for o in options])
    one_line_error(result, "not a pumsearch tree (a JSON list, not an object)")


@pytest.mark.parametrize("command", ["html", "graphml"])
def test_a_tree_output_that_cannot_be_written_is_one_line(scripted_tree: Path, tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("tree", command, str(scripted_tree), "-o", str(blocker / "out"))
    one_line_error(result, f"cannot write {blocker / 'out'}", "choose another -o")


@pytest.fixture()
def scripted_tree(tmp_path: Path) -> Path:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 1)
    made = invoke("run", "--backend", "scripted", "--dataset", str(data), "--budget", "2", "--out", str(tmp_path / "r"))
    assert made.exit_code == 0, made.output
    (tree,) = (tmp_path / "r" / "trees").glob("*.tree.json")
    return tree


# -- devices --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "nope"], "unknown device 'nope' (--device)"),
    (["--device", "cuda:x"], "unknown device 'cuda:x' (--device)"),
    (["--scorer", "verifier", "--answer", "5", "--scorer-device", "gpu"], "unknown device 'gpu' (--scorer-device)"),
])
def test_an_unknown_device_is_refused_before_any_model_loads(flags: list[str], message: str) -> None:
    # the model path does not exist: had anything started loading, that would be the error
    result = invoke("solve", "What is 2 + 3?", "--model", "/definitely/not/here", *flags)
    one_line_error(result, message, "use cpu, cuda, cuda:N, mps or auto")


# -- limits ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("characters", [3_000, 100_000])
def test_a_question_longer_than_the_context_is_refused_with_the_numbers(tiny_llama_dir: Path,
                                                                          characters: int) -> None:
    question = ("What is 2 + 3? " * (characters // 15 + 1))[:characters]
    result = invoke("solve", question, "--model", str(tiny_llama_dir), "--budget", "2", "--max-tokens", "4")
    said = one_line_error(result, "but the model reads at most 512 (its context)", "shorten the question")
    tokens = int(said.split("the prompt is ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens > 512


def test_a_run_records_a_too_long_question_as_failed_and_runs_the_others(tiny_llama_dir: Path,
                                                                         tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "5"}) + "\n"
                            for q in ("What is 2 + 3?", "What is 2 + 3? " * 7000)))
    out = tmp_path / "run"
    result = invoke("run", "--model", str(tiny_llama_dir), "--dataset", str(data), "--budget", "1", "--max-tokens",
                    "2", "--out", str(out))
    assert result.exit_code == 1, result.output  # a problem failed
    said = " ".join(result.output.split())
    assert "1 x PromptTooLong: the prompt is" in said and "at most 512" in said
    statuses = [json.loads(line)["status"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(statuses) == ["failed", "ok"]


@pytest.mark.parametrize("command", ["solve", "run", "sweep"])
def test_a_budget_that_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path: Path, command: str) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    target = {"solve": ["What is 2 + 3?"], "run": ["--dataset", str(data), "--out", str(tmp_path / "r")],
              "sweep": ["--dataset", str(data), "--out", str(tmp_path / "s"), "--budgets", "4,1000000000"]}[command]
    budget = [] if command == "sweep" else ["--budget", "1000000000"]
    result = invoke(command, "--backend", "scripted", *target, *budget)
    one_line_error(result, "--budget 1000000000 lets one search generate up to 512,000,000,000 tokens "
                           "(1,000,000,000 solutions of up to --max-tokens 512)", "GB of memory", "lower --budget")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_tree_search_budget_is_estimated_by_its_step_cap() -> None:
    result = invoke("solve", "What is 2 + 3?", "--backend", "scripted", "--strategy", "mcts", "--scorer", "verifier",
                    "--answer", "5", "--budget", "100000000", "--max-step-tokens", "64")
    one_line_error(result, "(800,000,000 step expansions of up to --max-step-tokens 64)", "lower --budget, "
                           "--max-step-tokens or --concurrency")


@pytest.mark.parametrize(("command", "flags", "message"), [
    ("run", ["--batch-tokens", "0"], "--batch-tokens must be at least 1 (got 0)"),
    ("run", ["--batch-tokens", "-5"], "--batch-tokens must be at least 1 (got -5)"),
    ("run", ["--concurrency", "0"], "--concurrency must be at least 1 (got 0)"),
    ("run", ["--threads", "0"], "--threads must be at least 1 (got 0)"),
    ("run", ["--shard", "0/0"], "--shard 0/0: the number of shards n must be at least 1"),
    ("sweep", ["--budgets", "4,,8"], "--budgets '4,,8' has an empty entry: separate the numbers with single commas"),
    ("sweep", ["--budgets", "4,8,"], "--budgets '4,8,' has an empty entry"),
    ("sweep", ["--seeds", "0,,1"], "--seeds '0,,1' has an empty entry"),
])
def test_bad_scheduling_and_grid_flags_are_one_line(tmp_path: Path, command: str, flags: list[str],
                                                    message: str) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = invoke(command, "--backend", "scripted", "--dataset", str(data), "--out", str(tmp_path / "o"), *flags)
    one_line_error(result, message)
    assert not (tmp_path / "o").exists()
