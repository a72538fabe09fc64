"""A CPU research testbed: synthetic multi-step arithmetic, small trained policies, exact scorers.

Importing it registers what it brings (``pumsearch`` does so on import): the ``testbed:`` data sets
(``--dataset testbed:standard``), the ``testbed:`` models (``--model testbed:weak``, each scored by
``DEFAULT_SCORER``, the exact PRM, when no scorer is named) and the ``testbed-prm`` scorer. Heavy modules
(torch, transformers) are imported only by ``train`` and the policy loaders.
"""

from __future__ import annotations

from pathlib import Path

from pumsearch.datasets import register_dataset_prefix
from pumsearch.models import register_model_prefix
from pumsearch.registry import register_scorer
from pumsearch.search.problem import Problem
from pumsearch.testbed.tasks import NAMED_CONFIGS, Chain, TaskSpec, parse_spec, testbed_problems

POLICY_DIR = Path(__file__).parent / "policies"
PUM_DIR = Path(__file__).parent / "pum"  # the shipped testbed PUM (see its DATA_CARD.md)
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


def is_testbed_policy(model: str | None) -> bool:
    """``testbed:weak`` / ``testbed:strong``, or the path of a shipped policy directory."""
    if not model:
        return False
    if model.startswith(MODEL_PREFIX):
        return model[len(MODEL_PREFIX) :] in POLICY_NAMES
    try:
        resolved = Path(model).resolve()
    except OSError:
        return False
    return any(resolved == (POLICY_DIR / name).resolve() for name in POLICY_NAMES)


# The scorer a shipped testbed policy gets when none is named: the best measured of the scorers that
# ship and need no reference answer (docs/testbed.md, "Default scorer", has the evidence). A
# (scorer, scorer model) pair: ("pum", str(PUM_DIR)) would name the shipped testbed PUM.
DEFAULT_SCORER: tuple[str, str | None] = ("testbed-prm", None)


def default_scorer_for(model: str | None) -> tuple[str, str | None] | None:
    """``DEFAULT_SCORER`` when ``model`` is a shipped testbed policy (``testbed:weak``, ``testbed:strong``
    or their directories), i.e. ``--scorer NAME [--scorer-model DIR]``; None for any other model
    (their default stays: no scorer) or when the named checkpoint is not installed."""
    scorer, checkpoint = DEFAULT_SCORER
    if not is_testbed_policy(model) or (checkpoint is not None and not Path(checkpoint).exists()):
        return None
    return scorer, checkpoint


def chain_problems(spec: str) -> list[Problem]:
    """``testbed:<config>``: synthetic arithmetic chains (docs/testbed.md), generated on the fly."""
    return testbed_problems(spec or "standard")


register_dataset_prefix("testbed", chain_problems,
                        help="synthetic arithmetic chains: testbed:standard, testbed:ops=3-4,n=200,...")
register_model_prefix("testbed", lambda name: str(policy_path(name)), default_scorer=default_scorer_for,
                      help="a shipped testbed policy: testbed:weak or testbed:strong")
register_scorer("testbed-prm", "pumsearch.testbed.scorers:TestbedPRM",
                help="the testbed's exact step-correctness PRM (testbed questions only, no model)")


__all__ = [
    "DEFAULT_SCORER",
    "MODEL_PREFIX",
    "NAMED_CONFIGS",
    "POLICY_NAMES",
    "PUM_DIR",
    "Chain",
    "TaskSpec",
    "default_scorer_for",
    "is_testbed_policy",
    "parse_spec",
    "policy_path",
    "resolve_model_name",
    "testbed_problems",
]
