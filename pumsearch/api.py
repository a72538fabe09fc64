"""The Python API: the same operations as the command line.

    from pumsearch import solve
    result = solve("What is 2 + 3?", strategy="bon", budget=8, answer="5")
    print(result.answer, result.counters.to_dict())
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class SearchDefault:
    """What a search runs with when no scorer is named: a scorer (and its checkpoint), or another
    strategy, and the one line that says so (printed, and kept in the record as ``scorer_default``)."""

    scorer: str | None
    scorer_model: str | None
    strategy: str | None  # run this strategy instead of the one asked for; None: as asked
    note: str
    from_family: bool = False  # the model's own scorer (a testbed policy's exact PRM), not the search's rule


# A strategy that needs a scorer, with none named and none the model's family brings, scores by the
# policy's own per-token probability (the confidence scorer's default measure, likelihood: no
# reward model, no forward pass) where that was measured to beat Best-of-N majority vote at equal
# tokens on the testbed (docs/scorers.md, "The default scorer"; the figures are the ones the note
# quotes). Elsewhere, or on a backend that returns no token log-probabilities, it runs as Best-of-N
# with majority vote at the same budget (about the same tokens), except particle filtering and
# REBASE (REFUSED_WITHOUT_SCORER): their answer is the scorer's weighting at every step, so Best-of-N
# in their place would be another method under their name; they are refused with what to name.
DEFAULT_SCORER = "confidence"
MEASURED_WITH_CONFIDENCE = {
    "beam": "beam 0.48 / 0.51 right vs majority vote 0.36 / 0.42 at N = 4 / 8",
    "dvts": "DVTS 0.52 / 0.52 right vs majority vote 0.36 / 0.45 at N = 4 / 16",
    "mcts": "MCTS 0.48 / 0.49 right vs majority vote about 0.39 / 0.43 at its tokens (N = 4 / 16)",
    "particles": "particle filtering 0.43 / 0.47 right vs majority vote 0.36 / 0.42 at N = 4 / 8",
    "rebase": "REBASE 0.49 / 0.53 right vs majority vote 0.36 / 0.42 at N = 4 / 8",
}
REFUSED_WITHOUT_SCORER = frozenset({"particles", "rebase"})
REWARD_MODEL_HINT = "name a reward model with --scorer prm|pum|orm --scorer-model PATH"
CONFIDENCE_NOTE = (
    "no --scorer: {strategy} scores by the policy's own per-token probability (--scorer confidence: no reward "
    "model, no extra forward pass); testbed, equal tokens: {measured} (docs/scorers.md); " + REWARD_MODEL_HINT)
NO_SCORER_NOTE = (
    "no --scorer: {strategy} needs one, and {why}, so this runs Best-of-N with majority vote at the same "
    "budget; " + REWARD_MODEL_HINT)
NOT_MEASURED = "no scorer without a reward model was measured to help it (docs/scorers.md)"
NO_LOGPROBS = "--backend {backend} returns no token log-probabilities for the confidence scorer"
UNKNOWN_LOGPROBS = "a generator object may return no token log-probabilities (pass scorer='confidence' if it does)"
NO_SCORER_ERROR = (
    "no --scorer: {strategy} needs one, and {why}; name one: --scorer confidence with a backend that returns "
    "them ({able}), or " + REWARD_MODEL_HINT.removeprefix("name "))


def search_default(model: str | None, strategy: str, backend: str | None = "transformers") -> SearchDefault | None:
    """What a search with ``strategy`` and no scorer named runs with: the scorer ``model``'s
    registered family brings (a shipped testbed policy: the exact testbed PRM, the best measured
    scorer that ships; see pumsearch.testbed.DEFAULT_SCORER); else, for a strategy that needs a scorer, the confidence
    scorer where it was measured to help (MEASURED_WITH_CONFIDENCE) and ``backend`` returns token
    log-probabilities (None: unknown, a generator object), or Best-of-N with majority vote instead
    (particle filtering and REBASE: a StrategyError that says what to name); None when the strategy
    runs as asked without one (Best-of-N: majority vote)."""
    from pumsearch.backends import backend_entry, top_logprob_backends
    from pumsearch.models import default_scorer_for
    from pumsearch.strategies import StrategyError, get_strategy

    family = default_scorer_for(model)
    if family is not None:
        name, path = family
        named = f"--scorer {name}" + (f" --scorer-model {path}" if path else "")
        return SearchDefault(name, path, None, f"no --scorer: {model} brings its own scorer, {named}; "
                                               "name another with --scorer", True)
    cls = get_strategy(strategy)
    if not cls.requires_scorer:
        return None
    logprobs = backend is not None and backend_entry(backend).top_logprobs
    if cls.name in MEASURED_WITH_CONFIDENCE and logprobs:
        note = CONFIDENCE_NOTE.format(strategy=cls.name, measured=MEASURED_WITH_CONFIDENCE[cls.name])
        return SearchDefault(DEFAULT_SCORER, None, None, note)
    if cls.name not in MEASURED_WITH_CONFIDENCE:
        why = NOT_MEASURED
    else:
        why = NO_LOGPROBS.format(backend=backend) if backend is not None else UNKNOWN_LOGPROBS
    if cls.name in REFUSED_WITHOUT_SCORER:
        raise StrategyError(NO_SCORER_ERROR.format(strategy=cls.name, why=why, able=top_logprob_backends()))
    return SearchDefault(None, None, "bon", NO_SCORER_NOTE.format(strategy=cls.name, why=why))


def with_default_scorer(
    model: str | None, scorer: str | Scorer | None, scorer_model: str | None
) -> tuple[str | Scorer | None, str | None]:
    """The scorer and scorer model as given; when neither is given, the one ``model``'s registered
    family brings (``search_default``), else none."""
    if scorer is not None or scorer_model is not None:
        return scorer, scorer_model
    default = search_default(model, "bon")
    return (default.scorer, default.scorer_model) if default is not None else (None, None)


def apply_default(config: SearchConfig, default: SearchDefault | None) -> SearchConfig:
    """``config`` with the default's strategy (and none of the asked strategy's own settings)."""
    if default is None or default.strategy is None:
        return config
    return replace(config, strategy=default.strategy, strategy_options={})


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
    scorer (the exact PRM) scores; a strategy that needs a scorer takes ``search_default``'s (the confidence scorer, or
    Best-of-N with majority vote where that was not measured to help or ``generator`` is an object
    of unknown log-probabilities), with a UserWarning that says so; particle filtering and REBASE
    raise a StrategyError instead of running as Best-of-N."""
    config = search_config(**settings)
    problem = Problem(problem_id, question, answer)
    if scorer is None and scorer_model is None:  # a testbed policy's default; a tree search: see search_default
        default = search_default(model if generator is None else None, config.strategy,
                                 "transformers" if generator is None else None)
        if default is not None:
            scorer, scorer_model, config = default.scorer, default.scorer_model, apply_default(config, default)
            if not default.from_family:  # a testbed policy's own scorer is what it is for; the rest: say so
                warnings.warn(default.note, UserWarning, stacklevel=2)
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
