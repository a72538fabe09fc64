"""The recipes of docs/architecture.md, followed step by step: a new strategy, a new backend and a
new PRM format are written and registered exactly as the recipes say, then used through the library
and the command line."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from typer.testing import CliRunner

from pumsearch import (
    ROOT,
    Problem,
    SearchContext,
    SearchResult,
    Strategy,
    StrategyError,
    StrategySettings,
    asearch,
    load_generator,
    load_scorer,
    search_config,
)
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.cli import app
from pumsearch.registry import BACKENDS, register_backend
from pumsearch.scorers.hf import Encoded, encode_with_offsets, load_backbone, tag_token_positions
from pumsearch.scorers.prm import PRM_FORMATS, PlusMinusPRM, register_prm_format, without_bos
from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest, ScoreItem
from pumsearch.search.tree import load_tree
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_search import depth_policy, scripted_scorer

runner = CliRunner()


# -- recipe: a strategy -----------------------------------------------------------------------------
@dataclass(frozen=True)
class KeepBestSettings(StrategySettings):
    """Step 1: the strategy's settings, one field each, with a default and a help text."""

    keep: int = field(default=1, metadata={"help": "First steps finished to the end."})


class KeepBest(Strategy):
    """Step 2: declarations. Step 3: the search, one expand and one score per round: --budget first
    steps, scored; the best ``keep`` of them finished to the end, scored; pick among those."""

    name: ClassVar[str] = "keep-best"
    requires_scorer: ClassVar[bool] = True
    Settings = KeepBestSettings
    settings: KeepBestSettings
    node_defaults: ClassVar[Mapping[str, Any]] = types.MappingProxyType({"kept": False})

    def budget_limit(self) -> int:
        return self.config.budget + self.settings.keep  # first steps, then one finish per kept step

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        if not 1 <= self.settings.keep <= self.config.budget:
            raise StrategyError(f"keep must be in 1..--budget ({self.config.budget}), not {self.settings.keep}")

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        (firsts,) = await ctx.expand([ROOT], self.config.budget)
        await ctx.score(firsts)
        kept = sorted(firsts, key=lambda n: ctx.node_score(n) or 0.0, reverse=True)[: self.settings.keep]
        for node in kept:
            ctx.tree[node]["kept"] = True
        finished = [n for ends in await ctx.expand(kept, 1, until="end") for n in ends]
        await ctx.score(finished)
        return await ctx.finish(ctx.candidates(finished))


KEEP_BEST = "tests.test_recipes:KeepBest"  # step 4: importable as package.module:ClassName


def test_a_strategy_runs_through_the_library_with_every_round_batched() -> None:
    config = search_config(strategy=KEEP_BEST, budget=4, keep=2, max_tokens=64)  # its setting as a keyword
    assert config.strategy_options == {"keep": 2}
    generator = ScriptedGenerator(depth_policy(3))  # step 5: the scripted backend
    scorer = scripted_scorer()
    problems = [Problem(f"p{i}", f"question {i}") for i in range(3)]
    results = asyncio.run(asearch(problems, generator=generator, scorer=scorer, config=config))
    # two rounds, each one backend call and one scorer call holding every problem's prefixes
    assert [len(call) for call in generator.calls] == [3, 6]
    assert [len(batch) for batch in scorer.inner.batches] == [12, 6]
    for result in results:
        assert isinstance(result, SearchResult) and result.summary()["strategy"] == "keep-best"
        tree = result.tree
        firsts = tree.children(ROOT)
        kept = [n for n in firsts if tree[n]["kept"]]
        assert len(firsts) == 4 and len(kept) == 2  # every node carries the declared attribute
        best = sorted(firsts, key=lambda n: tree[n]["scores"]["scripted"], reverse=True)[:2]
        assert sorted(kept) == sorted(best)
        assert all(tree.children(n) for n in kept) and not any(tree.children(n) for n in firsts if n not in kept)
        assert {c.node for c in result.candidates} == {n for k in kept for n in tree.children(k)}


def test_a_strategy_runs_from_the_command_line_with_its_setting(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    out = tmp_path / "run"
    args = ["run", "--backend", "scripted", "--dataset", str(data), "--scorer", "verifier", "--budget", "3",
            "--strategy", KEEP_BEST, "--max-tokens", "64", "--out", str(out)]
    ran = runner.invoke(app, [*args, "--strategy-option", "keep=2"])
    assert ran.exit_code == 0, ran.output
    assert json.loads((out / "config.json").read_text())["search"]["extra"] == {"keep": 2}
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["strategy"] == "keep-best"
        tree, _ = load_tree(out / record["tree_file"])
        assert len(tree.children(ROOT)) == 3 and sum(tree[n]["kept"] for n in tree.children(ROOT)) == 2
    for bad, message in ((["--strategy-option", "keep=5"], "keep must be in 1..--budget (3), not 5"),
                         (["--strategy-option", "width=2"], "strategy 'keep-best' has no setting 'width'")):
        refused = runner.invoke(app, [*args, *bad, "--out", str(tmp_path / "refused")])
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
        lines = [line for line in refused.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], refused.output
    # with no scorer named, a custom strategy that needs one (never measured with the confidence scorer)
    # runs as Best-of-N majority and says so (pumsearch.api.search_default; make_strategy still refuses)
    no_scorer = [a for a in args if a not in ("--scorer", "verifier")]
    fallback = runner.invoke(app, [*no_scorer, "--out", str(tmp_path / "fallback")])
    assert fallback.exit_code == 0 and "keep-best needs one" in " ".join(fallback.output.split()), fallback.output
    assert json.loads((tmp_path / "fallback" / "config.json").read_text())["search"]["strategy"] == "bon"


# -- recipe: a backend ------------------------------------------------------------------------------
class CannedGenerator:
    """Step 1: a class with the Generator protocol's members. Every sample is the same answer."""

    takes_token_ids = False

    def __init__(self, answer: str, name: str) -> None:
        self.answer = answer
        self.name = name
        self.requests: list[GenerationRequest] = []

    def chat_prompt(self, question: str, system_prompt: str | None) -> tuple[str, tuple[int, ...] | None]:
        return f"{system_prompt or ''}\n{question}\n", None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.requests.extend(requests)
        text = f"The answer is \\boxed{{{self.answer}}}."
        return [GenerationOutput([Completion(text=text, token_ids=None, num_tokens=self.count_tokens(text),
                                             finish_reason="eos", matched_stop=None) for _ in range(r.n)],
                                 prompt_tokens=self.count_tokens(r.prompt_text) * r.n) for r in requests]

    async def aclose(self) -> None:
        pass


def load_canned(model: str | None, *, device: str, dtype: str, cache_dir: str | None, trust_remote_code: bool,
                **options: Any) -> CannedGenerator:
    """Step 2: the loader, with the keywords every backend loader takes."""
    return CannedGenerator(answer=model or "2", name=f"canned:{model or '2'}")


@pytest.fixture
def canned_backend() -> Iterator[None]:
    register_backend("canned", load_canned, help="answers every question with the model name")  # step 3
    yield
    BACKENDS.remove("canned")


def test_a_registered_backend_loads_by_name_and_runs_a_search(canned_backend: None) -> None:
    from pumsearch import SearchConfig, asearch

    generator = load_generator("4", backend="canned")
    assert isinstance(generator, CannedGenerator) and generator.name == "canned:4"
    (result,) = asyncio.run(asearch([Problem("q", "what is 2 + 2?", "4")], generator=generator,
                                    config=SearchConfig(budget=3)))
    assert result.answer == "4" and result.correct is True and len(generator.requests) == 1
    with pytest.raises(ValueError, match=r"unknown backend 'cannd': use one of transformers, .*, canned"):
        load_generator("4", backend="cannd")


def test_the_command_line_runs_a_registered_backend(canned_backend: None, tmp_path: Path) -> None:
    solved = runner.invoke(app, ["solve", "what is 2 + 2?", "--backend", "canned", "--model", "4", "--answer", "4",
                                 "--json", "--tree-out", str(tmp_path / "t.json")])
    assert solved.exit_code == 0, solved.output
    assert json.loads(solved.stdout)["correct"] is True
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2, answers=("1", "2"))
    out = tmp_path / "run"
    ran = runner.invoke(app, ["run", "--backend", "canned", "--model", "2", "--dataset", str(data), "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["prediction"] for r in records) == ["2", "2"]
    model = json.loads((out / "config.json").read_text())["model"]
    assert model == {"backend": "canned", "name": "2", "dtype": None}  # no dtype: the entry does not use one
    refused = runner.invoke(app, ["solve", "q", "--backend", "canned", "--url", "http://127.0.0.1:1"])
    assert refused.exit_code == 2 and "--url and --launch are for --backend sglang-server or openai" in refused.output


# -- recipe: a PRM format ---------------------------------------------------------------------------
class PlusAfterStepPRM(PlusMinusPRM):
    """Step 1: a PRMScorer that renders an item and says where to read. Each step is followed by
    " +"; its score is P("+") against "-" from the logits that predict that "+"."""

    fmt = "plus-after-step"

    def __init__(self, tokenizer: Any, model: Any, *, path: str) -> None:
        plus, minus = without_bos(tokenizer, tokenizer.encode("+ -"))
        self.plus_id = plus
        super().__init__(tokenizer, model, path=path, plus_minus=(plus, minus))

    def encode(self, item: ScoreItem) -> Encoded:
        text, marks = item.problem.question, []
        for step in self.steps_of(item):
            text += "\n" + step + " +"
            marks.append(len(text) - 1)
        ids, offsets = encode_with_offsets(self.tokenizer, text, add_special_tokens=True)
        at = tag_token_positions(ids, offsets, marks, self.plus_id, "+", self.where(item))
        return Encoded(ids, [p - 1 for p in at])


def load_plus_after_step(path: str, *, device: str, dtype: str, system_prompt: str | None,
                         step_joiner: str) -> PlusAfterStepPRM:
    """Step 2: the format's loader (the checkpoint directory exists; load_prm checked)."""
    tokenizer, model, _ = load_backbone(path, device=device, dtype=dtype)
    return PlusAfterStepPRM(tokenizer, model, path=path)


@pytest.fixture
def plus_format() -> Iterator[None]:
    register_prm_format("plus-after-step", load_plus_after_step, help="' +' after each step")  # step 3
    yield
    PRM_FORMATS.remove("plus-after-step")


@pytest.fixture(scope="module")
def checkpoint(scorer_checkpoints: dict[str, Path]) -> Path:
    return scorer_checkpoints["shepherd"]  # a tiny Mistral with "+" and "-" tokens


def test_a_registered_prm_format_scores_as_an_independent_forward_does(plus_format: None, checkpoint: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problem = Problem("p", "What is 2 + 3 ?")
    steps = ("First add 2 and 3 .", "So the answer is 5 .")
    scorer = load_scorer("prm", model=str(checkpoint), prm_format="plus-after-step")
    (score,) = asyncio.run(scorer.score([ScoreItem(problem, steps)]))
    assert scorer.identity == f"prm:plus-after-step:{checkpoint}"

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer.encode("What is 2 + 3 ?\nFirst add 2 and 3 . +\nSo the answer is 5 . +")
    plus, minus = tokenizer.encode("+ -")[1:]
    read_at = [i - 1 for i, t in enumerate(ids) if t == plus][-2:]  # the two step marks, not the question's "+"
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, read_at][:, [plus, minus]]
    expected = torch.softmax(logits, -1)[:, 0].tolist()
    assert score.step_values == pytest.approx(expected, abs=1e-5) and score.value == pytest.approx(expected[-1])


def test_the_score_command_takes_a_registered_prm_format(plus_format: None, checkpoint: Path, tmp_path: Path) -> None:
    steps = tmp_path / "steps.txt"
    steps.write_text("First add 2 and 3 .\n\nSo the answer is 5 .")
    result = runner.invoke(app, ["score", "--scorer", "prm", "--prm-format", "plus-after-step", "--scorer-model",
                                 str(checkpoint), "--question", "What is 2 + 3 ?", "--steps-file", str(steps),
                                 "--json"])
    assert result.exit_code == 0, result.output
    prefixes = json.loads(result.stdout)["prefixes"]
    assert len(prefixes) == 2 and all(0.0 < p["prefix_value"] < 1.0 for p in prefixes)
