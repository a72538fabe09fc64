"""PUM labelling: exact solve rates with scripted students, resume after a kill, a real tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.pum.label import LabelError, LabelSettings, label_problems, label_to_file, read_records
from pumsearch.search.grading import Grader
from pumsearch.search.problem import Problem

GOOD = "good\n\n\\boxed{5}"
BAD = "bad\n\n\\boxed{4}"


def policy(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
    return GOOD if rng.integers(0, 2) else BAD


def student(from_scratch: str):
    """Continues a good first step to the right answer and a bad one to a wrong answer; from
    scratch it gives ``from_scratch``."""

    def continue_(question: str, steps: tuple[str, ...], rng: np.random.Generator) -> str:
        if "good" in steps:
            return "\\boxed{5}"
        if "bad" in steps:
            return "\\boxed{4}"
        return from_scratch

    return continue_


def generators() -> tuple[ScriptedGenerator, ScriptedGenerator, ScriptedGenerator]:
    return (ScriptedGenerator(policy, name="policy"), ScriptedGenerator(student("\\boxed{4}"), name="weak"),
            ScriptedGenerator(student("\\boxed{5}"), name="strong"))


def problems(n: int) -> list[Problem]:
    return [Problem(f"p{i}", f"question {i}", "5") for i in range(n)]


@pytest.fixture(scope="module")
def grader():
    g = Grader(string_shortcut=True)
    yield g


async def test_scripted_labels_have_exact_rates_gains_and_utilities(grader: Grader) -> None:
    pol, weak, strong = generators()
    settings = LabelSettings(trajectories=6, cut_lengths=(1,), rollouts=3)
    (record,) = await label_problems(problems(1), [pol], [weak, strong], settings, grader=grader)
    assert record["students"] == ["weak", "strong"]
    assert record["baselines"] == [0.0, 1.0]  # weak answers 4 from scratch, strong 5
    texts = [t["text"] for t in record["trajectories"]]
    assert set(texts) == {GOOD, BAD}  # six samples at p = 1/2: both kinds appear for this seed
    assert [t["correct"] for t in record["trajectories"]] == [t == GOOD for t in texts]
    expected = []  # per trajectory: the cut after its first step, then the whole trajectory
    for i, text in enumerate(texts):
        good = text == GOOD
        first = "good\n\n" if good else "bad\n\n"
        rate = 1.0 if good else 0.0
        expected += [(i, 1, first, False, [rate, rate]), (i, 2, text, True, [rate, rate])]
    got = [(p["trajectory"], p["length"], p["text"], p["complete"], p["solve_rates"]) for p in record["prefixes"]]
    assert got == expected
    # gains: rate - baseline; utility: each student's gains z-scored over the problem's prefixes
    n_good = sum(p["solve_rates"][0] == 1.0 for p in record["prefixes"])
    share = n_good / len(record["prefixes"])
    z_good = (1 - share) / math.sqrt(share * (1 - share))  # a 0/1 column's z-score
    z_bad = -share / math.sqrt(share * (1 - share))
    for p in record["prefixes"]:
        good = p["solve_rates"][0] == 1.0
        assert p["gains"] == [1.0, 0.0] if good else p["gains"] == [0.0, -1.0]
        assert p["utility"] == pytest.approx(z_good if good else z_bad)
    cost = record["cost"]
    assert cost["policy_samples"] == 6
    # rollouts: the empty prefix and the six open cuts, three each; complete trajectories need none
    assert [s["rollouts"] for s in cost["students"]] == [21, 21]


async def test_rollouts_of_many_problems_share_one_backend_call_per_model(grader: Grader) -> None:
    pol, weak, strong = generators()
    await label_problems(problems(3), [pol], [weak, strong], LabelSettings(trajectories=2, rollouts=2), grader=grader)
    assert len(pol.calls) == 1 and len(pol.calls[0]) == 3  # one request per problem, in one call
    assert len(weak.calls) == 1 and len(strong.calls) == 1


async def test_labelling_resumes_after_a_kill_without_duplicates(tmp_path: Path, grader: Grader) -> None:
    settings = LabelSettings(trajectories=3, cut_lengths=(1,), rollouts=2)
    out = tmp_path / "labels.jsonl"

    def kill_after_first_chunk(done: int, total: int) -> None:
        raise KeyboardInterrupt

    pol, weak, strong = generators()
    with pytest.raises(KeyboardInterrupt):
        await label_to_file(problems(5), [pol], [weak, strong], settings, out, chunk=2, grader=grader,
                            on_chunk=kill_after_first_chunk)
    first_lines = out.read_text().splitlines()
    assert [json.loads(line)["problem"]["id"] for line in first_lines] == ["p0", "p1"]
    with out.open("a") as fh:  # a write cut short by the kill
        fh.write('{"format": "pumsearch-pum-labels", "problem": {"id": "p2"')

    pol, weak, strong = generators()
    counts = await label_to_file(problems(5), [pol], [weak, strong], settings, out, chunk=2, grader=grader)
    assert counts == {"skipped": 2, "labelled": 3, "total": 5}
    asked = [r.prompt_text for call in pol.calls for r in call]
    assert not any("question 0" in a or "question 1" in a for a in asked)  # done problems not sampled again
    lines = out.read_text().splitlines()
    assert lines[:2] == first_lines
    ids = [r["problem"]["id"] for r in read_records(out)]
    assert sorted(ids) == ["p0", "p1", "p2", "p3", "p4"]

    uninterrupted = tmp_path / "straight.jsonl"
    pol, weak, strong = generators()
    await label_to_file(problems(5), [pol], [weak, strong], settings, uninterrupted, chunk=5, grader=grader)

    def by_id(records: list[dict]) -> list[dict]:
        return sorted(records, key=lambda r: r["problem"]["id"])

    assert by_id(read_records(out)) == by_id(read_records(uninterrupted))  # per-problem seeds: same labels

    pol, weak, strong = generators()
    again = await label_to_file(problems(5), [pol], [weak, strong], settings, out, grader=grader)
    assert again["labelled"] == 0 and pol.calls == []
    with pytest.raises(LabelError, match="other settings"):
        await label_to_file(problems(5), [pol], [weak, strong], LabelSettings(rollouts=3), out, grader=grader)


async def test_labels_need_reference_answers_and_models(grader: Grader) -> None:
    pol, weak, _ = generators()
    with pytest.raises(LabelError, match="reference answer"):
        await label_problems([Problem("x", "no answer")], [pol], [weak], LabelSettings(), grader=grader)
    with pytest.raises(LabelError, match="student"):
        await label_problems(problems(1), [pol], [], LabelSettings(), grader=grader)
    with pytest.raises(LabelError, match="standardise"):
        LabelSettings(standardise="global")


async def test_labelling_a_real_tiny_model_cuts_by_token_ids(tiny_llama_dir: Path, grader: Grader) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from pumsearch.backends.transformers_backend import TransformersGenerator

    gen = TransformersGenerator.load(str(tiny_llama_dir))
    calls: list[tuple[list, list]] = []
    original = gen.generate

    async def recording(requests):  # keep what was asked and what came back
        outputs = await original(requests)
        calls.append((list(requests), outputs))
        return outputs

    gen.generate = recording  # type: ignore[method-assign]
    settings = LabelSettings(trajectories=2, cut_lengths=(3, 6), rollouts=2, max_tokens=10, include_complete=False)
    (record,) = await label_problems([Problem("t", "What is 2 + 3?", "5")], [gen], [gen], settings, grader=grader)
    (sampling, trajectories), (rollout_requests, _) = calls
    prompt_ids = list(sampling[0].prompt_ids)
    eos = set(gen.eos_ids)
    content = [[t for t in c.token_ids if t not in eos] for c in trajectories[0].completions]
    expected = [(i, n) for i, ids in enumerate(content) for n in (3, 6) if n < len(ids)]
    assert expected  # the random model writes more than three tokens here
    assert [(p["trajectory"], p["length"]) for p in record["prefixes"]] == expected
    assert rollout_requests[0].prompt_ids == tuple(prompt_ids)  # the empty prefix first
    for p, request in zip(record["prefixes"], rollout_requests[1:], strict=True):
        ids = content[p["trajectory"]][: p["length"]]
        assert p["text"] == gen.tokenizer.decode(ids, skip_special_tokens=True)
        assert list(request.prompt_ids) == prompt_ids + ids  # continued from exactly those tokens
        assert request.n == 2 and all(0.0 <= r <= 1.0 for r in p["solve_rates"])
    assert record["cost"]["students"][0]["rollouts"] == 2 * (1 + len(record["prefixes"]))
