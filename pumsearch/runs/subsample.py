"""Curves from one large run: read a smaller budget off the tree of a run at the largest N.

Best-of-N at N = 4..256 needs no reruns: the first n of N independent solutions are a sample of
n solutions, so one run at the largest N gives every smaller budget (search-and-learn does the
same). DVTS is subsampled by whole subtrees: N/M independent subtrees of width M, so budget n
keeps the first n/M subtrees. Both fit one generic shape, recorded per problem:

    {"unit": "solutions" | "subtrees", "budget_per_group": 1 | M, "value_kind": ...,
     "groups": [{"tokens": T, "candidates": [{"answer", "score", "correct"}, ...]}, ...]}

A group is what one unit of subsampling keeps (a solution, or a subtree with every node in it);
its tokens are all tokens generated inside it, pruned branches included. Budget n keeps the
first n / budget_per_group groups, in generation order; the answer is then picked by best,
majority or weighted selection over the kept candidates exactly as a run at n would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from pumsearch.search.selection import Candidate, select_candidate
from pumsearch.search.tree import ROOT, SearchTree

SUBSAMPLED_BY_DEFAULT = {"bon": "solutions", "dvts": "subtrees"}
SELECTIONS = ("best", "majority", "weighted")


def subsample_unit(strategy_cls: type, name: str) -> str | None:
    """How a strategy's runs subsample: its ``subsample_unit`` class attribute, else by name."""
    return getattr(strategy_cls, "subsample_unit", None) or SUBSAMPLED_BY_DEFAULT.get(name)


def groups_from_tree(tree: SearchTree, candidates: Sequence[Candidate], unit: str) -> list[dict[str, Any]]:
    """The record's groups: one per solution, or one per subtree under the root, in id order."""

    def cand_row(c: Candidate) -> dict[str, Any]:
        return {"answer": c.answer, "score": c.score, "correct": c.correct, "vote_class": c.vote_class,
                "parsed": c.parsed}

    if unit == "solutions":
        return [
            {"tokens": sum(tree[n]["num_tokens"] for n in tree.path(c.node)), "candidates": [cand_row(c)]}
            for c in candidates
        ]
    if unit == "subtrees":
        # DVTS gives the root M children per subtree and tags each with ``subtree``: those M are one
        # group. A root child without the tag is a subtree of its own.
        tops: dict[Any, list[int]] = {}
        for top in tree.children(ROOT):
            tag = tree[top].get("subtree")
            tops.setdefault(("tag", tag) if tag is not None else ("node", top), []).append(top)
        groups = []
        for roots in tops.values():
            members = set(roots).union(*(nx.descendants(tree.graph, top) for top in roots))
            groups.append(
                {
                    "tokens": sum(tree[n]["num_tokens"] for n in members),
                    "candidates": [cand_row(c) for c in candidates if c.node in members],
                }
            )
        return groups
    raise ValueError(f"unknown subsample unit {unit!r}: use solutions or subtrees")


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
    if budget < per_group or budget % per_group or budget // per_group > len(groups):
        return None
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
    chosen = select_candidate(cands, select, kind)
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
