"""Shared fixtures for the evaluation tests: small datasets, a tiny real Llama policy with a real
tokenizer and chat template, a second strategy that is rerun per budget, a scripted scorer."""

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

SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = [
    "system",
    "user",
    "assistant",
    "Step",
    "The",
    "answer",
    "is",
    "\\boxed{",
    "}",
    ".",
    "+",
    "=",
    "\n\n",
    *[str(d) for d in range(10)],
    "What",
    "Solve",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def write_gsm8k_style(path: Path, n: int, *, answers: Sequence[str] = ("1", "2", "3")) -> Path:
    """GSM8K-shaped rows (question, answer ending in '#### N'), no ids: ids become <stem>:<line>."""
    rows = [
        {"question": f"What is {i} + 1 ?", "answer": f"Add them.\n#### {answers[i % len(answers)]}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_tiny_llama(directory: Path) -> Path:
    """A randomly initialised Llama (2 layers, hidden 32) and a WordLevel tokenizer with a chat
    template, saved like a real checkpoint so the real loading code runs."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)  # split out of the surrounding text, as in real chat tokenizers
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    eos_id = fast.convert_tokens_to_ids("<|im_end|>")
    pad_id = fast.convert_tokens_to_ids("<pad>")
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=512,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


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
