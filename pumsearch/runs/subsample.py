"""Curves from one large run: read a smaller budget off the tree of a run at the largest N.

Best-of-N at N = 4..256 needs no reruns: the first n of N independent solutions are a sample of
n solutions, so one run at the largest N gives every smaller budget (search-and-learn does the
same). DVTS is subsampled by whole subtrees: N/M independent subtrees of width M, so budget n
keeps the first n/M subtrees. A strategy opts in by declaring its ``subsample_unit``, what one
group costs (``budget_per_group``) and which nodes make each group (``subsample_groups``); every
such strategy fits one generic shape, recorded per problem:

    {"unit": "solutions" | "subtrees", "budget_per_group": 1 | M, "value_kind": ..., "keep": F,
     "groups": [{"tokens": T, "candidates": [{"answer", "score", "correct"}, ...]}, ...],
     "stopped_early": bool}

A group is what one unit of subsampling keeps (a solution, or a subtree with every node in it);
its tokens are all tokens generated inside it, pruned branches included. Budget n keeps the
first n / budget_per_group groups, in generation order; the answer is then picked by best,
majority or weighted selection over the kept candidates exactly as a run at n would (with the
run's vote filter, ``keep``, where it set one: Best-of-N's --keep). A run that stopped by its own
rule before its budget (``stopped_early``: adaptive Best-of-N, whose rule does not look at the
budget) is also what any budget above the groups it drew gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pumsearch.search.selection import Candidate, select_candidate
from pumsearch.search.tree import SearchTree

SELECTIONS = ("best", "majority", "weighted")


def group_rows(tree: SearchTree, candidates: Sequence[Candidate], groups: Sequence[Sequence[int]]
               ) -> list[dict[str, Any]]:
    """The record's groups: for each group of nodes (a strategy's ``subsample_groups``), the tokens
    generated inside it and the candidates that end in it."""
    rows = []
    for group in groups:
        members = set(group)
        rows.append({
            "tokens": sum(tree[n]["num_tokens"] for n in members),
            "candidates": [{"answer": c.answer, "score": c.score, "correct": c.correct,
                            "vote_class": c.vote_class, "parsed": c.parsed}
                           for c in candidates if c.node in members],
        })
    return rows


@dataclass
class Subsampled:
    """What a run at a smaller budget would have given, read off the recorded groups."""

    budget: int
    select: str
    prediction: str | None
    correct: bool | None
    pass_at_n: bool | None
    maj_at_n: bool | None
    generated_tokens: int


def kept_groups(block: dict[str, Any], budget: int) -> list[dict[str, Any]] | None:
    """The groups a run at ``budget`` keeps, or None when the recorded run cannot give it."""
    per_group = int(block.get("budget_per_group", 1))
    groups = block["groups"]
    if budget < per_group or budget % per_group:
        return None
    if budget // per_group > len(groups):  # a run that stopped by itself is also the run at any larger budget
        return groups if block.get("stopped_early") else None
    return groups[: budget // per_group]


def has_scores(block: dict[str, Any]) -> bool:
    return any(c["score"] is not None for g in block["groups"] for c in g["candidates"])


def subsample(block: dict[str, Any], budget: int, select: str) -> Subsampled | None:
    groups = kept_groups(block, budget)
    if groups is None:
        return None
    cands = [
        Candidate(i, c["answer"], c["score"], c["correct"], c.get("vote_class"), c.get("parsed"))
        for i, c in enumerate(c for g in groups for c in g["candidates"])
    ]
    kind = block.get("value_kind", "probability")
    chosen = select_candidate(cands, select, kind, float(block.get("keep", 1.0)))
    majority = select_candidate(cands, "majority", kind)
    graded = any(c.correct is not None for c in cands)
    return Subsampled(
        budget=budget,
        select=select,
        prediction=chosen.answer if chosen else None,
        correct=bool(chosen.correct) if chosen and graded else None,
        pass_at_n=any(bool(c.correct) for c in cands) if graded else None,
        maj_at_n=bool(majority.correct) if majority and graded else None,
        generated_tokens=sum(int(g["tokens"]) for g in groups),
    )


def selections_for(block: dict[str, Any]) -> list[str]:
    """Best and weighted need scores; majority always works."""
    return list(SELECTIONS) if has_scores(block) else ["majority"]
