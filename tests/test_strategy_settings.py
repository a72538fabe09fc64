"""Each strategy owns its settings and declares what the rest of the system needs from it; the
engine takes the strategy, which holds the one config; run keys keep the layout they had when the
strategy settings were SearchConfig fields."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from dataclasses import fields

import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.runs.rundir import FLAT_STRATEGY_SETTINGS, RunSpec, search_from_dict, search_to_dict
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.strategies import (
    DVTS,
    MCTS,
    STRATEGIES,
    BeamSearch,
    BestOfN,
    StrategyError,
    builtin_settings,
    get_strategy,
    search_config,
)
from tests.helpers_search import run, scripted_scorer

# The keys of the serialized search settings when every strategy setting was a SearchConfig field.
LEGACY_KEYS = ["aggregate", "beam_width", "budget", "c_puct", "expansions", "extra", "filter_duplicates", "lookahead",
               "max_depth", "max_step_tokens", "max_tokens", "mcts_parallel", "mcts_steps_per_solution", "seed",
               "select", "step_delimiter", "stop_at_boxed", "strategy", "system_prompt", "temperature",
               "terminal_reward", "time_limit", "top_p"]


def old_hash(config: SearchConfig) -> str:
    """What SearchConfig.hash() computed before strategies owned their settings."""
    return hashlib.sha256(json.dumps(search_to_dict(config), sort_keys=True).encode()).hexdigest()[:12]


def test_serialized_settings_keep_the_layout_and_the_keys_of_existing_run_directories() -> None:
    # the hashes were computed with the build before this change (SearchConfig(...).hash(), RunSpec.key)
    assert sorted(search_to_dict(SearchConfig())) == LEGACY_KEYS
    assert old_hash(SearchConfig()) == "9f95e411c41b"
    assert old_hash(search_config(strategy="mcts", budget=4, c_puct=1.5, terminal_reward="verifier")) == "1f250be8915b"
    beam = search_config(strategy="beam", budget=16, beam_width=8, lookahead=1, filter_duplicates=True, max_depth=10)
    assert old_hash(beam) == "de51a894f785"
    dvts = RunSpec(SearchConfig(strategy="dvts", budget=8), {"spec": "gsm8k"}, {"name": "m"}, None, [4, 8],
                   {"unit": "subtrees", "budget_per_group": 4})
    assert dvts.key == "8b5e7d352546"


def test_builtin_defaults_equal_the_flat_placeholders() -> None:
    """A built-in strategy run with a setting at its default keys as before only while the default
    equals the placeholder every serialized config carries."""
    for setting in builtin_settings():
        if setting.name in FLAT_STRATEGY_SETTINGS:
            assert setting.default == FLAT_STRATEGY_SETTINGS[setting.name], setting.name
    assert set(FLAT_STRATEGY_SETTINGS) <= {s.name for s in builtin_settings()}  # no stale placeholder


@pytest.mark.parametrize("config", [
    SearchConfig(),
    search_config(strategy="mcts", c_puct=2.0, expansions=3),
    search_config(strategy="beam", beam_width=2, filter_duplicates=True, time_limit=3.0, select="majority"),
    SearchConfig(strategy="pkg.mod:Custom", strategy_options={"width": 3, "greedy": True}),
])
def test_serialized_settings_round_trip(config: SearchConfig) -> None:
    data = search_to_dict(config)
    assert search_from_dict(json.loads(json.dumps(data))) == config
    assert data["extra"] == {k: v for k, v in config.strategy_options.items() if k not in FLAT_STRATEGY_SETTINGS}


def test_settings_are_typed_and_checked_by_the_strategy() -> None:
    assert search_config(strategy="mcts", c_puct="2", expansions="3").strategy_options == {"c_puct": 2.0,
                                                                                          "expansions": 3}
    assert search_config(strategy="beam", filter_duplicates="true", beam_width=4).strategy_options == {
        "filter_duplicates": True}  # a value equal to the default is left out: it keys the same run
    with pytest.raises(StrategyError, match="takes a whole number, not 'x'"):
        search_config(strategy="mcts", expansions="x")
    with pytest.raises(StrategyError, match=r"strategy 'bon' has no setting 'width' \(it takes adaptive, keep,"):
        search_config(strategy="bon", width=3)
    with pytest.raises(StrategyError, match="it takes beam_width, last_round_to_end, lookahead"):
        DVTS(SearchConfig(strategy="dvts", strategy_options={"filter_duplicates": True}))
    # a built-in strategy's setting that this one does not take is left out, as with its flag
    assert search_config(strategy="bon", beam_width=8).strategy_options == {}
    assert MCTS(search_config(strategy="mcts", c_puct=0.5)).settings.c_puct == 0.5


def test_strategies_declare_subsampling_node_statistics_and_reference_needs() -> None:
    assert BestOfN.subsample_unit == "solutions" and BestOfN(SearchConfig()).budget_per_group() == 1
    dvts = DVTS(search_config(strategy="dvts", beam_width=2))
    assert dvts.subsample_unit == "subtrees" and dvts.budget_per_group() == 2
    assert BeamSearch.subsample_unit is None and MCTS.subsample_unit is None
    assert MCTS(search_config(strategy="mcts", terminal_reward="verifier")).needs_reference() == \
        "--terminal-reward verifier"
    assert all(cls(SearchConfig(strategy=name)).needs_reference() is None for name, cls in STRATEGIES.items()
               if cls is not MCTS)
    (beam,), _ = run([Problem("p", "q")], search_config(strategy="beam", budget=4, beam_width=2))
    (mcts,), _ = run([Problem("p", "q")], search_config(strategy="mcts", budget=2))
    assert all("visits" not in attrs for _, attrs in beam.tree.iter_nodes())
    assert all(isinstance(attrs["visits"], int) for _, attrs in mcts.tree.iter_nodes())


def test_the_engine_takes_the_strategy_and_its_one_config() -> None:
    assert "config" not in inspect.signature(Engine.run).parameters
    strategy = BestOfN(SearchConfig(budget=3, max_tokens=40, seed=1))

    async def go():
        return await Engine(ScriptedGenerator(), scripted_scorer()).run([Problem("p", "q")], strategy)

    (result,) = asyncio.run(go())
    assert len(result.candidates) == 3 and result.strategy == "bon"


def test_every_strategy_setting_has_a_help_text() -> None:
    for name in STRATEGIES:
        for f in fields(get_strategy(name).Settings):
            assert f.metadata.get("help"), (name, f.name)
    for f in fields(SearchConfig):
        assert f.name == "strategy_options" or f.metadata.get("help"), f.name


def test_a_strategy_author_imports_only_from_pumsearch() -> None:
    import ast
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "custom_strategy.py"
    tree = ast.parse(example.read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in modules if m and m.startswith("pumsearch")} == {"pumsearch"}
