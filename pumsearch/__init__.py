"""pumsearch: inference-time search for LLM reasoning with pluggable reward models.

The public names (listed in docs/api.md). Importing pumsearch does not import torch.
"""

from pumsearch.api import asearch, make_strategy, resolve_scorer, solve
from pumsearch.backends import load_generator
from pumsearch.datasets import load_problems, register_dataset_prefix
from pumsearch.scorers import BatchedScorer, ModelScorer, ScorerError, load_scorer
from pumsearch.search.budget import Budget, BudgetExhausted, Counters
from pumsearch.search.config import SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.engine import Engine
from pumsearch.search.grading import Grader, extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    Generator,
    SamplingParams,
    Score,
    ScoreItem,
    Scorer,
)
from pumsearch.search.result import SearchResult
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import ROOT, SearchTree, load_tree
from pumsearch.strategies import (
    DVTS,
    MCTS,
    BeamSearch,
    BestOfN,
    Strategy,
    StrategyError,
    StrategySettings,
    get_strategy,
    search_config,
)

# isort: split
# The built-in plug-in, after the core: it registers its data sets, models and scorer (docs/architecture.md).
from pumsearch import testbed  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "DVTS",
    "MCTS",
    "ROOT",
    "BatchedScorer",
    "BeamSearch",
    "BestOfN",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "Completion",
    "Counters",
    "Engine",
    "GenerationOutput",
    "GenerationRequest",
    "Generator",
    "Grader",
    "ModelScorer",
    "Problem",
    "SamplingParams",
    "Score",
    "ScoreItem",
    "Scorer",
    "ScorerError",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "SearchTree",
    "Strategy",
    "StrategyError",
    "StrategySettings",
    "__version__",
    "asearch",
    "extract_answer",
    "get_strategy",
    "load_generator",
    "load_problems",
    "load_scorer",
    "load_tree",
    "make_strategy",
    "register_dataset_prefix",
    "resolve_scorer",
    "search_config",
    "solve",
]
