"""The Python API: the same operations as the command line.

    from pumsearch import solve
    result = solve("What is 2 + 3?", strategy="bon", budget=8, answer="5")
    print(result.answer, result.counters.to_dict())
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Generator, Scorer
from pumsearch.search.result import SearchResult
from pumsearch.strategies import Strategy, make_strategy, search_config


def resolve_scorer(scorer: str | Scorer | None, config: SearchConfig, **options: Any) -> Scorer | None:
    """A scorer object as given, or built by name with ``options`` (model, base, device, dtype,
    prm_format, ...: see pumsearch.scorers.load_scorer); unset (None) options are left out."""
    if scorer is None or not isinstance(scorer, str):
        return scorer
    from pumsearch.scorers import load_scorer

    return load_scorer(scorer, step_delimiter=config.step_delimiter, **options)


def with_default_scorer(
    model: str | None, scorer: str | Scorer | None, scorer_model: str | None
) -> tuple[str | Scorer | None, str | None]:
    """The scorer and scorer model as given; when neither is given, the one ``model``'s registered
    family brings (a shipped testbed policy: the exact testbed PRM; see
    pumsearch.models.default_scorer_for)."""
    if scorer is not None or scorer_model is not None or not model:
        return scorer, scorer_model
    from pumsearch.models import default_scorer_for

    return default_scorer_for(model) or (scorer, scorer_model)


async def asearch(
    problems: Sequence[Problem],
    *,
    generator: Generator,
    scorer: Scorer | None = None,
    config: SearchConfig | None = None,
    strategy: Strategy | None = None,
    concurrency: int = 16,
    batch_tokens: int | None = None,
) -> list[SearchResult | BaseException]:
    """Search many problems concurrently through one engine (exceptions returned per problem), with
    the strategy ``config`` names or a ``strategy`` object (which holds its own config)."""
    if (config is None) == (strategy is None):
        raise ValueError("give asearch a config or a strategy (one of them)")
    if strategy is None:
        assert config is not None
        strategy = make_strategy(config, scorer is not None)
    engine = Engine(generator, scorer, concurrency=concurrency, batch_tokens=batch_tokens)
    return await engine.run(problems, strategy)


def solve(
    question: str,
    *,
    answer: str | None = None,
    problem_id: str = "question",
    model: str | None = None,
    generator: Generator | None = None,
    scorer: str | Scorer | None = None,
    scorer_options: dict[str, Any] | None = None,
    scorer_model: str | None = None,
    scorer_base: str | None = None,
    scorer_device: str | None = None,
    scorer_dtype: str | None = None,
    prm_format: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_tokens: int | None = None,
    **settings: Any,
) -> SearchResult:
    """Search one question. ``settings`` are SearchConfig fields (strategy, budget, temperature...) and
    the strategy's own settings (beam_width, c_puct...; see ``search_config``). ``scorer_model`` etc.
    are the --scorer-* flags; ``scorer_options`` takes any other scorer option. With no ``scorer`` and
    ``model`` a shipped testbed policy (``testbed:weak``/``testbed:strong``), the testbed's default
    scorer scores (the exact PRM; see ``with_default_scorer``)."""
    config = search_config(**settings)
    problem = Problem(problem_id, question, answer)
    if generator is None:  # a testbed policy with no scorer named gets the testbed's default scorer
        scorer, scorer_model = with_default_scorer(model, scorer, scorer_model)
    flags = {"model": scorer_model, "base": scorer_base, "device": scorer_device, "dtype": scorer_dtype,
             "prm_format": prm_format}
    options = {**{k: v for k, v in flags.items() if v is not None}, **(scorer_options or {})}
    scorer_obj = resolve_scorer(scorer, config, **options)
    strategy = make_strategy(config, scorer_obj is not None)  # fail fast, before a model loads
    if generator is None:
        from pumsearch.backends import load_generator

        generator = load_generator(model, device=device, dtype=dtype)
    (outcome,) = asyncio.run(asearch([problem], generator=generator, scorer=scorer_obj, strategy=strategy,
                                     batch_tokens=batch_tokens))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
