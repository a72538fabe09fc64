"""`pumsearch solve` with the tree-search strategies: refusals (exit 2, one line) and full runs on a
tiny random Llama, including a custom strategy loaded as package.module:ClassName."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app
from pumsearch.search.tree import load_tree

REPO_ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(step_llama_dir: Path) -> str:
    return str(step_llama_dir)


def solve(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["solve", "what is 1 + 3", *args])
    return result.exit_code, result.output


def solve_stdout(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["solve", "what is 1 + 3", *args])
    return result.exit_code, result.stdout, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in output
    text = " ".join(output.split())
    for needle in needles:
        assert needle in text


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_budget_not_a_multiple_of_the_width_exits_2(strategy: str) -> None:
    code, output = solve("--strategy", strategy, "--budget", "10", "--beam-width", "4",
                         "--scorer", "verifier", "--answer", "4", "--model", "/nonexistent/model")
    assert_one_line_error(code, output, "multiple of --beam-width", "N=10, M=4", "--budget 8 or 12")


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts"])
def test_tree_search_without_a_scorer_on_a_backend_without_logprobs_runs_best_of_n(strategy: str,
                                                                                   tmp_path: Path) -> None:
    """The scripted backend returns no token log-probabilities for the default confidence scorer, so
    the search runs as Best-of-N majority and says so (docs/scorers.md, "The default scorer";
    tests/test_confidence.py has the whole rule)."""
    result = runner.invoke(app, ["solve", "what is 1 + 3", "--strategy", strategy, "--backend", "scripted",
                                 "--budget", "4", "--json", "--tree-out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["strategy"] == "bon" and record["scorer"] is None and record["num_candidates"] == 4
    assert record["scorer_default"].startswith(f"no --scorer: {strategy} needs one, and --backend scripted")


def test_verifier_terminal_reward_needs_the_answer() -> None:
    code, output = solve("--strategy", "mcts", "--scorer", "verifier", "--terminal-reward", "verifier",
                         "--model", "/nonexistent/model")
    assert_one_line_error(code, output, "needs the reference answer")


def test_unknown_terminal_reward_exits_2() -> None:
    code, output = solve("--strategy", "mcts", "--scorer", "verifier", "--answer", "4",
                         "--terminal-reward", "oracle", "--model", "/nonexistent/model")
    assert_one_line_error(code, output, "unknown --terminal-reward 'oracle'")


@pytest.mark.parametrize(("strategy", "options"), [
    ("beam", ["--budget", "4", "--beam-width", "2", "--lookahead", "1", "--filter-duplicates"]),
    ("dvts", ["--budget", "4", "--beam-width", "2"]),
    ("mcts", ["--budget", "2", "--mcts-steps-per-solution", "3", "--expansions", "2", "--mcts-parallel", "2",
              "--c-puct", "1.5", "--terminal-reward", "verifier"]),
    ("docs.examples.custom_strategy:GreedyStep", ["--budget", "3"]),
])
def test_solve_runs_each_strategy_and_writes_record_and_tree(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str, options: list[str]
) -> None:
    # as under the console script: the working directory (the repository root) is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != REPO_ROOT])
    monkeypatch.chdir(REPO_ROOT)
    for name in [m for m in sys.modules if m == "docs" or m.startswith("docs.")]:
        monkeypatch.delitem(sys.modules, name)
    tree_file = tmp_path / "t.tree.json"
    code, stdout, output = solve_stdout(
        "--model", tiny_model, "--strategy", strategy, "--scorer", "verifier", "--answer", "4",
        "--temperature", "1.0", "--max-tokens", "24", "--max-step-tokens", "8", "--max-depth", "5",
        "--time-limit", "120", "--json", "--tree-out", str(tree_file), *options)
    assert code == 0, output
    record = json.loads(stdout.strip().splitlines()[-1])
    name = "greedy-step" if ":" in strategy else strategy  # the record names a strategy by its `name`
    assert record["status"] == "ok" and record["strategy"] == name
    counters = record["counters"]
    for key in ("generated_tokens", "prompt_tokens", "backend_calls", "mean_batch_size", "scorer_calls",
                "scorer_cache_hits", "wall_time"):
        assert key in counters
    assert counters["generated_tokens"] > 0 and counters["scorer_calls"] > 0
    tree, summary = load_tree(tree_file)
    assert len(tree) > 1 and summary is not None
    assert counters["generated_tokens"] == sum(a["num_tokens"] for _, a in tree.iter_nodes())
    assert not record["cut_short"]


def test_unimportable_custom_strategy_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT])
    monkeypatch.chdir("/")
    code, output = solve("--strategy", "nosuchpackage.mod:GreedyStep", "--model", "/nonexistent/model")
    assert_one_line_error(code, output, "cannot import strategy module 'nosuchpackage.mod'")
