"""REBASE: the width allocation against hand-computed shares, and whole searches on the scripted
generator whose every allocation is recomputed from the scorer's value function.

Reference: thu-wyz/rebase @ 5da162e, rebase.py (line numbers at that commit): select_softmax
123-141 (sorted best first, k = ceil(W * exp(s/T) / S), then W -= k and S -= exp(s/T)),
select_and_expand 170-188 (finished nodes leave the width, a node with k = 0 is never expanded),
hype-parameters/rebase.yaml (softmax_temperature 0.2).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pumsearch.api import make_strategy
from pumsearch.backends.scripted import ScriptedGenerator, counting_policy
from pumsearch.cli import app
from pumsearch.runs.records import merge_record_files
from pumsearch.search.protocols import GenerationOutput, GenerationRequest
from pumsearch.search.tree import ROOT, SearchTree, load_tree
from pumsearch.strategies import StrategyError, search_config
from pumsearch.strategies.rebase import allocate
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_search import depth_policy, hashed_value, problems, run, scripted_scorer


def reference_select_softmax(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """rebase.py:132-141 as it computes (torch float32, S reduced by subtraction), for comparison."""
    exps = np.exp(np.asarray(scores, dtype=np.float32) / np.float32(temperature))
    total = exps.sum()
    out = []
    for e in exps:
        k = math.ceil(width * e / total)
        out.append(k)
        width -= k
        total -= e
    return out


@pytest.mark.parametrize(("scores", "width", "temperature", "expected"), [
    ([0.9, 0.5, 0.3], 8, 0.2, [7, 1, 0]),        # 8 * 0.84379 = 6.75 -> 7; then ceil(0.731) = 1; nothing left
    ([0.9, 0.7, 0.4, 0.1], 4, 1.0, [2, 1, 1, 0]),  # ceil(1.39), ceil(0.87), ceil(0.57), 0
    ([0.9, 0.7, 0.4, 0.1], 4, 0.2, [3, 1, 0, 0]),
    ([0.6, 0.55, 0.5, 0.3], 8, 0.2, [4, 2, 2, 0]),  # ceil(3.07), ceil(1.94), ceil(1.46)
    ([0.6, 0.55, 0.5, 0.3], 8, 1.0, [3, 2, 2, 1]),  # the last prefix reached takes what is left
    ([0.5, 0.5, 0.5], 8, 0.2, [3, 3, 2]),           # ceil(8/3), ceil(5/2), 2: the shares sum to the width
    ([0.8, 0.2], 3, 1.0, [2, 1]),
])
def test_allocation_is_the_references_sequential_ceiling_capped_at_the_width(scores, width, temperature,
                                                                              expected) -> None:
    shares = allocate(scores, width, temperature)
    assert shares == expected
    assert sum(shares) == width
    reference = reference_select_softmax(scores, width, temperature)
    if sum(reference) == width:  # where the reference's float32 does not over-allocate, the same shares
        assert reference == expected


def test_the_references_float32_arithmetic_over_allocates_where_a_share_is_whole() -> None:
    # why the cap: equal scores and [0.8, 0.2] at T = 1 give one width too many in float32
    assert reference_select_softmax([0.5, 0.5, 0.5], 8, 0.2) == [3, 3, 3]
    assert reference_select_softmax([0.8, 0.2], 3, 1.0) == [2, 2]
    assert allocate([0.5, 0.5, 0.5], 8, 0.2) == [3, 3, 2] and allocate([0.8, 0.2], 3, 1.0) == [2, 1]


def test_a_very_low_temperature_gives_the_best_prefix_everything() -> None:
    assert allocate([0.9, 0.89, 0.1], 16, 0.001) == [16, 0, 0]
    assert allocate([0.5, 0.5], 5, 1e6) == [3, 2]  # near-uniform: ceil(2.5) then the rest


# -- whole searches -----------------------------------------------------------------------------------
def table_policy(texts: dict[int, list[str]], default: Callable[[int, int], str]) -> Callable:
    """Call k for a step at depth d writes ``texts[d][k]`` when given, else ``default(d, k)``."""
    calls: dict[int, int] = {}

    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        d = len(done)
        k = calls.get(d, 0)
        calls[d] = k + 1
        return texts[d][k] if d in texts and k < len(texts[d]) else default(d, k)

    return policy


def finishing(depth_of_answer: int) -> Callable[[int, int], str]:
    return lambda d, k: f"x{d}-{k} \\boxed{{{k % 2}}}" if d + 1 >= depth_of_answer else f"x{d}-{k}\n\n"


def at_depth(tree: SearchTree, depth: int) -> list[int]:
    return sorted(n for n, a in tree.iter_nodes() if a["depth"] == depth and n != ROOT)


def test_finished_solutions_leave_the_width_and_a_zero_share_prunes() -> None:
    # width 4; step 1: s0 finishes, s1 0.8, s2 0.2, s3 0.2 -> the 3 left at T = 0.2: ceil(3 * e^4 /
    # (e^4 + 2e)) = ceil(2.73) = 3 to s1, nothing to s2 and s3 (pruned); step 2: s1's 3 children finish
    scores = {"s0 \\boxed{1}": 0.9, "s1": 0.8, "s2": 0.2, "s3": 0.2}
    policy = table_policy({0: ["s0 \\boxed{1}\n\n", "s1\n\n", "s2\n\n", "s3\n\n"]}, finishing(2))
    config = search_config(strategy="rebase", budget=4)
    scorer = scripted_scorer(lambda steps: scores.get(steps[-1], 0.5))
    (result,), _ = run(problems(1), config, policy=policy, scorer=scorer)
    tree = result.tree
    s0, s1, s2, s3 = at_depth(tree, 1)
    assert tree[s0]["terminal"] and tree[s0]["allocated"] is None
    assert [tree[n]["allocated"] for n in (s1, s2, s3)] == [3, 0, 0]
    assert len(tree.children(s1)) == 3 and not tree.children(s2) and not tree.children(s3)
    assert sorted(c.node for c in result.candidates) == sorted([s0, *tree.children(s1)])
    assert len(tree) - 1 == 4 + 3


def test_every_depths_allocation_is_the_softmax_share_of_the_width_left() -> None:
    def policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
        draw = int(rng.integers(0, 10**9))
        if len(done) >= 4 or (len(done) >= 1 and draw % 4 == 0):
            return f"end{len(done)}-{draw} \\boxed{{{draw % 3}}}"
        return f"d{len(done)}-{draw}\n\n"

    config = search_config(strategy="rebase", budget=16, rebase_temperature=0.3)
    (result,), _ = run(problems(1), config, policy=policy)
    tree = result.tree
    finished = 0
    for depth in range(1, 6):
        nodes = at_depth(tree, depth)
        finished += sum(1 for n in nodes if tree[n]["terminal"])
        open_nodes = sorted((n for n in nodes if not tree[n]["terminal"]),
                            key=lambda n: (-hashed_value(tree.steps(n)), n))
        if not open_nodes or finished >= 16:
            assert all(tree[n]["allocated"] is None and not tree.children(n) for n in open_nodes)
            continue
        expected = allocate([hashed_value(tree.steps(n)) for n in open_nodes], 16 - finished, 0.3)
        assert [tree[n]["allocated"] for n in open_nodes] == expected
        assert [len(tree.children(n)) for n in open_nodes] == expected
    assert finished == 16 == len(tree.terminals())  # every unit of width ended as one solution
    assert {c.node for c in result.candidates} == set(tree.terminals())


def test_rebase_issues_one_expand_and_one_score_per_depth_for_every_problem() -> None:
    generator = ScriptedGenerator(depth_policy(3))
    scorer = scripted_scorer()
    config = search_config(strategy="rebase", budget=8)
    results, _ = run(problems(3), config, generator, scorer)
    assert len(generator.calls) == 3 and len(scorer.inner.batches) == 3
    for call in generator.calls:
        assert len({r.prompt_text.split("</question>")[0] for r in call}) == 3
    for r in results:
        assert r.counters.backend_calls == 3
        assert len(r.tree.terminals()) == 8


@pytest.mark.parametrize("value", [0.0, -0.5])
def test_a_non_positive_temperature_is_refused(value: float) -> None:
    with pytest.raises(StrategyError, match="--rebase-temperature must be above 0"):
        make_strategy(search_config(strategy="rebase", budget=8, rebase_temperature=value), True)


@pytest.mark.parametrize(("args", "needle"), [
    (["--strategy", "rebase", "--scorer", "verifier", "--rebase-temperature", "0"],
     "--rebase-temperature must be above 0 (got 0.0)"),
    (["--strategy", "particles", "--scorer", "verifier", "--particle-temperature", "-1"],
     "--particle-temperature must be above 0"),
    (["--strategy", "particles", "--scorer", "verifier", "--ess-threshold", "0"], "--ess-threshold must be above 0"),
    (["--strategy", "bon", "--adaptive", "--stop-threshold", "0"], "--stop-threshold must be in (0, 1]"),
    (["--strategy", "bon", "--adaptive", "--stop-rule", "vote"], "unknown --stop-rule 'vote'"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["solve", "what is 1 + 3", "--model", "/nonexistent/model", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert needle in result.output


@pytest.mark.parametrize("strategy", ["rebase", "particles"])
def test_a_testbed_policy_searches_with_its_default_scorer(strategy: str, tmp_path: Path) -> None:
    """Without --scorer a testbed policy's search takes its family's default scorer (docs/scorers.md,
    "The default scorer"); make_strategy alone refuses (test_particles.py)."""
    result = CliRunner().invoke(app, ["solve", "start 3, add 4.", "--model", "testbed:weak", "--strategy", strategy,
                                      "--budget", "2", "--max-tokens", "40", "--json",
                                      "--tree-out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["strategy"] == strategy and record["scorer"] == "testbed-prm"
    assert record["counters"]["scorer_calls"] >= 1


# -- shared with particle filtering and adaptive Best-of-N ------------------------------------------
NEW_STRATEGIES = [
    ({"strategy": "rebase"}, depth_policy(3)),
    ({"strategy": "particles"}, depth_policy(3)),
    ({"strategy": "particles", "particle_iterations": 2, "resampling": "systematic"}, depth_policy(3)),
    ({"strategy": "bon", "adaptive": True, "wave_size": 2}, counting_policy(3)),
]


@pytest.mark.parametrize(("options", "policy"), NEW_STRATEGIES)
def test_same_seed_same_tree_whatever_the_batch_mates(options: dict, policy: Callable) -> None:
    config = search_config(budget=8, seed=3, **options)
    (alone,), _ = run(problems(1), config, policy=policy)
    together, _ = run(problems(3), config, policy=policy)
    other, _ = run(problems(1), search_config(budget=8, seed=4, **options), policy=policy)
    texts = lambda r: [a["text"] for _, a in sorted(r.tree.iter_nodes())]  # noqa: E731
    assert texts(alone) == texts(together[0])
    assert texts(alone) != texts(other[0])


class SlowGenerator(ScriptedGenerator):
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        await asyncio.sleep(0.05)
        return await super().generate(requests)


@pytest.mark.parametrize("strategy", ["rebase", "particles"])
def test_time_limit_returns_what_finished_marked_cut_short(strategy: str) -> None:
    config = search_config(strategy=strategy, budget=8, time_limit=0.25)
    started = time.monotonic()
    (result,), _ = run(problems(1), config, SlowGenerator(depth_policy(30)))
    assert time.monotonic() - started < 5
    assert result.cut_short and "time limit" in (result.cut_reason or "")
    assert len(result.tree) > 1


def test_sweep_and_report_run_particles_and_rebase_per_budget(tmp_path: Path) -> None:
    """Neither can be read off a larger run: a sweep makes one run per N, and report shows each."""
    data = write_gsm8k_style(tmp_path / "d.jsonl", 3)
    out = tmp_path / "sweep"
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "--backend", "scripted", "--dataset", str(data), "--strategies",
                                 "particles,rebase", "--budgets", "2,4", "--scorers", "verifier", "--max-tokens", "64",
                                 "--resampling", "systematic", "--rebase-temperature", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name.rsplit("-", 1)[0] for p in out.iterdir() if p.is_dir())
    assert runs == ["particles-verifier-n2-s0", "particles-verifier-n4-s0", "rebase-verifier-n2-s0",
                    "rebase-verifier-n4-s0"]
    for run_dir in (p for p in out.iterdir() if p.is_dir()):
        config = json.loads((run_dir / "config.json").read_text())
        strategy = config["search"]["strategy"]
        assert config["search"]["extra"] == ({"resampling": "systematic"} if strategy == "particles"
                                             else {"rebase_temperature": 0.5})
        for record in merge_record_files(run_dir.glob("records*.jsonl")).values():
            assert record["strategy"] == strategy and "subsample" not in record
            tree, _ = load_tree(run_dir / record["tree_file"])
            marks = ("copies", "particle_weight", "iteration") if strategy == "particles" else ("allocated",)
            assert all(mark in tree[ROOT] for mark in marks)
    report = runner.invoke(app, ["report", str(out), "--json", str(tmp_path / "r.json")])
    assert report.exit_code == 0, report.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert sorted((r["strategy"], r["budget"], r["subsampled"]) for r in rows) == [
        ("particles", 2, False), ("particles", 4, False), ("rebase", 2, False), ("rebase", 4, False)]
