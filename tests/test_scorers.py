"""The scorer family: expected scores computed independently (literal inputs, positions found by
hand, a forward of the saved checkpoint, softmax) against each scorer's output; padding, tag
placement, aggregation, the shared wrapper (dedup, cache, OOM halving) and bad input."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from pumsearch.scorers import BatchedScorer, ScorerError, load_scorer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.search.selection import aggregate_steps
from tests.tiny_models import SYSTEM, build_qwen_prm, build_shepherd, qwen_prm_class

torch.set_num_threads(1)
PROBLEM = Problem("p1", "What is 2 + 3 ?", "5")
STEPS = ("First add 2 and 3 .", "So the answer is 5 .")
ITEM = ScoreItem(PROBLEM, STEPS)


@pytest.fixture(scope="module")
def ckpts(scorer_checkpoints: dict[str, Path]) -> dict[str, Path]:
    return scorer_checkpoints


def run(coro):
    return asyncio.run(coro)


def load(kind: str, ckpts: dict[str, Path], **options: object) -> BatchedScorer:
    if kind in ("qwen", "shepherd", "rlhflow"):
        return load_scorer("prm", model=str(ckpts[kind]), prm_format=kind, **options)
    return load_scorer(kind, model=str(ckpts[kind]), **options)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# -- expected values, computed without the scorer's code ------------------------------------------
QWEN_TEXT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3 ?<|im_end|>\n"
    "<|im_start|>assistant\nFirst add 2 and 3 .<extra_0>So the answer is 5 .<extra_0><|im_end|>\n"
)
SHEPHERD_TEXT = "What is 2 + 3 ? First add 2 and 3 . ки\nSo the answer is 5 . ки"
RLHFLOW_TEXT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3 ? First add 2 and 3 ."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nSo the answer is 5 .<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
)
ORM_TEXT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3 ?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nFirst add 2 and 3 .\n\nSo the answer is 5 .<|eot_id|>"
)
PUM_TEXT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3 ?<|im_end|>\n"
    "<|im_start|>assistant\nFirst add 2 and 3 .\n\nSo the answer is 5 ."
)


def expected_qwen(path: Path) -> tuple[list[int], list[int], list[float]]:
    tok = tokenizer_of(path)
    ids = tok(QWEN_TEXT, add_special_tokens=False)["input_ids"]
    tag = tok.convert_tokens_to_ids("<extra_0>")
    positions = [i for i, t in enumerate(ids) if t == tag]
    model = qwen_prm_class().from_pretrained(str(path)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, positions]
    return ids, positions, torch.softmax(logits, -1)[:, 1].tolist()


def expected_plus_minus(path: Path, ids: list[int], read_at: list[int], plus: int, minus: int) -> list[float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, read_at][:, [plus, minus]]
    return torch.softmax(logits, -1)[:, 0].tolist()


def test_qwen_prm_matches_independent_forward(ckpts: dict[str, Path]) -> None:
    assert (ckpts["qwen"] / "model.safetensors.index.json").exists()  # sharded, like the real one
    ids, positions, expected = expected_qwen(ckpts["qwen"])
    assert len(positions) == 2
    scorer = load("qwen", ckpts)
    assert scorer.inner.encode(ITEM).ids == ids and scorer.inner.encode(ITEM).read_at == positions
    (score,) = run(scorer.score([ITEM]))
    assert score.step_values == pytest.approx(expected, abs=1e-5)
    assert score.value == pytest.approx(expected[-1], abs=1e-5)
    assert scorer.identity == f"prm:qwen:{ckpts['qwen']}"


def test_shepherd_prm_matches_independent_forward(ckpts: dict[str, Path]) -> None:
    tok = tokenizer_of(ckpts["shepherd"])
    ids = tok.encode(SHEPHERD_TEXT)  # with BOS, as the model card encodes
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    tag = tok.encode("ки")[-1]
    plus, minus = tok.encode("+ -")[1:]
    positions = [i for i, t in enumerate(ids) if t == tag]
    assert len(positions) == 2
    expected = expected_plus_minus(ckpts["shepherd"], ids, positions, plus, minus)
    scorer = load("shepherd", ckpts)
    assert scorer.inner.encode(ITEM).ids == ids
    (score,) = run(scorer.score([ITEM]))
    assert score.step_values == pytest.approx(expected, abs=1e-5)


def test_rlhflow_prm_matches_independent_forward(ckpts: dict[str, Path]) -> None:
    tok = tokenizer_of(ckpts["rlhflow"])
    ids = tok(RLHFLOW_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    plus, minus, eot = tok.encode("+")[-1], tok.encode("-")[-1], tok.convert_tokens_to_ids("<|eot_id|>")
    # the assistant "+" is the one right before an end-of-turn; its logits come one position earlier
    read_at = [i - 1 for i, t in enumerate(ids[:-1]) if t == plus and ids[i + 1] == eot]
    assert len(read_at) == 2
    expected = expected_plus_minus(ckpts["rlhflow"], ids, read_at, plus, minus)
    scorer = load("rlhflow", ckpts)
    assert scorer.inner.encode(ITEM).ids == ids
    (score,) = run(scorer.score([ITEM]))
    assert score.step_values == pytest.approx(expected, abs=1e-5)


def test_rlhflow_tags_ignore_plus_inside_a_step(ckpts: dict[str, Path]) -> None:
    scorer = load("rlhflow", ckpts)
    tok = scorer.inner.tokenizer
    item = ScoreItem(PROBLEM, ("First add 2 + 3 .", "So the answer is 5 ."))
    enc = scorer.inner.encode(item)
    plus = tok.encode("+")[-1]
    assert sum(t == plus for t in enc.ids) == 4  # in the question, in the step, two assistant turns
    assert [enc.ids[p + 1] for p in enc.read_at] == [plus, plus]
    assert all(enc.ids[p + 2] == tok.convert_tokens_to_ids("<|eot_id|>") for p in enc.read_at)


def test_orm_matches_independent_forward(ckpts: dict[str, Path]) -> None:
    from transformers import AutoModelForSequenceClassification

    tok = tokenizer_of(ckpts["orm"])
    ids = tok(ORM_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    model = AutoModelForSequenceClassification.from_pretrained(str(ckpts["orm"])).eval()
    with torch.no_grad():
        expected = float(model(torch.tensor([ids])).logits[0, 0])
    scorer = load("orm", ckpts)
    (score,) = run(scorer.score([ScoreItem(PROBLEM, STEPS, complete=True)]))
    assert score.value == pytest.approx(expected, abs=1e-5)
    assert scorer.value_kind == "unbounded"


def expected_pum(ckpts: dict[str, Path], activation: str = "relu", lora: bool = True) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = tokenizer_of(ckpts["pum"])
    ids = tok(PUM_TEXT, add_special_tokens=False)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(str(ckpts["base"]))
    model = PeftModel.from_pretrained(base, str(ckpts["pum"] / "backbone")).eval() if lora else base.eval()
    head = torch.load(ckpts["pum"] / "value_head.pt", weights_only=True)
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
        act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}[activation]
        hidden = act(h @ head["0.weight"].T + head["0.bias"])
        return float(hidden @ head["2.weight"].T + head["2.bias"])


def test_pum_matches_independent_forward(ckpts: dict[str, Path]) -> None:
    expected = expected_pum(ckpts)
    scorer = load("pum", ckpts)
    (score,) = run(scorer.score([ITEM]))
    assert score.value == pytest.approx(expected, abs=1e-4)
    assert score.step_values is None and scorer.value_kind == "unbounded"
    assert scorer.identity == f"pum:{ckpts['pum']}"
    unmerged = load("pum", ckpts, merge=False)
    assert run(unmerged.score([ITEM]))[0].value == pytest.approx(expected, abs=1e-5)


def test_pum_adapter_matters_and_activation_from_model_args(ckpts: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "pum"
    shutil.copytree(ckpts["pum"], ckpt)
    (ckpt / "model_args.json").write_text(json.dumps({"value_head_activation": "gelu"}))
    local = {**ckpts, "pum": ckpt}
    with_gelu = run(load("pum", local).score([ITEM]))[0].value
    assert with_gelu == pytest.approx(expected_pum(local, "gelu"), abs=1e-4)
    assert with_gelu != pytest.approx(expected_pum(local, "relu"), abs=1e-4)
    assert with_gelu != pytest.approx(expected_pum(local, "gelu", lora=False), abs=1e-4)  # the adapter counts
    overridden = run(load("pum", local, activation="relu").score([ITEM]))[0].value
    assert overridden == pytest.approx(expected_pum(local, "relu"), abs=1e-4)


def test_pum_read_offset_moves_the_read_position(ckpts: dict[str, Path]) -> None:
    scorer = load("pum", ckpts, read_offset=1)
    enc = scorer.inner.encode(ITEM)
    assert enc.read_at == [len(enc.ids) - 2]


# -- padding must not leak; tag placement; aggregation ---------------------------------------------
@pytest.mark.parametrize("kind", ["qwen", "shepherd", "rlhflow", "orm", "pum"])
def test_batch_mates_do_not_change_a_score(kind: str, ckpts: dict[str, Path]) -> None:
    scorer = load(kind, ckpts)
    short = ScoreItem(PROBLEM, ("good",))
    long = ScoreItem(
        Problem("p2", "What is 7 - 4 ?", "3"),
        (
            "Then subtract 4 from 7 to get 3 .",
            "A much longer step that talks about many things and keeps going on .",
            "We check it twice , and it holds .",
        ),
    )
    (alone,) = run(scorer.score([ITEM]))
    scorer._cache.clear()
    calls = scorer.stats.calls
    together = run(scorer.score([short, long, ITEM]))
    assert scorer.stats.calls == calls + 1  # one padded micro-batch held all three
    assert together[2].value == pytest.approx(alone.value, abs=1e-5)
    if alone.step_values is not None:
        assert together[2].step_values == pytest.approx(alone.step_values, abs=1e-5)


@pytest.mark.parametrize("kind", ["qwen", "shepherd"])
def test_one_tag_per_step_at_the_end_of_each_step(kind: str, ckpts: dict[str, Path]) -> None:
    scorer = load(kind, ckpts)
    tok = scorer.inner.tokenizer
    steps = ("step one", "step two", "step three")
    enc = scorer.inner.encode(ScoreItem(PROBLEM, steps))
    assert len(enc.read_at) == 3 and all(enc.ids[p] == scorer.inner.tag_id for p in enc.read_at)
    if kind == "qwen":  # byte-level BPE: the text between two tags decodes to exactly the step
        starts = [enc.read_at[0] - len(tok.encode("step one", add_special_tokens=False)), *enc.read_at[:-1]]
        bounds = enumerate(zip(starts, enc.read_at, strict=True))
        spans = [tok.decode(enc.ids[a + 1 if i else a : b]) for i, (a, b) in bounds]
        assert spans == list(steps)
    else:  # each tag right after its step's last word
        before = [tok.convert_ids_to_tokens(enc.ids[p - 1]).lstrip("▁") for p in enc.read_at]
        assert before == ["one", "two", "three"]


def test_aggregation_of_prm_step_values(ckpts: dict[str, Path]) -> None:
    (score,) = run(load("qwen", ckpts).score([ScoreItem(PROBLEM, ("step one", "step two", "step three"))]))
    v = score.step_values
    assert v is not None and len(v) == 3
    assert aggregate_steps(v, score.value, "last") == v[2] == score.value
    assert aggregate_steps(v, score.value, "min") == min(v)
    assert aggregate_steps(v, score.value, "prod") == pytest.approx(v[0] * v[1] * v[2])
    assert aggregate_steps(v, score.value, "mean") == pytest.approx((v[0] + v[1] + v[2]) / 3)


# -- the wrapper ----------------------------------------------------------------------------------
class CountingScorer:
    """A test double for the wrapper's own logic: value = number of words; records every forward."""

    identity = "count"
    value_kind = "unbounded"
    needs_reference = False

    def __init__(self, oom_above: int | None = None, cuda_message: bool = False) -> None:
        self.forwards: list[int] = []
        self.oom_above = oom_above
        self.cuda_message = cuda_message

    def count_tokens(self, item: ScoreItem) -> int:
        return sum(len(s.split()) for s in item.steps) + 1

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        if self.oom_above is not None and len(items) > self.oom_above:
            if self.cuda_message:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise torch.OutOfMemoryError("simulated")
        self.forwards.append(len(items))
        return [Score(float(self.count_tokens(i))) for i in items]

    def close(self) -> None:
        pass


def items_of(*lengths: int) -> list[ScoreItem]:
    return [ScoreItem(PROBLEM, (" ".join(["w"] * n),)) for n in lengths]


def test_dedup_and_cache_second_call_costs_no_forward() -> None:
    inner = CountingScorer()
    scorer = BatchedScorer(inner)
    batch = items_of(3, 1, 3, 5)  # two identical prefixes
    first = run(scorer.score(batch))
    assert sum(inner.forwards) == 3
    assert [s.value for s in first] == [4.0, 2.0, 4.0, 6.0]
    assert [s.extra["cache_hit"] for s in first] == [False, False, True, False]
    assert first[2].extra["tokens"] == 0 and first[0].extra["tokens"] == 4
    second = run(scorer.score(batch))
    assert sum(inner.forwards) == 3  # no new forward
    assert all(s.extra["cache_hit"] for s in second) and [s.value for s in second] == [4.0, 2.0, 4.0, 6.0]
    assert scorer.stats.cache_hits == 5 and scorer.stats.requested == 8
    other_question = ScoreItem(Problem("p9", "What is 7 - 4 ?", "3"), batch[0].steps)
    run(scorer.score([other_question]))
    assert sum(inner.forwards) == 4  # the key includes the question


@pytest.mark.parametrize("cuda_message", [False, True])
def test_out_of_memory_halves_the_batch(cuda_message: bool) -> None:
    inner = CountingScorer(oom_above=2, cuda_message=cuda_message)
    scorer = BatchedScorer(inner)
    batch = items_of(1, 2, 3, 4, 5, 6, 7)
    scores = run(scorer.score(batch))
    assert [s.value for s in scores] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert max(inner.forwards) <= 2 and sum(inner.forwards) == 7
    assert scorer.stats.oom_splits >= 2


def test_other_errors_are_not_retried() -> None:
    class Broken(CountingScorer):
        def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run(BatchedScorer(Broken()).score(items_of(1, 2)))


def test_micro_batches_are_length_sorted_and_within_budget() -> None:
    inner = CountingScorer()
    scorer = BatchedScorer(inner, batch_tokens=20)
    seen: list[list[int]] = []
    original = inner.score_batch

    def spy(items: Sequence[ScoreItem]) -> list[Score]:
        seen.append([inner.count_tokens(i) for i in items])
        return original(items)

    inner.score_batch = spy  # type: ignore[method-assign]
    run(scorer.score(items_of(9, 1, 5, 2, 7, 3)))
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(flat)
    assert all(len(b) * max(b) <= 20 for b in seen)


# -- bad input ------------------------------------------------------------------------------------
def test_pum_missing_files_are_named(ckpts: dict[str, Path], tmp_path: Path) -> None:
    no_head = tmp_path / "a"
    shutil.copytree(ckpts["pum"], no_head)
    (no_head / "value_head.pt").unlink()
    with pytest.raises(ScorerError, match=re.escape("value_head.pt")):
        load_scorer("pum", model=str(no_head))
    no_adapter = tmp_path / "b"
    shutil.copytree(ckpts["pum"], no_adapter)
    (no_adapter / "backbone" / "adapter_config.json").unlink()
    with pytest.raises(ScorerError, match=re.escape("adapter_config.json")):
        load_scorer("pum", model=str(no_adapter))
    no_weights = tmp_path / "c"
    shutil.copytree(ckpts["pum"], no_weights)
    (no_weights / "backbone" / "adapter_model.safetensors").unlink()
    with pytest.raises(ScorerError, match=re.escape("adapter_model.safetensors")):
        load_scorer("pum", model=str(no_weights))


def test_pum_head_that_does_not_fit_the_base(ckpts: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "pum"
    shutil.copytree(ckpts["pum"], ckpt)
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(48, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).state_dict(),
        ckpt / "value_head.pt",
    )
    with pytest.raises(ScorerError, match=r"value_head.pt.*do not fit.*hidden size 32"):
        load_scorer("pum", model=str(ckpt))
    torch.save(torch.nn.Linear(32, 1), ckpt / "value_head.pt")  # a pickled module, not a state dict
    with pytest.raises(ScorerError, match="weights_only"):
        load_scorer("pum", model=str(ckpt))


def test_prm_tokenizer_without_its_tag(tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match="<extra_0>"):
        load_scorer(
            "prm", model=str(build_qwen_prm(tmp_path, with_tag=False, shard=False)), prm_format="qwen"
        )
    with pytest.raises(ScorerError, match="ки"):
        load_scorer("prm", model=str(build_shepherd(tmp_path, with_tag=False)), prm_format="shepherd")


def test_bad_options_and_empty_steps(ckpts: dict[str, Path]) -> None:
    with pytest.raises(ScorerError, match="prm-format"):
        load_scorer("prm", model=str(ckpts["qwen"]), prm_format="llama")
    with pytest.raises(ScorerError, match="no option prm_format"):
        load_scorer("pum", model=str(ckpts["pum"]), prm_format="qwen")
    with pytest.raises(ScorerError, match="--scorer-model"):
        load_scorer("orm")
    with pytest.raises(ScorerError, match="at least one step"):
        run(load("qwen", ckpts).score([ScoreItem(PROBLEM, ())]))


def test_reference_answer_required() -> None:
    from pumsearch.backends.scripted import ScriptedGenerator

    no_answer = ScoreItem(Problem("p", "What is 2 + 3 ?"), ("The answer is \\boxed{5} .",), complete=True)
    with pytest.raises(ScorerError, match="reference answer"):
        run(load_scorer("verifier").score([no_answer]))
    with pytest.raises(ScorerError, match="reference answer"):
        run(load_scorer("rollout", students=[ScriptedGenerator()]).score([no_answer]))
    with pytest.raises(ScorerError, match="student models"):
        load_scorer("rollout")


# -- rollout gain -----------------------------------------------------------------------------------
def answering(empty_answer: str):
    """A scripted student: after a step saying 'good' it answers 5, after 'bad' 7, from the empty
    prefix ``empty_answer``."""

    def policy(question: str, done: tuple[str, ...], rng: object) -> str:
        text = " ".join(done)
        answer = "5" if "good" in text else "7" if "bad" in text else empty_answer
        return f"Then we finish .\n\nThe answer is \\boxed{{{answer}}} ."

    return policy


def test_rollout_gain_per_student_and_baseline_cached() -> None:
    from pumsearch.backends.scripted import ScriptedGenerator

    weak = ScriptedGenerator(answering("7"), name="weak")  # never solves from scratch
    strong = ScriptedGenerator(answering("5"), name="strong")  # always solves from scratch
    scorer = load_scorer("rollout", students=[weak, strong], k=3, max_tokens=64)
    good, bad = ScoreItem(PROBLEM, ("good step",)), ScoreItem(PROBLEM, ("bad step",))
    done = ScoreItem(PROBLEM, ("good step", "The answer is \\boxed{5} ."), complete=True)
    scores = run(scorer.score([good, bad, done]))
    # weak: gain 1 - 0 after 'good', 0 - 0 after 'bad'; strong: 1 - 1 and 0 - 1
    assert [s.value for s in scores] == [pytest.approx(0.5), pytest.approx(-0.5), pytest.approx(0.5)]
    per = scores[1].extra["students"]
    assert [(p["student"], p["solve_rate"], p["baseline"], p["gain"]) for p in per] == [
        ("weak", 0.0, 0.0, 0.0),
        ("strong", 0.0, 1.0, -1.0),
    ]
    assert all(r.n == 3 for r in weak.calls[0])
    prompts = [r.prompt_text for r in weak.calls[0]]
    assert len(prompts) == 3  # good, bad and the empty prefix; the complete one needs no rollouts
    assert prompts[0].endswith("good step\n\n") and prompts[2].endswith("</question>\n")
    run(scorer.score([ScoreItem(PROBLEM, ("good step", "more"))]))
    assert [r.prompt_text.endswith("more\n\n") for r in weak.calls[1]] == [True]  # baseline not redone
    assert scorer.needs_reference and scorer.value_kind == "unbounded"
