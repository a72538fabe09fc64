"""A CPU research testbed: synthetic multi-step arithmetic, small trained policies, exact scorers.

Heavy modules (torch, transformers) are imported only by ``train`` and the policy loaders.
"""

from __future__ import annotations

from pathlib import Path

from pumsearch.testbed.tasks import NAMED_CONFIGS, Chain, TaskSpec, parse_spec, testbed_problems

POLICY_DIR = Path(__file__).parent / "policies"
POLICY_NAMES = ("weak", "strong")
MODEL_PREFIX = "testbed:"


def policy_path(name: str) -> Path:
    """The shipped policy called ``name`` (``weak`` or ``strong``)."""
    if name not in POLICY_NAMES:
        raise ValueError(f"unknown testbed policy {name!r}: use testbed:weak or testbed:strong")
    return POLICY_DIR / name


def resolve_model_name(model: str) -> str:
    """``testbed:weak`` -> the shipped checkpoint's path; any other name unchanged."""
    if model.startswith(MODEL_PREFIX):
        return str(policy_path(model[len(MODEL_PREFIX) :]))
    return model


__all__ = [
    "MODEL_PREFIX",
    "NAMED_CONFIGS",
    "POLICY_NAMES",
    "Chain",
    "TaskSpec",
    "parse_spec",
    "policy_path",
    "resolve_model_name",
    "testbed_problems",
]
