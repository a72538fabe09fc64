"""What a search returns, and the versioned per-problem record that runs write (docs/records.md)."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pumsearch.search.budget import Counters
from pumsearch.search.problem import Problem
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import SearchTree

RECORD_FORMAT = "pumsearch-record"
RECORD_VERSION = 1


@dataclass
class SearchResult:
    problem: Problem
    strategy: str
    tree: SearchTree
    answer: str | None = None
    chosen_node: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    correct: bool | None = None
    counters: Counters = field(default_factory=Counters)
    cut_short: bool = False
    cut_reason: str | None = None
    selection_note: str | None = None  # why the answer was not chosen by the rule asked for

    @property
    def chosen_steps(self) -> tuple[str, ...]:
        return self.tree.steps(self.chosen_node) if self.chosen_node is not None else ()

    def summary(self) -> dict[str, Any]:
        """The result part stored inside the tree file."""
        return {
            "strategy": self.strategy,
            "answer": self.answer,
            "chosen_node": self.chosen_node,
            "chosen_path": self.tree.path(self.chosen_node) if self.chosen_node is not None else [],
            "correct": self.correct,
            "cut_short": self.cut_short,
            "candidates": [c.__dict__ for c in self.candidates],
            "counters": self.counters.to_dict(),
        }


def make_record(
    result: SearchResult,
    *,
    tree_file: str | None,
    scorer: str | None,
    budget: int,
    seed: int,
    started_at: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The versioned record for one finished problem. ``extra`` adds fields (runs add pass_at_n,
    maj_at_n, run_key and, for subsampled strategies, subsample: see docs/evaluation.md)."""
    timings = {"started_at": started_at, "finished_at": time.time(), "wall_time": result.counters.wall_time}
    return _record(result.problem, status="ok", error=None, prediction=result.answer, correct=result.correct,
                   strategy=result.strategy, scorer=scorer, budget=budget, seed=seed,
                   num_candidates=len(result.candidates), cut_short=result.cut_short,
                   selection_note=result.selection_note, counters=result.counters, timings=timings,
                   tree_file=tree_file, extra=extra)


def make_failed_record(problem: Problem, error: str, *, strategy: str, scorer: str | None, budget: int,
                       seed: int, started_at: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a problem whose search failed for good; a rerun retries it."""
    finished_at = time.time()
    timings = {"started_at": started_at, "finished_at": finished_at, "wall_time": finished_at - started_at}
    return _record(problem, status="failed", error=error, prediction=None, correct=None, strategy=strategy,
                   scorer=scorer, budget=budget, seed=seed, num_candidates=0, cut_short=False, selection_note=None,
                   counters=Counters(), timings=timings, tree_file=None, extra=extra)


def _record(problem: Problem, *, status: str, error: str | None, prediction: str | None, correct: bool | None,
            strategy: str, scorer: str | None, budget: int, seed: int, num_candidates: int, cut_short: bool,
            selection_note: str | None, counters: Counters, timings: dict[str, float], tree_file: str | None,
            extra: dict[str, Any] | None) -> dict[str, Any]:
    """Every record's fields, in the order records are written (docs/records.md)."""
    record = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "problem_id": problem.id,
        "status": status,
        "error": error,
        "question": problem.question,
        "prediction": prediction,
        "reference": problem.answer,
        "correct": correct,
        "strategy": strategy,
        "scorer": scorer,
        "budget": budget,
        "seed": seed,
        "num_candidates": num_candidates,
        "cut_short": cut_short,
        "selection_note": selection_note,
        "counters": counters.to_dict(),
        "timings": timings,
        "tree_file": tree_file,
        "metadata": problem.metadata,
    }
    clash = set(extra or {}) & set(record)
    if clash:
        raise ValueError(f"extra record fields would overwrite standard ones: {', '.join(sorted(clash))}")
    return {**record, **(extra or {})}


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def tree_file_name(problem_id: str) -> str:
    """A file name from a problem id (ids like 'test/algebra/1.json' or 'gsm8k:12')."""
    safe = _UNSAFE.sub("_", problem_id).strip("._") or "problem"
    digest = hashlib.sha1(problem_id.encode()).hexdigest()[:8]  # ids that sanitise alike stay apart
    return f"{safe[:100]}-{digest}.tree.json"
