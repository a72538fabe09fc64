"""Search strategies, by name; any importable class with ``--strategy package.module:ClassName``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from pumsearch.search.config import SearchConfig
from pumsearch.strategies.adaptive_bon import AdaptiveBestOfN, AdaptiveBestOfNSettings
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings
from pumsearch.strategies.beam import DVTS, BeamSearch, BeamSettings, StepSearchSettings
from pumsearch.strategies.best_of_n import BestOfN, BestOfNSettings
from pumsearch.strategies.mcts import MCTS, MCTSSettings
from pumsearch.strategies.particles import ParticleFiltering, ParticleSettings
from pumsearch.strategies.rebase import Rebase, RebaseSettings

# "bon" is Best-of-N with its adaptive option (plain BestOfN when the option is off)
STRATEGIES: dict[str, type[Strategy]] = {"bon": AdaptiveBestOfN, "beam": BeamSearch, "dvts": DVTS, "mcts": MCTS,
                                         "particles": ParticleFiltering, "rebase": Rebase}
SEARCH_FIELDS = frozenset(f.name for f in fields(SearchConfig))


def strategy_names() -> list[str]:
    return sorted(STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    """A built-in strategy by name, or a class named ``package.module:ClassName``."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            with _cwd_importable():
                module = importlib.import_module(module_name)
        except ImportError as err:
            raise StrategyError(f"cannot import strategy module {module_name!r}: {err}") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise StrategyError(f"{name!r} is not a Strategy subclass")
        return cls
    raise StrategyError(
        f"unknown strategy {name!r}: use one of {', '.join(strategy_names())} or package.module:ClassName"
    )


def make_strategy(config: SearchConfig, has_scorer: bool) -> Strategy:
    """The strategy named by ``config.strategy``, holding ``config``, checked against its settings."""
    strategy = get_strategy(config.strategy)(config)
    strategy.validate(has_scorer)
    return strategy


def search_config(**settings: Any) -> SearchConfig:
    """A SearchConfig from flat keywords: SearchConfig fields by name, every other keyword a setting
    of the strategy (typed and checked by its ``Settings``), e.g.
    ``search_config(strategy="beam", budget=16, beam_width=4)``. As with their command-line flags, a
    built-in strategy's setting that this strategy does not take is left out; any other name it does
    not take is refused."""
    core = {k: v for k, v in settings.items() if k in SEARCH_FIELDS}
    cls = get_strategy(core.get("strategy", SearchConfig.strategy))
    own = set(cls.Settings.types())
    named = {s.name for s in builtin_settings()}
    options = {k: v for k, v in settings.items() if k not in SEARCH_FIELDS and (k in own or k not in named)}
    options.update(core.pop("strategy_options", {}))
    return SearchConfig(**core, strategy_options=cls.Settings.parse(options, cls.name))


@dataclass(frozen=True)
class NamedSetting:
    """A setting of one or more built-in strategies, with what its command-line flag shows."""

    name: str
    type: Any
    default: Any
    help: str
    strategies: tuple[str, ...]


def builtin_settings() -> list[NamedSetting]:
    """Every setting of the built-in strategies, once (beam and DVTS share theirs), in declaration
    order; each becomes a named flag (``--beam-width``). Two strategies declaring one name
    differently is a programming error."""
    found: dict[str, NamedSetting] = {}
    for name, cls in STRATEGIES.items():
        types_ = cls.Settings.types()
        defaults = vars(cls.Settings())
        for f in fields(cls.Settings):
            seen = found.get(f.name)
            if seen is None:
                found[f.name] = NamedSetting(f.name, types_[f.name], defaults[f.name], f.metadata.get("help", ""),
                                             (name,))
            elif (seen.type, seen.default, seen.help) != (types_[f.name], defaults[f.name], f.metadata.get("help", "")):
                raise TypeError(f"strategies {seen.strategies[0]} and {name} declare setting {f.name} differently")
            else:
                found[f.name] = NamedSetting(f.name, seen.type, seen.default, seen.help, (*seen.strategies, name))
    return list(found.values())


@contextmanager
def _cwd_importable() -> Iterator[None]:
    """The console script's sys.path lacks the working directory (``python -m`` has it); add it,
    last, while a custom strategy is imported, so a project's own modules load either way."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


__all__ = ["DVTS", "MCTS", "STRATEGIES", "AdaptiveBestOfN", "AdaptiveBestOfNSettings", "BeamSearch", "BeamSettings",
           "BestOfN", "BestOfNSettings", "MCTSSettings", "NamedSetting", "ParticleFiltering", "ParticleSettings",
           "Rebase", "RebaseSettings", "StepSearchSettings", "Strategy", "StrategyError", "StrategySettings",
           "builtin_settings", "get_strategy", "make_strategy", "search_config", "strategy_names"]
