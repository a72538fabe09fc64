"""--kv-cache-mb: the transformers backend's prefix-cache budget from the command line and from a
TOML --config file, in solve, run and sweep; a bad value or a backend without the cache is one
line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.backends import load_generator
from pumsearch.cli import app
from pumsearch.cli_options import CommandLine
from tests import test_cli_options
from tests.helpers_runs import write_gsm8k_style

runner = CliRunner()
captured = test_cli_options.captured  # the fixture: the options each command would run with, unrun
BASE = {"solve": ["solve", "q"], "run": ["run"], "sweep": ["sweep"]}


@pytest.mark.parametrize("command", ["solve", "run", "sweep"])
@pytest.mark.parametrize("source", ["flag", "toml"])
def test_the_budget_reaches_the_prefix_cache(captured: list[CommandLine], tiny_llama_dir: Path, tmp_path: Path,
                                             command: str, source: str) -> None:
    if source == "flag":
        given = ["--kv-cache-mb", "3"]
    else:
        (tmp_path / "c.toml").write_text("kv-cache-mb = 3\n")
        given = ["--config", str(tmp_path / "c.toml")]
    result = runner.invoke(app, [*BASE[command], *given])
    assert result.exit_code == 0, result.output
    generator = load_generator(str(tiny_llama_dir), **captured.pop().backend())
    assert generator.prefix_cache.budget_bytes == 3 << 20


def test_zero_turns_the_cache_off_and_no_flag_keeps_the_default(captured: list[CommandLine],
                                                                 tiny_llama_dir: Path) -> None:
    runner.invoke(app, ["run", "--kv-cache-mb", "0"])
    assert not load_generator(str(tiny_llama_dir), **captured.pop().backend()).prefix_cache.enabled
    runner.invoke(app, ["run"])
    assert captured.pop().backend()["kv_cache_mb"] is None  # the backend's default from free memory
    runner.invoke(app, ["run", "--backend", "scripted"])
    assert "kv_cache_mb" not in captured.pop().backend()  # a backend without the cache never sees it


@pytest.mark.parametrize(("args", "message"), [
    (["--kv-cache-mb", "-1"], "--kv-cache-mb must be >= 0 (got -1)"),
    (["--kv-cache-mb", "8", "--backend", "openai", "--url", "http://127.0.0.1:9"],
     "--kv-cache-mb is for --backend transformers, not openai"),
    (["--kv-cache-mb", "8", "--backend", "scripted"], "--kv-cache-mb is for --backend transformers, not scripted"),
])
def test_a_bad_budget_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = runner.invoke(app, ["run", "--dataset", str(data), "--scorer", "verifier",
                                 "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_negative_budget_in_the_config_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("kv-cache-mb = -5\n")
    result = runner.invoke(app, ["solve", "What is 2 + 3?", "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 2 and "--kv-cache-mb must be >= 0 (got -5)" in result.output, result.output


def test_the_budget_is_no_part_of_the_run_key(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A run made with the cache off resumes with it on: the budget changes no record."""
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    args = ["run", "--model", str(tiny_llama_dir), "--dataset", str(data), "--scorer", "verifier", "--budget", "2",
            "--max-tokens", "6", "--out", str(tmp_path / "out")]
    first = runner.invoke(app, [*args, "--kv-cache-mb", "0"])
    assert first.exit_code == 0, first.output
    records = (tmp_path / "out" / "records.jsonl").read_text()
    again = runner.invoke(app, [*args, "--kv-cache-mb", "4"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out" / "records.jsonl").read_text() == records
