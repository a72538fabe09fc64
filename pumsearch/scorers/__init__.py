"""Scorers behind one batched, cached interface (see scorers/base.py)."""

from __future__ import annotations

from pumsearch.scorers.base import BatchedScorer, ModelScorer, ScorerError

SCORER_NAMES = ["verifier", "testbed-prm"]


def load_scorer(name: str, *, step_delimiter: str = "\n\n", **options: object) -> BatchedScorer:
    """Build a scorer by name, wrapped in the shared batching and caching layer."""
    if name == "verifier":
        from pumsearch.scorers.verifier import VerifierScorer

        return BatchedScorer(VerifierScorer(step_delimiter=step_delimiter))
    if name == "testbed-prm":  # the exact step-correctness PRM of the arithmetic testbed
        from pumsearch.testbed.scorers import TestbedPRM

        return BatchedScorer(TestbedPRM())
    raise ScorerError(f"unknown scorer {name!r}: use one of {', '.join(SCORER_NAMES)}")


__all__ = ["SCORER_NAMES", "BatchedScorer", "ModelScorer", "ScorerError", "load_scorer"]
