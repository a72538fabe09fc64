"""Scorers behind one batched, cached interface (see scorers/base.py)."""

from __future__ import annotations

from pumsearch.scorers.base import BatchedScorer, ModelScorer, ScorerError

SCORER_NAMES = ["verifier"]


def load_scorer(name: str, *, step_delimiter: str = "\n\n", **options: object) -> BatchedScorer:
    """Build a scorer by name, wrapped in the shared batching and caching layer. ``url`` (with
    ``orm``) scores through a reward model served by SGLang (--scorer-url); ``model`` names it."""
    url = options.pop("url", None)
    if url is not None:
        if name != "orm":
            raise ScorerError(f"--scorer-url works with --scorer orm, not {name!r}")
        from pumsearch.scorers.orm_http import load_orm_http

        model = options.pop("model", None)
        return BatchedScorer(load_orm_http(str(url), model=str(model) if model else None,
                                           step_delimiter=step_delimiter))
    if name == "verifier":
        from pumsearch.scorers.verifier import VerifierScorer

        return BatchedScorer(VerifierScorer(step_delimiter=step_delimiter))
    raise ScorerError(f"unknown scorer {name!r}: use one of {', '.join(SCORER_NAMES)}")


__all__ = ["SCORER_NAMES", "BatchedScorer", "ModelScorer", "ScorerError", "load_scorer"]
