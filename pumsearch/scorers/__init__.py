"""Scorers behind one batched, cached interface (see scorers/base.py and docs/scorers.md), registered
by name in ``pumsearch.registry.SCORERS``.

``load_scorer(name, **options)`` builds any registered scorer. Common options: ``model`` (checkpoint
path; for ``rollout`` comma-separated student models), ``base`` (PUM base model override),
``device``, ``dtype``, ``prm_format`` (see ``pumsearch.scorers.prm.PRM_FORMATS``),
``system_prompt``. PUM: ``activation``, ``read_offset``, ``merge``. Rollout: ``students``
(Generator objects), ``k``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``token_cap``. Wrapper:
``batch_tokens``, ``max_batch_items``, ``cache_size``. Confidence: ``measure``, ``window``, ``k``,
``bottom``. Model imports happen only when a scorer is
built. To add a scorer, see docs/architecture.md.
"""

from __future__ import annotations

import inspect
from typing import Any

from pumsearch.registry import SCORERS, ScorerEntry, register_scorer
from pumsearch.scorers.base import AsyncModelScorer, BatchedScorer, ModelScorer, ScorerError

WRAPPER_OPTIONS = ("batch_tokens", "max_batch_items", "cache_size")
# load_scorer fills these itself; they are no user options
_SUPPLIED = {"step_delimiter", "grader", "students"}

register_scorer("pum", "pumsearch.scorers.pum:load_pum",
                help="Prefix Utility Model checkpoint (zhiqix/PUM layout): one unbounded value per prefix")
register_scorer("prm", "pumsearch.scorers.prm:load_prm",
                help="step-level process reward model (--prm-format): a probability per step")
register_scorer("orm", "pumsearch.scorers.orm:load_orm", served="pumsearch.scorers.orm_http:load_orm_http",
                help="outcome reward model (sequence classifier), local or served by SGLang (--scorer-url)")
register_scorer("verifier", "pumsearch.scorers.verifier:VerifierScorer",
                help="ground truth: 1 when the prefix's answer matches the reference, else 0")
register_scorer("rollout", "pumsearch.scorers.rollout:load_rollout",
                help="Monte-Carlo prefix gain from student rollouts (expensive; needs reference answers)")
register_scorer("confidence", "pumsearch.scorers.confidence:load_confidence",
                help="the policy's own token confidence (DeepConf), no reward model: --scorer-option measure=...")


def scorer_names() -> list[str]:
    """Every registered scorer's name, in registration order."""
    return SCORERS.names()


def scorer_entry(name: str) -> ScorerEntry:
    return SCORERS.get(name, error=ScorerError)


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


def scorer_option_names(name: str) -> set[str]:
    """The options ``load_scorer(name, ...)`` takes, read off its loader without loading a model (so a
    command can refuse a flag before it loads anything). ``model`` is the checkpoint; ``url`` a served
    model (scorers registered with a ``served`` loader); the wrapper options go to every scorer."""
    entry = scorer_entry(name)
    params = set(inspect.signature(entry.resolve()).parameters) - _SUPPLIED
    if "path" in params:
        params = (params - {"path"}) | {"model"}
    if entry.served is not None:
        params.add("url")
    return params | set(WRAPPER_OPTIONS)


def load_scorer(name: str, *, step_delimiter: str = "\n\n", **options: Any) -> BatchedScorer:
    """Build a scorer by name, wrapped in the shared batching and caching layer. ``url`` scores
    through a model behind a server (--scorer-url: ``orm`` over SGLang's /classify); ``model`` names it."""
    options = _drop_unset(options)
    wrapper = {k: options.pop(k) for k in WRAPPER_OPTIONS if k in options}
    inner: ModelScorer | AsyncModelScorer
    url = options.pop("url", None)
    if url is not None:  # --scorer-url: a reward model behind a server
        served = [e.name for e in SCORERS.entries(hidden=True) if e.served is not None]
        if name not in served:
            raise ScorerError(f"--scorer-url works with --scorer {' or '.join(served)}, not {name!r}")
        model = options.pop("model", None)
        load_served = scorer_entry(name).resolve_served()
        inner = load_served(str(url), model=str(model) if model else None, step_delimiter=step_delimiter)
        return BatchedScorer(inner, **wrapper)
    loader = scorer_entry(name).resolve()
    accepted = inspect.signature(loader).parameters
    if "step_delimiter" in accepted:
        options.setdefault("step_delimiter", step_delimiter)
    if "path" in accepted:  # the checkpoint argument of pum, prm and orm is the ``model`` option
        options = {"path": options.pop("model", None), **options}
    inner = _call(loader, name, options)
    return BatchedScorer(inner, **wrapper)


__all__ = [
    "AsyncModelScorer",
    "BatchedScorer",
    "ModelScorer",
    "ScorerError",
    "load_scorer",
    "register_scorer",
    "scorer_names",
    "scorer_option_names",
]
