"""Budgets and the fixed set of compute counters every result carries (docs/records.md)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields


class BudgetExhausted(Exception):
    """Raised by the SearchContext when an expansion would exceed the budget, token cap or time limit."""


_PEAK_FIELDS = frozenset({"backend_peak_in_flight"})  # combined by max when counters are added up


@dataclass
class Counters:
    """Compute spent on one problem (or a whole run, summed). 0 where a backend cannot know, except
    ``cached_prompt_tokens``: None (unknown) once any backend call could not say, so a curve of
    compute never counts an unreported cache as no cache."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = 0
    backend_calls: int = 0
    backend_batch_items: int = 0  # sum of batch sizes over backend_calls (mean_batch_size derives from it)
    scorer_calls: int = 0
    scorer_tokens: int = 0
    scorer_cache_hits: int = 0
    backend_retries: int = 0
    backend_peak_in_flight: int = 0  # most requests a server backend had in flight at once (a peak)
    saved_tokens: int = 0  # an early stop's estimate of the tokens it did not spend (adaptive Best-of-N)
    wall_time: float = 0.0
    backend_time: float = 0.0
    scorer_time: float = 0.0

    @property
    def mean_batch_size(self) -> float:
        return self.backend_batch_items / self.backend_calls if self.backend_calls else 0.0

    @property
    def cached_prompt_share(self) -> float | None:
        if self.cached_prompt_tokens is None:
            return None
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def add(self, other: Counters) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in _PEAK_FIELDS:
                setattr(self, f.name, max(mine, theirs))
            else:
                setattr(self, f.name, add_known(mine, theirs))

    def to_dict(self) -> dict[str, float | None]:
        out = asdict(self)
        out["mean_batch_size"] = round(self.mean_batch_size, 3)
        share = self.cached_prompt_share
        out["cached_prompt_share"] = None if share is None else round(share, 4)
        for key in ("wall_time", "backend_time", "scorer_time"):
            out[key] = round(out[key], 4)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Counters:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def add_known(total: int | float | None, part: int | float | None) -> int | float | None:
    """A sum that is unknown (None) once one of its parts is."""
    return None if total is None or part is None else total + part


@dataclass
class Budget:
    """How much a search may spend, in the strategy's own unit (``Strategy.budget_unit``).

    ``limit`` counts units (solutions for bon, step expansions for tree search); the token cap
    and time limit are optional. The context calls ``charge`` before each expansion.
    """

    limit: int
    unit: str = "expansions"
    max_generated_tokens: int | None = None
    time_limit: float | None = None
    used: int = 0
    started_at: float = 0.0
    cut_short: bool = False

    def start(self) -> None:
        self.started_at = time.monotonic()

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def check_time(self) -> None:
        if self.time_limit is not None and self.elapsed() >= self.time_limit:
            self.cut_short = True
            raise BudgetExhausted(f"time limit of {self.time_limit:g}s reached")

    def charge(self, units: int, generated_tokens: int = 0) -> None:
        self.check_time()
        if self.used + units > self.limit:
            raise BudgetExhausted(f"budget of {self.limit} {self.unit} spent ({self.used} used)")
        if self.max_generated_tokens is not None and generated_tokens >= self.max_generated_tokens:
            raise BudgetExhausted(f"token cap of {self.max_generated_tokens} reached")
        self.used += units
