"""The settings of one search: those every strategy shares, which strategy runs, and that strategy's
own settings (``strategy_options``, typed and checked by the strategy's ``Settings``; see
pumsearch.strategies.base). Each field's ``help`` is its command-line help: every field is a flag
of ``solve``, ``run`` and ``sweep`` and a key of a TOML ``--config`` file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Aggregate = Literal["last", "min", "prod", "mean"]
Select = Literal["best", "majority", "weighted"]

DEFAULT_SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)


@dataclass
class SearchConfig:
    """Settings shared by every strategy, the strategy's name and its own options."""

    strategy: str = field(default="bon", metadata={"help": "A built-in strategy or package.module:ClassName."})
    budget: int = field(default=8, metadata={"help": "N: the budget, in the strategy's unit (docs/strategies.md)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_tokens: int = field(default=512, metadata={"help": "Token cap per solution."})
    max_step_tokens: int = field(default=256, metadata={"help": "Token cap per step (tree search)."})
    step_delimiter: str = field(default="\n\n", metadata={"help": "String that ends a step."})
    stop_at_boxed: bool = field(default=True, metadata={
        "help": "A step stating a \\boxed{} answer ends the solution (tree search)."})
    seed: int = field(default=0, metadata={"help": "Run seed."})
    aggregate: Aggregate = field(default="last", metadata={
        "help": "Step scores to solution score: last, min, prod, mean."})
    select: Select | None = field(default=None, metadata={
        "help": "best, majority or weighted (default: best with a scorer, majority without)."})
    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata={
        "help": "System prompt of the policy's chat template ('' for none)."})
    max_depth: int = field(default=40, metadata={"help": "Depth cap in steps (tree search)."})
    time_limit: float | None = field(default=None, metadata={
        "help": "Seconds per problem; then the best so far, marked cut short."})
    # the strategy's own settings, KEY -> value (--strategy-option KEY=VALUE); unset ones take the
    # defaults of the strategy's Settings
    strategy_options: dict[str, Any] = field(default_factory=dict)

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
