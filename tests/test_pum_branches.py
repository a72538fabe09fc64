"""PUM labelling with ``branches``: sibling continuations resampled from a trajectory's cut, so
that a labelled pair can differ in one step only (what beam search ranks)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.pum.label import LATER_OPTIONS, LabelError, LabelSettings, label_problems, settings_key
from pumsearch.pum.pairs import PairSettings, build_pairs
from pumsearch.search.grading import Grader
from pumsearch.search.problem import Problem


def policy(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
    """Two steps: a first from {a, b}, a second from {u, ..., z} (x leads to the answer); after two
    steps only the answer is left, so a branch from there repeats its parent (and is dropped)."""
    rest = []
    if len(steps) < 1:
        rest.append(str(rng.choice(["a", "b"])))
    if len(steps) < 2:
        rest.append(str(rng.choice(list("uvwxyz"))))
    return "\n\n".join([*rest, "\\boxed{5}" if "x" in (*steps, *rest) else "\\boxed{4}"])


def student(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
    return "\\boxed{5}" if "x" in steps else "\\boxed{4}"


@pytest.fixture(scope="module")
def grader():
    return Grader(string_shortcut=True)


async def label_one(grader: Grader, **settings) -> dict:
    gens = ScriptedGenerator(policy, name="policy"), ScriptedGenerator(student, name="student")
    base = {"trajectories": 3, "cut_lengths": (1, 2), "rollouts": 2} | settings
    (record,) = await label_problems([Problem("p", "q", "5")], [gens[0]], [gens[1]], LabelSettings(**base),
                                     grader=grader)
    return record


async def test_branches_resample_from_each_cut_and_are_cut_once_past_it(grader: Grader) -> None:
    record = await label_one(grader, branches=3)
    trajs = record["trajectories"]
    roots = [t for t in trajs if "branch_of" not in t]
    branches = [t for t in trajs if "branch_of" in t]
    assert len(roots) == 3 and branches  # three draws of six second steps per parent: some new
    texts = [t["text"] for t in trajs]
    assert len(set(texts)) == len(texts)  # a continuation equal to one already there is dropped
    for branch in branches:
        parent = trajs[branch["branch_of"]]
        assert "branch_of" not in parent
        # from the second cut only the answer is left: every such continuation repeats its parent
        assert branch["branch_length"] == 1
        assert branch["text"].split("\n\n")[0] == parent["text"].split("\n\n")[0]
        assert branch["text"] != parent["text"]
        assert branch["correct"] == ("x" in branch["text"].split("\n\n"))
    # every continuation drawn is a policy sample, kept or not: 3 roots x 2 cuts x 3 branches
    assert record["cost"]["policy_samples"] == 3 + 3 * 2 * 3
    by_trajectory: dict[int, list[tuple[int, bool]]] = {}
    for pre in record["prefixes"]:
        by_trajectory.setdefault(pre["trajectory"], []).append((pre["length"], pre["complete"]))
        assert len(pre["solve_rates"]) == 1
    for i, traj in enumerate(trajs):
        if "branch_of" in traj:  # the sibling prefix at the next cut length, then whole
            assert by_trajectory[i] == [(2, False), (3, True)]
        else:
            assert by_trajectory[i] == [(1, False), (2, False), (3, True)]


async def test_a_branch_and_its_parent_make_a_pair_that_differs_in_one_step(grader: Grader) -> None:
    record = await label_one(grader, branches=3)
    trajs = record["trajectories"]
    siblings = set()
    for traj in trajs:
        if "branch_of" in traj:
            parent = trajs[traj["branch_of"]]["text"].split("\n\n")
            mine = traj["text"].split("\n\n")
            if (parent[1] == "x") != (mine[1] == "x"):  # the students tell these apart
                siblings.add(frozenset({"\n\n".join(parent[:2]) + "\n\n", "\n\n".join(mine[:2]) + "\n\n"}))
    assert siblings  # the seed gives at least one such branch
    pairs, _ = build_pairs([record], PairSettings(margin=0.5, vertical=False))
    made = {frozenset({p.a, p.b}) for p in pairs if p.label == 1.0}
    assert siblings <= made
    for pair in pairs:
        if frozenset({pair.a, pair.b}) in siblings:
            assert "x" in pair.a.split("\n\n")  # the step the students finish from is preferred


async def test_no_branches_labels_as_before_and_keeps_the_settings_key(grader: Grader) -> None:
    assert LATER_OPTIONS["branches"] == 0
    record = await label_one(grader)
    assert all("branch_of" not in t for t in record["trajectories"])
    assert len(record["trajectories"]) == 3

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    settings = LabelSettings(cut_lengths=(1, 2))
    assert settings_key(settings, [Named("p")], [Named("s")]) != settings_key(
        LabelSettings(cut_lengths=(1, 2), branches=1), [Named("p")], [Named("s")])
    assert "branches" not in {k for k, v in asdict(settings).items() if LATER_OPTIONS.get(k, ...) != v}
    with pytest.raises(LabelError, match="branches"):
        LabelSettings(branches=-1)


async def test_branches_of_a_real_tiny_model_continue_from_the_parents_token_ids(tiny_llama_dir: Path,
                                                                                  grader: Grader) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from pumsearch.backends.transformers_backend import TransformersGenerator

    gen = TransformersGenerator.load(str(tiny_llama_dir))
    calls: list[tuple[list, list]] = []
    original = gen.generate

    async def recording(requests):
        outputs = await original(requests)
        calls.append((list(requests), outputs))
        return outputs

    gen.generate = recording  # type: ignore[method-assign]
    settings = LabelSettings(trajectories=2, cut_lengths=(3,), rollouts=1, max_tokens=10, branches=2,
                             include_complete=False)
    (record,) = await label_problems([Problem("t", "What is 2 + 3?", "5")], [gen], [gen], settings, grader=grader)
    (sampling, roots), (branch_requests, branch_outputs) = calls[:2]
    prompt = list(sampling[0].prompt_ids)
    eos = set(gen.eos_ids)
    content = [[t for t in c.token_ids if t not in eos] for c in roots[0].completions]
    assert [list(r.prompt_ids) for r in branch_requests] == [prompt + ids[:3] for ids in content if len(ids) > 3]
    assert all(r.params.max_tokens == 10 - 3 and r.n == 2 for r in branch_requests)  # the cap is shared
    trajs = record["trajectories"]
    branches = [t for t in trajs if "branch_of" in t]
    assert branches  # a random model's continuations differ
    continuations = [[t for t in c.token_ids if t not in eos]
                     for out in branch_outputs for c in out.completions]
    parents = [i for i, ids in enumerate(content) if len(ids) > 3 for _ in range(2)]
    for branch in branches:
        head = gen.tokenizer.decode(content[branch["branch_of"]][:3], skip_special_tokens=True)
        assert branch["branch_length"] == 3 and branch["text"].startswith(head)
        drawn = [ids for p, ids in zip(parents, continuations, strict=True) if p == branch["branch_of"]]
        assert branch["num_tokens"] - 3 in [len(ids) for ids in drawn]  # head tokens + its continuation's
    # with one cut and no whole trajectories, a branch has no prefix to label
    assert {p["trajectory"] for p in record["prefixes"]} <= {i for i, t in enumerate(trajs) if "branch_of" not in t}
