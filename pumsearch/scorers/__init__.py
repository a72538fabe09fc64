"""Scorers behind one batched, cached interface (see scorers/base.py and docs/scorers.md).

``load_scorer(name, **options)`` builds any of them. Common options: ``model`` (checkpoint path;
for ``rollout`` comma-separated student models), ``base`` (PUM base model override), ``device``,
``dtype``, ``prm_format`` (qwen, shepherd, rlhflow), ``system_prompt``. PUM: ``activation``,
``read_offset``, ``merge``. Rollout: ``students`` (Generator objects), ``k``, ``temperature``,
``top_p``, ``max_tokens``, ``seed``. Wrapper: ``batch_tokens``, ``max_batch_items``,
``cache_size``. Model imports happen only when a scorer is built.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pumsearch.scorers.base import AsyncModelScorer, BatchedScorer, ModelScorer, ScorerError

WRAPPER_OPTIONS = ("batch_tokens", "max_batch_items", "cache_size")


def _call(loader: Any, name: str, options: dict[str, Any]) -> Any:
    """Call ``loader`` with the options it takes; an option it does not know is a user error."""
    accepted = inspect.signature(loader).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        known = sorted(k for k in accepted if k != "path")
        raise ScorerError(f"scorer {name!r} has no option {', '.join(unknown)}: it takes {', '.join(known)}")
    return loader(**options)


def _drop_unset(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


_LOADERS = {  # name -> (module, the function or class that builds it)
    "pum": ("pumsearch.scorers.pum", "load_pum"),
    "prm": ("pumsearch.scorers.prm", "load_prm"),
    "orm": ("pumsearch.scorers.orm", "load_orm"),
    "verifier": ("pumsearch.scorers.verifier", "VerifierScorer"),
    "rollout": ("pumsearch.scorers.rollout", "load_rollout"),
    "testbed-prm": ("pumsearch.testbed.scorers", "TestbedPRM"),  # the testbed's exact step PRM
}


SCORER_NAMES = list(_LOADERS)


def _loader(name: str) -> Any:
    """The function (or class) that builds scorer ``name``; its module is imported, no model is loaded."""
    if name not in _LOADERS:
        raise ScorerError(f"unknown scorer {name!r}: use one of {', '.join(SCORER_NAMES)}")
    module, attribute = _LOADERS[name]
    return getattr(importlib.import_module(module), attribute)


def scorer_option_names(name: str) -> set[str]:
    """The options ``load_scorer(name, ...)`` takes, read off its loader without loading a model (so a
    command can refuse a flag before it loads anything). ``model`` is the checkpoint; ``url`` (orm)
    a served reward model; the wrapper options go to every scorer."""
    params = set(inspect.signature(_loader(name)).parameters) - {"step_delimiter", "grader", "students"}
    if "path" in params:
        params = (params - {"path"}) | {"model"}
    if name == "orm":
        params.add("url")
    return params | set(WRAPPER_OPTIONS)


def load_scorer(name: str, *, step_delimiter: str = "\n\n", **options: Any) -> BatchedScorer:
    """Build a scorer by name, wrapped in the shared batching and caching layer. ``url`` (with
    ``orm``) scores through a reward model served by SGLang (--scorer-url); ``model`` names it."""
    options = _drop_unset(options)
    wrapper = {k: options.pop(k) for k in WRAPPER_OPTIONS if k in options}
    inner: ModelScorer | AsyncModelScorer
    url = options.pop("url", None)
    if url is not None:  # --scorer-url: a reward model served by SGLang's /classify
        if name != "orm":
            raise ScorerError(f"--scorer-url works with --scorer orm, not {name!r}")
        from pumsearch.scorers.orm_http import load_orm_http

        model = options.pop("model", None)
        inner = load_orm_http(str(url), model=str(model) if model else None, step_delimiter=step_delimiter)
        return BatchedScorer(inner, **wrapper)
    loader = _loader(name)
    accepted = inspect.signature(loader).parameters
    if "step_delimiter" in accepted:
        options.setdefault("step_delimiter", step_delimiter)
    if "path" in accepted:  # the checkpoint argument of pum, prm and orm is the ``model`` option
        options = {"path": options.pop("model", None), **options}
    inner = _call(loader, name, options)
    return BatchedScorer(inner, **wrapper)


__all__ = [
    "SCORER_NAMES",
    "AsyncModelScorer",
    "BatchedScorer",
    "ModelScorer",
    "ScorerError",
    "load_scorer",
    "scorer_option_names",
]
