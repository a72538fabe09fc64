"""Beam search, DVTS and Best-of-N against huggingface/search-and-learn, case by case.

Reference: huggingface/search-and-learn @ 6f81cac8b1ca4c4be9fabefc27a856c928f3ae7f. Line numbers
are of that commit: BS = src/sal/search/beam_search.py, DV = src/sal/search/
diverse_verifier_tree_search.py, BN = src/sal/search/best_of_n.py, UT = src/sal/search/utils.py,
SC = src/sal/utils/score.py, CF = src/sal/config.py. docs/strategies.md ("pumsearch vs
search-and-learn") lists every point; where pumsearch differs on purpose, the case runs it with
the reference's setting and says so.

Each tree is scripted: ``Script`` says what the q-th sample drawn from a prefix is (in the order
the samples are drawn) and what the scorer gives each step. The expected trees and selections are
derived by hand from the reference's pseudocode in the comments; none is read back from pumsearch.
search-and-learn's ``num_iterations`` is pumsearch's --max-depth, its ``n`` --budget, its
``beam_width`` --beam-width, its ``agg_strategy`` --aggregate.

Reading the reference, in brief (BS):
    beams = N copies of the prompt                                          # BS:42-61
    for i in range(num_iterations):                                         # BS:65
        active = not-pruned beams, copied cyclically to N: (K * (N//k+1))[:N]   # BS:66-84
        last iteration: no stop string (to the end), no lookahead           # BS:86-93, 111
        each active beam samples one step; EOS or length (vLLM's stop_reason None, UT:121-127)
            or an empty step completes it, appended to `completed` in list order   # BS:117-131
        score current_text, aggregate with agg_strategy                     # BS:132-143
        drop completed; stop if none is active                              # BS:145-153
        filter_duplicates: first beam per text, in list order               # BS:155-165
        keep the top N/M by score, the others pruned (list order kept)      # BS:167-174
    return sorted(completed)[:N] if sort_completed else completed[:N]       # BS:176-184
    pred = completions[argmax(aggregate(scores, agg_strategy))]             # BS:211-217
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.scorers.base import BatchedScorer
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies import search_config
from tests.helpers_search import ScriptedScorer, problems, run

BOX = "\\boxed"


@dataclass
class Script:
    """``samples[prefix]``: the texts of the samples drawn from ``prefix`` (a tuple of steps), in
    the order they are drawn; a text ending in the step delimiter is an open step, one without it
    ends at end of sequence, and a text with several steps is cut at the first delimiter unless
    the request samples to the end. ``values[step]``: the scorer's value of a step. Drawing more
    samples from a prefix than scripted fails the test: the search sampled what the reference
    would not."""

    samples: dict[tuple[str, ...], list[str]]
    values: dict[str, float]
    drawn: dict[tuple[str, ...], int] = field(default_factory=dict)

    def policy(self, question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        q = self.drawn.get(done, 0)
        self.drawn[done] = q + 1
        texts = self.samples.get(done, [])
        assert q < len(texts), f"sample {q + 1} drawn from {done}: the script has {len(texts)}"
        return texts[q]


class StepTableScorer(ScriptedScorer):
    """A step-level scorer: each step's value from a table, as a PRM gives one per step."""

    def __init__(self, values: dict[str, float]) -> None:
        super().__init__(lambda steps: values[steps[-1]])
        self.values = values

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        self.batches.append(list(items))
        return [Score(self.values[item.steps[-1]], [self.values[s] for s in item.steps]) for item in items]


def search(script: Script, **settings: object) -> tuple[SearchResult, ScriptedGenerator]:
    generator = ScriptedGenerator(script.policy)
    scorer = BatchedScorer(StepTableScorer(script.values))  # type: ignore[arg-type]
    (result,), _ = run(problems(1), search_config(**settings), generator, scorer)
    return result, generator


def returned(result: SearchResult) -> list[tuple[str, ...]]:
    """The returned candidates, in order, as their step texts."""
    return [result.tree.steps(c.node) for c in result.candidates]


def chosen(result: SearchResult) -> tuple[str, ...]:
    assert result.chosen_node is not None
    return result.tree.steps(result.chosen_node)


def samples_per_call(generator: ScriptedGenerator) -> list[int]:
    return [sum(r.n for r in call) for call in generator.calls]


def expanded(tree: SearchTree, depth: int) -> dict[tuple[str, ...], int]:
    """How many children each prefix of ``depth`` got."""
    return {tree.steps(n): len(tree.children(n)) for n, a in tree.iter_nodes()
            if a["depth"] == depth and n != ROOT and tree.children(n)}


# -- beam search --------------------------------------------------------------------------------
def beam_one() -> Script:
    """N = 4, M = 2 (keep N/M = 2), num_iterations = 3.

    i = 0 (BS:65-67, 112-131): the 4 prompt copies draw c0..c3; c0 ends (EOS): completed = [c0].
        Open c1 .9, c2 .5, c3 .7 -> top 2 = {c1, c3}; c2 pruned; list order [c1, c3] (BS:167-174).
    i = 1: k = 2 != 4 -> E = ([c1, c3] * 3)[:4] = [c1, c3, c1, c3] (BS:71-84): draws d0 (c1),
        d1 (c3), d2 (c1), d3 (c3); d0, d1, d2 end -> completed = [c0, d0, d1, d2]; open [d3].
    i = 2 = num_iterations - 1: E = [d3] * 4, no stop string (BS:86-93): e0..e3 each run to the
        end (two steps each) and end -> completed = [c0, d0, d1, d2, e0, e1, e2, e3]; none
        active -> break (BS:151-153).
    """
    return Script(
        samples={
            (): ["c0 " + BOX + "{1}", "c1\n\n", "c2\n\n", "c3\n\n"],
            ("c1",): [f"d0 {BOX}{{2}}", f"d2 {BOX}{{4}}"],   # c1's copies are E positions 0 and 2
            ("c3",): [f"d1 {BOX}{{3}}", "d3\n\n"],            # c3's copies are E positions 1 and 3
            ("c3", "d3"): [f"e{k}a\n\ne{k}b {BOX}{{1{k}}}" for k in range(4)],
        },
        values={"c0 " + BOX + "{1}": .2, "c1": .9, "c2": .5, "c3": .7,
                f"d0 {BOX}{{2}}": .6, f"d1 {BOX}{{3}}": .95, f"d2 {BOX}{{4}}": .8, "d3": .3,
                **{f"e{k}a": .05 for k in range(4)},
                **{f"e{k}b {BOX}{{1{k}}}": v for k, v in enumerate([.5, .99, .4, .1])}},
    )


C0, D0, D1, D2 = ("c0 " + BOX + "{1}",), ("c1", f"d0 {BOX}{{2}}"), ("c3", f"d1 {BOX}{{3}}"), ("c1", f"d2 {BOX}{{4}}")
E1 = ("c3", "d3", "e1a", f"e1b {BOX}{{11}}")
BEAM_ONE = {"strategy": "beam", "budget": 4, "beam_width": 2, "max_depth": 3}


def test_beam_expands_n_per_iteration_keeps_n_over_m_and_returns_the_first_n_to_finish() -> None:
    result, generator = search(beam_one(), **BEAM_ONE)
    tree = result.tree
    # every iteration samples exactly N (BS:71-84): 4 from the prompt, 2 + 2, then 4 from d3
    assert samples_per_call(generator) == [4, 4, 4]
    assert expanded(tree, 1) == {("c1",): 2, ("c3",): 2}  # c2 pruned (BS:167-174), c0 finished
    assert expanded(tree, 2) == {("c3", "d3"): 4}
    # sort_completed off (CF:69, the default and every beam recipe's): completed[:N] (BS:184)
    assert returned(result) == [C0, D0, D1, D2]
    assert chosen(result) == D1 and result.answer == "3"  # argmax .2 .6 .95 .8 (BS:211-217)


def test_beam_last_iteration_samples_to_the_end() -> None:
    result, generator = search(beam_one(), **BEAM_ONE, sort_completed=True)
    # i = 2 = num_iterations - 1 has no stop string (BS:86-93): each e runs to its end, two steps
    assert generator.calls[-1][0].params.stop == ()
    assert all(r.params.stop == ("\n\n",) for call in generator.calls[:-1] for r in call)
    leaves = [("c3", "d3", f"e{k}a", f"e{k}b {BOX}{{1{k}}}") for k in range(4)]
    assert set(leaves) <= {result.tree.steps(n) for n in result.tree.terminals()}
    # sort_completed (BS:177-182): the 8 completed sorted by score, first 4: e1 .99, d1 .95, d2 .8, d0 .6
    assert returned(result) == [E1, D1, D2, D0]
    assert chosen(result) == E1 and result.answer == "11"


def test_beam_without_the_last_roll_out_ends_prefixes_at_the_depth_cap() -> None:
    """pumsearch's setting last_round_to_end=false: the depth cap cuts d3's children after one
    step (e_ka, .05 each, no answer); sort_completed then ranks d1 .95, d2 .8, d0 .6, c0 .2."""
    result, generator = search(beam_one(), **BEAM_ONE, sort_completed=True, last_round_to_end=False)
    assert generator.calls[-1][0].params.stop == ("\n\n",)
    cut = [n for n in result.tree.terminals() if result.tree[n]["depth"] == 3]
    assert len(cut) == 4 and all(result.tree[n]["answer"] is None for n in cut)
    assert returned(result) == [D1, D2, D0, C0]


def test_beam_stop_when_n_finished_returns_the_same_at_less_compute() -> None:
    """completed[:N] is fixed once N have finished (BS:184), so stopping then changes nothing
    returned: iteration 2 (4 samples from d3) is skipped."""
    result, generator = search(beam_one(), **BEAM_ONE, stop_when_n_finished=True)
    assert samples_per_call(generator) == [4, 4]
    assert returned(result) == [C0, D0, D1, D2] and chosen(result) == D1
    assert max(a["depth"] for _, a in result.tree.iter_nodes()) == 2  # d3 was never expanded
    # with sort_completed too it is pumsearch's old rule: the best 4 of the 4 finished by then
    old, _ = search(beam_one(), **BEAM_ONE, stop_when_n_finished=True, sort_completed=True)
    assert returned(old) == [D1, D2, D0, C0]


def spares_and_list_order() -> Script:
    """N = 8, M = 2 (keep 4), num_iterations = 2.

    i = 0: r0..r4 end, completed = [r0..r4]; open x .1, y .9, z .5: fewer than 4, all kept, in
        list order [x, y, z] (not score order).
    i = 1 (last): E = ([x, y, z] * 3)[:8] = [x, y, z, x, y, z, x, y] (BS:71-84): the spare
        expansions go to the earliest in list order, x and y (3 each), z gets 2, although y and z
        score higher than x. All eight end, appended in E's order: x0, y0, z0, x1, y1, z1, x2, y2.
    completed[:8] = [r0..r4, x0, y0, z0]: x1 (.99, the best of all) is 9th and not returned; z0
        (.97) is the best returned and the answer (BS:211-217).
    """
    samples: dict[tuple[str, ...], list[str]] = {
        (): [f"r{i} {BOX}{{{i}}}" for i in range(5)] + ["x\n\n", "y\n\n", "z\n\n"]}
    values = {f"r{i} {BOX}{{{i}}}": v for i, v in enumerate([.1, .2, .3, .4, .45])} | {"x": .1, "y": .9, "z": .5}
    child_values = {"x": [.31, .99, .32], "y": [.35, .36, .37], "z": [.97, .38]}
    for parent, vals in child_values.items():
        samples[(parent,)] = [f"{parent}{q} {BOX}{{{parent}{q}}}" for q in range(len(vals))]
        values |= {f"{parent}{q} {BOX}{{{parent}{q}}}": v for q, v in enumerate(vals)}
    return Script(samples, values)


def test_beam_spare_expansions_go_to_the_earliest_kept_beams_and_children_interleave() -> None:
    result, generator = search(spares_and_list_order(), strategy="beam", budget=8, beam_width=2, max_depth=2)
    assert samples_per_call(generator) == [8, 8]
    assert expanded(result.tree, 1) == {("x",): 3, ("y",): 3, ("z",): 2}
    first = [(f"r{i} {BOX}{{{i}}}",) for i in range(5)]
    assert returned(result) == [*first, ("x", f"x0 {BOX}{{x0}}"), ("y", f"y0 {BOX}{{y0}}"), ("z", f"z0 {BOX}{{z0}}")]
    assert result.answer == "z0"


def duplicates() -> Script:
    """N = 4, M = 2 (keep 2), num_iterations = 2. The prompt copies draw a .9, a .9, b .5, c .4.

    filter_duplicates off (CF:68): top 2 of [a, a, b, c] = both a's; E = [a, a', a, a'].
    filter_duplicates on (every beam recipe, e.g. recipes/Llama-3.2-1B-Instruct/beam_search.yaml:3):
        the first beam per text in list order (BS:155-165) leaves [a, b, c]; top 2 = [a, b];
        E = [a, b, a, b].
    """
    return Script(
        samples={(): ["a\n\n", "a\n\n", "b\n\n", "c\n\n"],
                 ("a",): [f"a{q} {BOX}{{{q}}}" for q in range(4)], ("b",): [f"b{q} {BOX}{{{q}}}" for q in range(2)]},
        values={"a": .9, "b": .5, "c": .4, **{f"a{q} {BOX}{{{q}}}": .6 for q in range(4)},
                **{f"b{q} {BOX}{{{q}}}": .7 for q in range(2)}},
    )


def test_beam_filter_duplicates_keeps_the_first_of_each_text_before_the_top_n_over_m() -> None:
    plain, _ = search(duplicates(), strategy="beam", budget=4, beam_width=2, max_depth=2)
    kept = [n for n in plain.tree.children(ROOT) if plain.tree.children(n)]
    assert [plain.tree.steps(n) for n in kept] == [("a",), ("a",)]
    assert [len(plain.tree.children(n)) for n in kept] == [2, 2]
    filtered, _ = search(duplicates(), strategy="beam", budget=4, beam_width=2, max_depth=2, filter_duplicates=True)
    assert expanded(filtered.tree, 1) == {("a",): 2, ("b",): 2}
    # completion order is E's: a's first child, b's first, a's second, b's second
    assert returned(filtered) == [("a", f"a0 {BOX}{{0}}"), ("b", f"b0 {BOX}{{0}}"),
                                  ("a", f"a1 {BOX}{{1}}"), ("b", f"b1 {BOX}{{1}}")]


def boxed_and_length() -> Script:
    """N = 2, M = 2 (keep 1), num_iterations = 3, at most 5 tokens a step.

    i = 0: s "so \\boxed{3}" ends at the step delimiter: search-and-learn completes a beam only on
        EOS, length or an empty step (BS:125-131), so s stays open; w (7 words) hits the token cap:
        vLLM's stop_reason is None, read as "EOS" (UT:121-127), so w is completed. Open [s] -> kept.
    i = 1: E = [s, s]: t0, t1 end -> completed = [w, t0, t1]; first 2 = [w, t0]; argmax .5 .7 -> t0.
    """
    return Script(
        samples={(): [f"so {BOX}{{3}}\n\n", "w1 w2 w3 w4 w5 w6 w7\n\n"],
                 (f"so {BOX}{{3}}",): [f"t0 {BOX}{{4}}", f"t1 {BOX}{{5}}"]},
        values={f"so {BOX}{{3}}": .9, "w1 w2 w3 w4 w5": .5, f"t0 {BOX}{{4}}": .7, f"t1 {BOX}{{5}}": .6},
    )


def test_beam_a_boxed_answer_does_not_end_a_reference_beam_a_token_cap_does() -> None:
    settings = {"strategy": "beam", "budget": 2, "beam_width": 2, "max_depth": 3, "max_step_tokens": 5}
    reference, _ = search(boxed_and_length(), **settings, stop_at_boxed=False)
    assert returned(reference) == [("w1 w2 w3 w4 w5",), (f"so {BOX}{{3}}", f"t0 {BOX}{{4}}")]
    assert reference.answer == "4"
    # pumsearch's default (--stop-at-boxed): s is finished at once and never expanded
    default, generator = search(boxed_and_length(), **settings)
    assert samples_per_call(generator) == [2]
    assert returned(default) == [(f"so {BOX}{{3}}",), ("w1 w2 w3 w4 w5",)] and default.answer == "3"


def aggregates() -> Script:
    """N = 4, M = 1 (keep 4: every open beam, each expanded once), num_iterations = 2.

    i = 0: p .75, q .8, r .5, s .6, all open and kept (one step: last = min = prod).
    i = 1 (last): each draws one ending step: completed = [P, Q, R, S] with step scores
        P [.75, .99], Q [.8, .9], R [.5, .999], S [.6, .3].
    pred = argmax of aggregate_scores (BS:211-217; SC:33-43):
        last: .99 .9 .999 .3       -> R
        min:  .75 .8 .5 .3         -> Q
        prod: .7425 .72 .4995 .18  -> P
    """
    first = {"p": .75, "q": .8, "r": .5, "s": .6}
    second = {"p": .99, "q": .9, "r": .999, "s": .3}
    samples: dict[tuple[str, ...], list[str]] = {(): [f"{k}\n\n" for k in first]}
    values = dict(first)
    for k, v in second.items():
        samples[(k,)] = [f"{k}2 {BOX}{{{k}}}"]
        values[f"{k}2 {BOX}{{{k}}}"] = v
    return Script(samples, values)


@pytest.mark.parametrize(("aggregate", "answer"), [("last", "r"), ("min", "q"), ("prod", "p")])
def test_beam_answer_is_the_argmax_of_the_aggregated_step_scores(aggregate: str, answer: str) -> None:
    result, _ = search(aggregates(), strategy="beam", budget=4, beam_width=1, max_depth=2, aggregate=aggregate)
    assert [s[0] for s in returned(result)] == ["p", "q", "r", "s"]
    assert result.answer == answer


# -- DVTS -----------------------------------------------------------------------------------------
def dvts_one() -> Script:
    """N = 4, M = 2: N/M = 2 subtrees (CF:71-75; DV:45-62), num_iterations = 3.

    i = 0: each subtree draws M = 2 (DV:97-99). s0: a0 .3, a1 .6 -> a1 (DV:119-126), open.
        s1: b0 .8 "... \\boxed{5}" (ended at the delimiter), b1 .2 -> b0; "boxed{" in the text
        prunes s1 (DV:134-137).
    i = 1: s0 draws from a1: c0 .4 (open), c1 .7 (EOS) -> c1; EOS prunes s0 (DV:127-132).
    i = 2: nothing active -> break (DV:66-68).
    Output: for every subtree, all M children of its last expansion, finished or not (DV:139-157):
        [a1+c0 (open, no answer), a1+c1, b0, b1 (open)]; pred = argmax .4 .7 .8 .2 = b0 (DV:176-185).
    """
    return Script(
        samples={(): ["a0\n\n", "a1\n\n", f"b0 so {BOX}{{5}}\n\n", "b1\n\n"],
                 ("a1",): ["c0\n\n", f"c1 {BOX}{{6}}"]},
        values={"a0": .3, "a1": .6, f"b0 so {BOX}{{5}}": .8, "b1": .2, "c0": .4, f"c1 {BOX}{{6}}": .7},
    )


def test_dvts_returns_every_child_of_each_subtrees_last_round_finished_or_not() -> None:
    result, generator = search(dvts_one(), strategy="dvts", budget=4, beam_width=2, max_depth=3)
    assert samples_per_call(generator) == [4, 2]
    assert returned(result) == [("a1", "c0"), ("a1", f"c1 {BOX}{{6}}"), (f"b0 so {BOX}{{5}}",), ("b1",)]
    assert [c.answer for c in result.candidates] == [None, "6", "5", None]
    assert [c.score for c in result.candidates] == [.4, .7, .8, .2]
    assert result.answer == "5"


def dvts_last_round() -> Script:
    """N = 2, M = 2: one subtree, num_iterations = 2.

    i = 0: a0 .3, a1 .6 -> a1, open. i = 1 (last, no stop string: DV:70-77): a1 draws c0, two
    steps to its end (.9), and c1 (.5); c0 is chosen and ends. Output [a1+c0, a1+c1] (DV:139-157).
    """
    return Script(
        samples={(): ["a0\n\n", "a1\n\n"], ("a1",): [f"c0a\n\nc0b {BOX}{{7}}", f"c1 {BOX}{{8}}"]},
        values={"a0": .3, "a1": .6, "c0a": .95, f"c0b {BOX}{{7}}": .9, f"c1 {BOX}{{8}}": .5},
    )


def test_dvts_last_iteration_samples_to_the_end() -> None:
    result, generator = search(dvts_last_round(), strategy="dvts", budget=2, beam_width=2, max_depth=2)
    assert generator.calls[-1][0].params.stop == ()
    assert returned(result) == [("a1", "c0a", f"c0b {BOX}{{7}}"), ("a1", f"c1 {BOX}{{8}}")]
    assert result.answer == "7"
    assert {result.tree[n]["subtree"] for n, _ in result.tree.iter_nodes() if n != ROOT} == {0}
    # without the roll-out (last_round_to_end=false) the depth cap ends c0 after its first step,
    # c0a (.95), which has no answer and is the best scored: the search answers nothing
    capped, _ = search(dvts_last_round(), strategy="dvts", budget=2, beam_width=2, max_depth=2,
                       last_round_to_end=False)
    assert returned(capped) == [("a1", "c0a"), ("a1", f"c1 {BOX}{{8}}")]
    assert [c.answer for c in capped.candidates] == [None, "8"]
    assert capped.answer is None


def dvts_lookahead() -> Script:
    """N = 2, M = 2, lookahead 1: one subtree, num_iterations = 3. Draws from a prefix come in
    order: the M samples of an expansion, then the greedy lookahead step of each open child
    (UT:102-127: lookahead steps continue at temperature 0).

    i = 0: a0 (.1), a1 (.8); lookahead a0 -> a0l (.9), a1 -> a1l (.2). DVTS scores
        current_text + lookahead text (DV:113): a0 .9 > a1 .2 -> a0 (DV:119-126).
    i = 1: a0 draws c0 (EOS, .7) and c1 (open, .95); lookahead c1 -> c1l (.3): c0 .7 > c1 .3 -> c0,
        which ends the subtree. Output [a0+c0, a0+c1] with the scores they were ranked by,
        best_scores = all_scores[i] (DV:151): .7 and .3, so c0 is the answer, not c1 (.95 alone).
    """
    return Script(
        samples={(): ["a0\n\n", "a1\n\n"], ("a0",): ["a0l\n\n", "c0 " + BOX + "{9}", "c1\n\n"],
                 ("a1",): ["a1l\n\n"], ("a0", "c1"): ["c1l\n\n"]},
        values={"a0": .1, "a1": .8, "a0l": .9, "a1l": .2, "c0 " + BOX + "{9}": .7, "c1": .95, "c1l": .3},
    )


def test_dvts_ranks_and_returns_children_by_their_lookahead_scores() -> None:
    result, _ = search(dvts_lookahead(), strategy="dvts", budget=2, beam_width=2, max_depth=3, lookahead=1)
    assert returned(result) == [("a0", "c0 " + BOX + "{9}"), ("a0", "c1")]
    assert [c.score for c in result.candidates] == [.7, .3]
    assert result.answer == "9"


@pytest.mark.parametrize(("aggregate", "answer"), [("last", "r"), ("min", "q"), ("prod", "p")])
def test_dvts_answer_is_the_argmax_of_the_aggregated_step_scores(aggregate: str, answer: str) -> None:
    """N = 4, M = 1: four subtrees of one child each, the same steps as ``aggregates``: each keeps
    its one child and ends at i = 1; pred = argmax over the outputs (DV:176-185; SC:33-43)."""
    result, _ = search(aggregates(), strategy="dvts", budget=4, beam_width=1, max_depth=2, aggregate=aggregate)
    assert [s[0] for s in returned(result)] == ["p", "q", "r", "s"]
    assert result.answer == answer


# -- Best-of-N ------------------------------------------------------------------------------------
def best_of_n() -> Script:
    """N = 4 samples of the prompt, each to its end (no stop string, BN:42-61), scored by step;
    pred = the first argmax of the aggregated scores (BN:84-90): the same step scores as
    ``aggregates`` give R (last), Q (min), P (prod). A tie goes to the first (np.argmax)."""
    first = {"p": .75, "q": .8, "r": .5, "s": .6}
    second = {"p": .99, "q": .9, "r": .999, "s": .3}
    samples = {(): [f"{k}\n\n{k}2 {BOX}{{{k}}}" for k in first]}
    values = first | {f"{k}2 {BOX}{{{k}}}": v for k, v in second.items()}
    return Script(samples, values)


@pytest.mark.parametrize(("aggregate", "answer"), [("last", "r"), ("min", "q"), ("prod", "p")])
def test_best_of_n_samples_n_to_the_end_and_answers_the_argmax(aggregate: str, answer: str) -> None:
    result, generator = search(best_of_n(), strategy="bon", budget=4, aggregate=aggregate)
    assert [(r.n, r.params.stop) for call in generator.calls for r in call] == [(4, ())]
    assert [s[0] for s in returned(result)] == ["p", "q", "r", "s"]  # generation order
    assert result.answer == answer


def test_best_of_n_ties_go_to_the_first_sample() -> None:
    script = Script(samples={(): [f"t{i} {BOX}{{{i}}}" for i in range(3)]},
                    values={f"t{i} {BOX}{{{i}}}": v for i, v in enumerate([.4, .8, .8])})
    result, _ = search(script, strategy="bon", budget=3)
    assert result.answer == "1"  # np.argmax of [.4, .8, .8] is 1 (BN:90)


# -- beyond the reference: a search cut short -----------------------------------------------------
def test_dvts_cut_short_returns_only_finished_children() -> None:
    """search-and-learn has no time limit. pumsearch's returns the best so far, finished prefixes
    only (docs/strategies.md, "Time limit"): N = 4, M = 2; round 1 gives s0 a0 (.9, ends) and a1;
    s1 keeps b0 (.95, open). Round 2's call outlasts the limit, so the search stops before scoring
    it: the answer is a0's, not the open b0's (no answer)."""
    script = Script(
        samples={(): [f"a0 {BOX}{{1}}", "a1\n\n", "b0\n\n", "b1\n\n"], ("b0",): ["c0\n\n", "c1\n\n"]},
        values={f"a0 {BOX}{{1}}": .9, "a1": .5, "b0": .95, "b1": .1, "c0": .2, "c1": .3},
    )
    generator = ScriptedGenerator(script.policy, delay=0.5)
    scorer = BatchedScorer(StepTableScorer(script.values))  # type: ignore[arg-type]
    config = search_config(strategy="dvts", budget=4, beam_width=2, max_depth=3, time_limit=0.8)
    (result,), _ = run(problems(1), config, generator, scorer)
    assert result.cut_short and len(generator.calls) == 2
    assert returned(result) == [(f"a0 {BOX}{{1}}",)]
    assert result.answer == "1"
