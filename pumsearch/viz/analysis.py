"""Analyses of recorded search trees: shape, divergence of correct and wrong solutions, wasted
tokens, scorer ranking quality, and GraphML export. Documented in docs/viewer.md.

Ranking metrics (one problem; the conventions are ours, since the PUM paper's exact definitions
were not available): candidates are sorted by score, highest first. A candidate's *rank
percentile* is ``position / n`` (the share of candidates ranked at or above it: 1/n for the top
one, 1.0 for the last). Ties count against the scorer: the worst-ranked correct candidate takes
the last position of its tie group, the best-ranked wrong one the first position of its group, so
a correct and a wrong candidate with equal scores are never "separated". A perfect scorer puts the
worst-ranked correct candidate at ``c / n`` and the best-ranked wrong one at ``(c + 1) / n`` for
``c`` correct candidates. *Pairwise accuracy* is the share of (correct, wrong) pairs in which the
correct candidate scores higher, a tie counting one half (the ROC AUC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pumsearch.search.selection import aggregate_steps
from pumsearch.search.tree import ROOT, SearchTree

# -- tree shape and where compute went ------------------------------------------------------------


@dataclass
class Divergence:
    """A wrong solution and the deepest node it shares with any correct solution."""

    wrong_node: int
    shared_node: int  # ROOT when the wrong solution shares no step with a correct one
    shared_depth: int  # steps in common with the nearest correct solution
    wrong_depth: int  # steps of the wrong solution


def subtree_outcomes(tree: SearchTree) -> dict[int, tuple[int, int]]:
    """Per node: (correct, wrong) finished solutions at or below it. One post-order pass."""
    counts: dict[int, tuple[int, int]] = {}
    for node in _post_order(tree):
        attrs = tree[node]
        right = int(attrs["terminal"] and attrs["correct"] is True)
        wrong = int(attrs["terminal"] and attrs["correct"] is False)
        for child in tree.graph.successors(node):
            c_right, c_wrong = counts[child]
            right, wrong = right + c_right, wrong + c_wrong
        counts[node] = (right, wrong)
    return counts


def _post_order(tree: SearchTree) -> list[int]:
    order: list[int] = []
    stack = [(ROOT, False)]
    while stack:  # iterative: trees can be deeper than Python's recursion limit
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in tree.graph.successors(node))
    return order


def divergences(tree: SearchTree, outcomes: dict[int, tuple[int, int]] | None = None) -> list[Divergence]:
    """For each wrong solution, where it leaves the nearest correct one: its deepest ancestor
    whose subtree holds a correct solution. Empty when the tree has no graded correct solution."""
    outcomes = outcomes if outcomes is not None else subtree_outcomes(tree)
    if outcomes[ROOT][0] == 0:
        return []
    found = []
    for node in sorted(tree.terminals()):
        if tree[node]["correct"] is not False:
            continue
        shared = node
        while outcomes[shared][0] == 0:
            shared = tree.parent(shared)  # reaches ROOT at worst, which holds a correct one
        found.append(Divergence(node, shared, tree[shared]["depth"], tree[node]["depth"]))
    return found


def fork_nodes(tree: SearchTree, outcomes: dict[int, tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """Nodes where correct and wrong solutions part: one child leads to a correct solution and
    another only to wrong ones. Sorted deepest first: the step after the fork decided the outcome."""
    outcomes = outcomes if outcomes is not None else subtree_outcomes(tree)
    forks = []
    for node in tree.graph.nodes:
        right, wrong = outcomes[node]
        if not (right and wrong):
            continue
        kids = [outcomes[c] for c in tree.graph.successors(node)]
        if any(r for r, _ in kids) and any(w and not r for r, w in kids):
            forks.append({"node": node, "depth": tree[node]["depth"],
                          "correct_below": right, "wrong_below": wrong})
    forks.sort(key=lambda f: (-f["depth"], f["node"]))
    return forks


def tree_stats(tree: SearchTree, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Shape, outcomes and token spending of one tree (the root, the empty prefix, is not counted
    as a step). Tokens on *abandoned* branches are those of nodes with no finished solution at or
    below them: compute that produced nothing the search could choose."""
    graph = tree.graph
    steps = [n for n in graph.nodes if n != ROOT]
    depths = Counter(tree[n]["depth"] for n in steps)
    leaf_depths = Counter(tree[n]["depth"] for n in tree.leaves())
    branching = Counter(graph.out_degree(n) for n in graph.nodes if graph.out_degree(n) > 0)
    outcomes = subtree_outcomes(tree)
    finished = _finished_below(tree)
    total_tokens = sum(tree[n]["num_tokens"] for n in steps)
    abandoned = [n for n in steps if not finished[n]]
    chosen_path = list(result.get("chosen_path") or []) if result else []
    chosen_tokens = sum(tree[n]["num_tokens"] for n in chosen_path if n in graph)
    divs = divergences(tree, outcomes)
    terminals = tree.terminals()
    return {
        "problem_id": tree.problem.id,
        "nodes": len(steps),
        "leaves": len(tree.leaves()),
        "solutions": len(terminals),
        "correct_solutions": outcomes[ROOT][0],
        "wrong_solutions": outcomes[ROOT][1],
        "max_depth": max(depths, default=0),
        "depth_distribution": _sorted_counts(depths),
        "leaf_depth_distribution": _sorted_counts(leaf_depths),
        "branching_distribution": _sorted_counts(branching),
        "mean_branching": _mean_of_counts(branching),
        "tokens_total": total_tokens,
        "tokens_chosen_path": chosen_tokens,
        "tokens_abandoned": sum(tree[n]["num_tokens"] for n in abandoned),
        "abandoned_nodes": len(abandoned),
        "divergence_depths": _sorted_counts(Counter(d.shared_depth for d in divs)),
        "mean_divergence_depth": (sum(d.shared_depth for d in divs) / len(divs)) if divs else None,
        "divergences": [asdict(d) for d in divs],
        "forks": fork_nodes(tree, outcomes),
    }


def _finished_below(tree: SearchTree) -> dict[int, bool]:
    finished: dict[int, bool] = {}
    for node in _post_order(tree):
        finished[node] = bool(tree[node]["terminal"]) or any(finished[c] for c in tree.graph.successors(node))
    return finished


def _sorted_counts(counts: Counter[int]) -> dict[int, int]:
    return {k: counts[k] for k in sorted(counts)}


def _mean_of_counts(counts: Counter[int]) -> float | None:
    total = sum(counts.values())
    return sum(k * v for k, v in counts.items()) / total if total else None


def combine_stats(per_tree: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sums and merged distributions over several trees."""
    summed = {key: sum(s[key] for s in per_tree) for key in (
        "nodes", "leaves", "solutions", "correct_solutions", "wrong_solutions",
        "tokens_total", "tokens_chosen_path", "tokens_abandoned", "abandoned_nodes")}
    merged: dict[str, Any] = {"trees": len(per_tree), **summed}
    distributions = (
        "depth_distribution", "leaf_depth_distribution", "branching_distribution", "divergence_depths")
    for key in distributions:
        total: Counter[int] = Counter()
        for s in per_tree:
            total.update(s[key])
        merged[key] = _sorted_counts(total)
    merged["mean_branching"] = _mean_of_counts(Counter(merged["branching_distribution"]))
    divs = [d["shared_depth"] for s in per_tree for d in s["divergences"]]
    merged["mean_divergence_depth"] = sum(divs) / len(divs) if divs else None
    spent = summed["tokens_total"]
    merged["abandoned_token_share"] = summed["tokens_abandoned"] / spent if spent else 0.0
    return merged


# -- scorer ranking quality -----------------------------------------------------------------------


@dataclass
class RankingQuality:
    """Ranking metrics of one problem's candidates under one scorer (None where undefined)."""

    problem_id: str
    candidates: int  # candidates with both a score and a known outcome
    correct: int
    skipped: int  # candidates without a score under this scorer, or ungraded
    worst_correct_percentile: float | None
    best_wrong_percentile: float | None
    pairwise_accuracy: float | None


def tie_positions(scores: Sequence[float]) -> list[tuple[int, int]]:
    """Per score, the first and last 1-based positions of its tie group, highest score first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    positions = [(0, 0)] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for pos in range(start, end + 1):
            positions[order[pos]] = (start + 1, end + 1)
        start = end + 1
    return positions


def ranking_metrics(scored: Sequence[tuple[float, bool]], problem_id: str = "",
                    skipped: int = 0) -> RankingQuality:
    """Metrics of (score, correct) pairs; see the module docstring for the definitions."""
    n = len(scored)
    positions = tie_positions([s for s, _ in scored])
    right = [i for i, (_, ok) in enumerate(scored) if ok]
    wrong = [i for i, (_, ok) in enumerate(scored) if not ok]
    worst_correct = max(positions[i][1] for i in right) / n if right else None
    best_wrong = min(positions[i][0] for i in wrong) / n if wrong else None
    pairwise = None
    if right and wrong:
        wins = sum(_pair_credit(scored[i][0], scored[j][0]) for i in right for j in wrong)
        pairwise = wins / (len(right) * len(wrong))
    return RankingQuality(problem_id, n, len(right), skipped, worst_correct, best_wrong, pairwise)


def _pair_credit(correct_score: float, wrong_score: float) -> float:
    if correct_score > wrong_score:
        return 1.0
    return 0.5 if correct_score == wrong_score else 0.0


def scorers_in(tree: SearchTree) -> list[str]:
    """Identities of every scorer that scored some node of the tree."""
    found: set[str] = set()
    for _, attrs in tree.iter_nodes():
        found.update(attrs["scores"])
    return sorted(found)


def candidate_nodes(tree: SearchTree, result: dict[str, Any] | None) -> list[int]:
    """The recorded candidates (the result's list), or every finished solution if none is stored."""
    if result and result.get("candidates"):
        return [int(c["node"]) for c in result["candidates"]]
    return sorted(tree.terminals())


def rank_tree(tree: SearchTree, result: dict[str, Any] | None, scorer: str,
              aggregate: str = "last") -> RankingQuality:
    """Ranking quality of ``scorer`` over one tree's candidates; step scores are folded into one
    value per candidate with ``aggregate`` (last, min, prod, mean), as the search does."""
    scored: list[tuple[float, bool]] = []
    skipped = 0
    for node in candidate_nodes(tree, result):
        attrs = tree[node]
        if scorer not in attrs["scores"] or attrs["correct"] is None:
            skipped += 1
            continue
        value = aggregate_steps(attrs["step_scores"].get(scorer), attrs["scores"][scorer], aggregate)
        scored.append((value, bool(attrs["correct"])))
    return ranking_metrics(scored, tree.problem.id, skipped)


def combine_rankings(per_tree: Iterable[RankingQuality]) -> dict[str, Any]:
    """Means over problems where each metric is defined, and how many problems that is."""
    rows = list(per_tree)
    out: dict[str, Any] = {"problems": len(rows)}
    for key in ("worst_correct_percentile", "best_wrong_percentile", "pairwise_accuracy"):
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        out[key] = sum(values) / len(values) if values else None
        out[f"{key}_problems"] = len(values)
    out["all_correct_problems"] = sum(1 for r in rows if r.candidates and r.correct == r.candidates)
    out["all_wrong_problems"] = sum(1 for r in rows if r.candidates and r.correct == 0)
    return out


# -- export ---------------------------------------------------------------------------------------


def export_graphml(tree: SearchTree, path: str | Path) -> Path:
    """GraphML for Gephi or networkx; dict and list attributes become JSON strings."""
    return tree.save_graphml(path)
