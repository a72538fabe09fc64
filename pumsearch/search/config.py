"""The resolved settings of one search (every CLI sampling and strategy flag lives here)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Aggregate = Literal["last", "min", "prod", "mean"]
Select = Literal["best", "majority", "weighted"]

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)


@dataclass
class SearchConfig:
    """Settings shared by every strategy; strategy-specific ones are ignored where unused."""

    strategy: str = "bon"
    budget: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512  # per solution
    max_step_tokens: int = 256
    step_delimiter: str = "\n\n"
    stop_at_boxed: bool = True  # a step stating a \boxed{} answer ends the solution (tree search)
    seed: int = 0
    aggregate: Aggregate = "last"
    select: Select | None = None  # None: best with a scorer, majority without
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # tree search
    beam_width: int = 4
    max_depth: int = 40
    lookahead: int = 0
    filter_duplicates: bool = False
    c_puct: float = 1.0
    expansions: int = 2
    mcts_steps_per_solution: int = 8
    terminal_reward: Literal["scorer", "verifier"] = "scorer"
    mcts_parallel: int = 4
    time_limit: float | None = None  # seconds per problem
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1 (got {self.budget})")
        if self.max_tokens < 1:
            raise ValueError(f"max-tokens must be at least 1 (got {self.max_tokens})")
        if self.max_step_tokens < 1:
            raise ValueError(f"max-step-tokens must be at least 1 (got {self.max_step_tokens})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1] (got {self.top_p})")
        if self.aggregate not in ("last", "min", "prod", "mean"):
            raise ValueError(f"unknown aggregate {self.aggregate!r}: use last, min, prod or mean")
        if self.select not in (None, "best", "majority", "weighted"):
            raise ValueError(f"unknown select {self.select!r}: use best, majority or weighted")
        if not self.step_delimiter:
            raise ValueError("the step delimiter must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown search settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
