"""Shared pieces for the evaluation tests: small datasets, a second strategy that is rerun per
budget, a scripted scorer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pumsearch.search.context import SearchContext
from pumsearch.search.grading import extract_answer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy


def write_gsm8k_style(path: Path, n: int, *, answers: Sequence[str] = ("1", "2", "3")) -> Path:
    """GSM8K-shaped rows (question, answer ending in '#### N'), no ids: ids become <stem>:<line>."""
    rows = [
        {"question": f"What is {i} + 1 ?", "answer": f"Add them.\n#### {answers[i % len(answers)]}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class StepThenFinish(Strategy):
    """A second, non-subsampled strategy: N first steps, then each finished to the end once.
    Its budget is 2N expansions, so a sweep reruns it per N."""

    name: ClassVar[str] = "step-then-finish"
    budget_unit: ClassVar[str] = "expansions"

    def budget_limit(self) -> int:
        return 2 * self.config.budget

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        (firsts,) = await ctx.expand([ROOT], self.config.budget, until="step")
        open_nodes = [n for n in firsts if not ctx.tree[n]["terminal"]]
        leaves = [n for n in firsts if ctx.tree[n]["terminal"]]
        if open_nodes:
            for finished in await ctx.expand(open_nodes, 1, until="end"):
                leaves.extend(finished)
        if ctx.has_scorer:
            await ctx.score(leaves)
        return await ctx.finish(ctx.candidates(leaves))


STEP_THEN_FINISH = "tests.helpers_runs:StepThenFinish"


class AnswerTableScorer:
    """A scripted ModelScorer: the value of a prefix is looked up from its stated answer."""

    identity = "scripted-table"
    value_kind = "unbounded"
    needs_reference = False

    def __init__(self, table: dict[str, float], default: float = 0.0) -> None:
        self.table = table
        self.default = default

    def count_tokens(self, item: ScoreItem) -> int:
        return sum(len(s.split()) for s in item.steps)

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        out = []
        for item in items:
            answer = extract_answer("\n\n".join(item.steps))
            out.append(Score(self.table.get(answer or "", self.default)))
        return out

    def close(self) -> None:
        pass
