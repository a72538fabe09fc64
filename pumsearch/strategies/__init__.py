"""Search strategies, by name; any importable class with ``--strategy package.module:ClassName``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pumsearch.search.config import SearchConfig
from pumsearch.strategies.base import Strategy, StrategyError
from pumsearch.strategies.beam import DVTS, BeamSearch
from pumsearch.strategies.best_of_n import BestOfN
from pumsearch.strategies.mcts import MCTS

STRATEGIES: dict[str, type[Strategy]] = {"bon": BestOfN, "beam": BeamSearch, "dvts": DVTS, "mcts": MCTS}


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
    """The strategy named by ``config.strategy``, checked against its settings."""
    strategy = get_strategy(config.strategy)(config)
    strategy.validate(has_scorer)
    return strategy


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


__all__ = ["DVTS", "MCTS", "STRATEGIES", "BeamSearch", "BestOfN", "Strategy", "StrategyError", "get_strategy",
           "make_strategy", "strategy_names"]
