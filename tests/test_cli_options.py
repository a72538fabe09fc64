"""The options `solve`, `run` and `sweep` share are declared once (pumsearch/cli_options.py): each
reads the same in all three commands, and every search setting, a strategy's own ones included,
reaches the search from the command line and from a TOML --config file."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
import typer
from typer.testing import CliRunner

import pumsearch.cli_runs
import pumsearch.cli_solve
from pumsearch.cli import app
from pumsearch.cli_options import CommandLine
from pumsearch.search.config import SearchConfig
from pumsearch.search.tree import ROOT, load_tree
from pumsearch.strategies import STRATEGIES, builtin_settings
from tests.helpers_runs import write_gsm8k_style

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[1]
SOLVE_ONLY = {"question", "answer", "tree_out", "as_json", "scorer_model", "prm_format"}
RUN_ONLY = {"dataset", "out", "question_field", "answer_field", "id_field", "limit", "offset", "ids", "shard"}
PER_RUN = {"strategy", "budget", "seed"}
SWEEP_AXES = {"strategies", "budgets", "scorers", "seeds"}
SEARCH_FIELDS = [name for name in get_type_hints(SearchConfig) if name != "strategy_options"]


def _options(name: str) -> dict[str, Any]:
    """The click parameters of a command (typer may vendor its own click, so no isinstance here)."""
    command = typer.main.get_command(app)
    return {p.name: p for p in command.commands[name].params}  # type: ignore[attr-defined]


def _describe(param: Any) -> tuple:
    return (tuple(param.opts), tuple(param.secondary_opts), param.default, getattr(param, "help", None),
            getattr(param, "hidden", False), param.multiple)


def test_every_shared_option_reads_the_same_in_solve_run_and_sweep() -> None:
    solve, run, sweep = _options("solve"), _options("run"), _options("sweep")
    assert set(run) - {"scorer"} == (set(solve) - SOLVE_ONLY - {"scorer"}) | RUN_ONLY
    assert set(sweep) == (set(run) - PER_RUN - {"scorer"}) | SWEEP_AXES
    for name in set(solve) & set(run) & set(sweep):
        assert _describe(solve[name]) == _describe(run[name]) == _describe(sweep[name]), name
    for name in (set(solve) & set(run)) - {"scorer"}:
        assert _describe(solve[name]) == _describe(run[name]), name
    assert not run["backend"].hidden and run["scripted_delay"].hidden


def test_every_search_setting_has_a_flag_with_the_library_default() -> None:
    defaults = SearchConfig()
    for command in ("solve", "run", "sweep"):
        options = _options(command)
        for name in SEARCH_FIELDS:
            if command == "sweep" and name in PER_RUN:
                continue
            assert options[name].default == getattr(defaults, name), (command, name)
        for setting in builtin_settings():
            assert options[setting.name].default == setting.default, (command, setting.name)
            assert all(s in options[setting.name].help for s in setting.strategies)
        assert "strategy_option" in options and "config_file" in options


# -- every setting reaches the search -------------------------------------------------------------------
TEXT_VALUES = {"strategy": "mcts", "step_delimiter": "\n---\n", "system_prompt": "Be brief."}


def _other_value(name: str, annotation: Any, default: Any) -> Any:
    """A valid value of a setting other than its default."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _other_value(name, members[0], None)
    if get_origin(annotation) is Literal:
        return next(choice for choice in get_args(annotation) if choice != default)
    if annotation is bool:
        return not default
    if annotation is int:
        return 3
    if annotation is float:
        return 0.5
    return TEXT_VALUES[name]


# name -> (a value other than the default, the strategy that takes it; None: a SearchConfig field)
SETTINGS: dict[str, tuple[Any, str | None]] = {
    **{name: (_other_value(name, hint, getattr(SearchConfig(), name)), None)
       for name, hint in get_type_hints(SearchConfig).items() if name != "strategy_options"},
    **{s.name: (_other_value(s.name, s.type, s.default), s.strategies[0]) for s in builtin_settings()},
}


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag[2:]}"]
    return [flag, str(value)]


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML reads JSON's strings, numbers and booleans alike


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list[CommandLine]:
    """The options each command would run with; the command itself does nothing."""
    seen: list[CommandLine] = []
    for module, name in ((pumsearch.cli_solve, "solve_command"), (pumsearch.cli_runs, "run_command"),
                         (pumsearch.cli_runs, "sweep_command")):
        monkeypatch.setattr(module, name, seen.append)
    return seen


def _config_of(command: str, opts: CommandLine) -> tuple[dict[str, Any], dict[str, Any]]:
    """(SearchConfig fields, the strategy's own options) as the command resolves them."""
    if command == "sweep":
        strategies = opts["strategies"].split(",")
        return opts.search_settings(), opts.strategy_options(strategies)[0]
    config = opts.search_config()
    return {name: getattr(config, name) for name in SEARCH_FIELDS}, config.strategy_options


def _settings_args(source: str, settings: dict[str, Any], toml: Path) -> list[str]:
    """Command-line arguments that set ``settings`` from ``source``."""
    if source == "flag":
        return [arg for name, value in settings.items() for arg in _flag(name, value)]
    if source == "strategy-option":
        return [arg for name, value in settings.items() for arg in ("--strategy-option", f"{name}={value}")]
    lines = [f"{name.replace('_', '-') if source == 'toml' else name} = {json.dumps(value)}"  # TOML reads
             for name, value in settings.items()]                                              # JSON's values
    header = {"toml": [], "search-table": ["[search]"], "strategy-option-table": ["[strategy-option]"]}[source]
    toml.write_text("\n".join([*header, *lines]) + "\n")
    return ["--config", str(toml)]


@pytest.mark.parametrize("command", ["solve", "run", "sweep"])
@pytest.mark.parametrize("source", ["flag", "toml", "search-table", "strategy-option", "strategy-option-table"])
def test_every_setting_is_reachable_from_the_command_line_and_from_toml(
    captured: list[CommandLine], tmp_path: Path, command: str, source: str
) -> None:
    """One command line per strategy that owns settings: its own settings, and (except through
    --strategy-option, which is for a strategy's own) every SearchConfig field."""
    base = {"solve": ["solve", "q"], "run": ["run"], "sweep": ["sweep"]}[command]
    owners = sorted({owner for _, owner in SETTINGS.values() if owner})
    for i, owner in enumerate(owners):
        wanted = {name: value for name, (value, by) in SETTINGS.items()
                  if by == owner or (by is None and i == 0 and not source.startswith("strategy-option")
                                     and not (command == "sweep" and name in PER_RUN))}
        choose = ["--strategies" if command == "sweep" else "--strategy", owner]
        if "strategy" in wanted:  # set from the same source, to the strategy that owns the settings
            wanted["strategy"], choose = owner, []
        result = runner.invoke(app, [*base, *choose, *_settings_args(source, wanted, tmp_path / "c.toml")])
        assert result.exit_code == 0, result.output
        settings, options = _config_of(command, captured.pop())
        for name, value in wanted.items():
            got = options.get(name) if SETTINGS[name][1] else settings[name]
            assert got == value and type(got) is type(value), (command, source, name, got)


def test_the_command_line_beats_the_file_and_named_flags_equal_strategy_options(
    captured: list[CommandLine], tmp_path: Path
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('temperature = 0.3\nc-puct = 2.5\n[strategy-option]\nexpansions = 4\n')
    runner.invoke(app, ["run", "--strategy", "mcts", "--config", str(toml), "--temperature", "0.6"])
    config = captured.pop().search_config()
    assert config.temperature == 0.6 and config.strategy_options == {"c_puct": 2.5, "expansions": 4}
    runner.invoke(app, ["run", "--strategy", "mcts", "--c-puct", "2.5", "--strategy-option", "expansions=4"])
    assert captured.pop().search_config().strategy_options == config.strategy_options
    runner.invoke(app, ["sweep", "--beam-width", "2", "--strategy-option", "c_puct=3"])
    assert captured.pop().strategy_options(["bon", "beam", "mcts"]) == [{}, {"beam_width": 2}, {"c_puct": 3.0}]


# -- bad strategy options ------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "bon", "--strategy-option", "width=3"], "strategy 'bon' has no setting 'width'"),
    (["--strategy", "mcts", "--strategy-option", "c_puct=abc"], "setting c_puct takes a number, not 'abc'"),
    (["--strategy", "mcts", "--strategy-option", "c_puct"], "--strategy-option 'c_puct' is not KEY=VALUE"),
    (["--strategy", "mcts", "--c-puct", "2", "--strategy-option", "c_puct=3"], "both set c_puct"),
    (["--strategy", "mcts", "--strategy-option", "terminal_reward=oracle"], "unknown --terminal-reward 'oracle'"),
])
def test_a_bad_strategy_option_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = runner.invoke(app, ["run", "--backend", "scripted", "--dataset", str(data), "--scorer", "verifier",
                                 "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_refuses_an_option_none_of_its_strategies_takes(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = runner.invoke(app, ["sweep", "--backend", "scripted", "--dataset", str(data), "--strategies",
                                 "bon,beam", "--scorers", "verifier", "--strategy-option", "c_puct=2",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "none of the strategies bon, beam has setting c_puct" in result.output


# -- an importable strategy gets its options ------------------------------------------------------------
def test_strategy_option_reaches_an_importable_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    out = tmp_path / "greedy"
    args = ["run", "--backend", "scripted", "--dataset", str(data), "--scorer", "verifier", "--budget", "4",
            "--strategy", "docs.examples.custom_strategy:GreedyStep", "--max-tokens", "64", "--out", str(out)]
    result = runner.invoke(app, [*args, "--strategy-option", "width=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["search"]["extra"] == {"width": 2}
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["strategy"] == "greedy-step"  # the record names the strategy by its name
        tree, _ = load_tree(out / record["tree_file"])
        assert len(tree.children(ROOT)) == 2  # width 2, not --budget 4
    toml = tmp_path / "g.toml"
    toml.write_text("[strategy-option]\nwidth = 2\n")
    assert runner.invoke(app, [*args, "--config", str(toml)]).exit_code == 0  # the same run: it resumes
    changed = runner.invoke(app, [*args, "--strategy-option", "width=3"])
    assert changed.exit_code == 2 and "search.extra.width: 2 -> 3" in changed.output


def test_the_builtin_strategies_and_their_flags_are_generated_from_the_registry() -> None:
    help_text = _options("run")["strategy"].help
    assert help_text.startswith("|".join(STRATEGIES))
