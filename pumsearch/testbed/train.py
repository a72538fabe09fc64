"""Tokenizer, model and training loop for the testbed's student policies.

The tokenizer is a ``tokenizers`` WordLevel model over a fixed vocabulary: the special chat
tokens, every number 0-999 (with and without a leading space, so an arithmetic fact is a lookup
of a few tokens rather than digit-by-digit carrying, which a ~1M-parameter model learns much
faster), the words of the prompts, and every printable ASCII character as a fallback, so any ASCII
text round-trips exactly (the decoder concatenates pieces). It is saved as an ordinary
PreTrainedTokenizerFast with a chat template, so the policy loads like any transformers model.

The model is a small LlamaForCausalLM trained on gold solutions (with a few detour steps) of
train-split chains of 1-5 operations; the loss covers the assistant turn only.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pumsearch.search.config import DEFAULT_SYSTEM_PROMPT
from pumsearch.testbed.tasks import WORD_TO_SYMBOL, TaskSpec, iter_chains

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, EOS, UNK, *ROLE_TOKENS.values()]
BOXED = "\\boxed{"

# Each turn is a role token, the content and a newline; the assistant turn ends with <|end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '<|system|>' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|user|>' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|assistant|>' + message['content'] + '<|end|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)


def vocabulary_words() -> list[str]:
    import re

    words = set(re.findall(r"[A-Za-z]+", DEFAULT_SYSTEM_PROMPT)) | set(WORD_TO_SYMBOL) | {"start", "boxed"}
    words |= {"the", "answer", "is", "The", "Answer", "Question"}
    return sorted(words, key=lambda w: (-len(w), w))  # longest first: regex alternation is ordered


def build_tokenizer() -> Any:
    """The testbed tokenizer as a PreTrainedTokenizerFast (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocabulary_words()
    numbers = [str(i) for i in range(1000)]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    punct = [c for c in chars if not c.isalnum() and c not in " \n"]
    pieces = [
        *SPECIAL_TOKENS,
        BOXED,
        "\n\n",
        *words,
        *(" " + w for w in words),
        *numbers,
        *(" " + n for n in numbers),
        *(" " + p for p in punct),
        *chars,
    ]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    pattern = r"\\boxed\{|\n\n| ?(?:" + "|".join(words) + r")| ?(?:[1-9][0-9]{0,2}|0)| ?[^\sA-Za-z0-9]|[\s\S]"
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@dataclass
class PolicySize:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


SIZES = {  # architecture presets; how strong a policy gets depends as much on its training budget
    "base": PolicySize(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4),
    "small": PolicySize(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4),
}


def build_model(tokenizer: Any, size: PolicySize, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_attention_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@dataclass
class TrainSettings:
    size: str = "small"
    max_seconds: float = 900.0
    max_steps: int | None = None
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    min_ops: int = 1
    max_ops: int = 5
    detours: float = 0.1
    seed: int = 0
    threads: int = 1


def training_text(tokenizer: Any, question: str, solution: str) -> tuple[list[int], int]:
    """Token ids of one example and where the assistant turn starts (the loss starts there)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(solution, add_special_tokens=False)["input_ids"]
    return [*prompt_ids, *answer_ids, tokenizer.eos_token_id], len(prompt_ids)


def example_stream(tokenizer: Any, settings: TrainSettings) -> Iterator[tuple[list[int], int]]:
    spec = TaskSpec(
        min_ops=settings.min_ops,
        max_ops=settings.max_ops,
        split="train",
        seed=settings.seed,
        detours=settings.detours,
    )
    rng = random.Random(settings.seed)
    for chain in iter_chains(spec, unique=False):
        yield training_text(tokenizer, chain.question(), chain.solution(rng, settings.detours))


def make_batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, start) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
        attention[row, : len(ids)] = 1
    return input_ids, labels, attention


def answer_loss(model: Any, input_ids: Any, labels: Any, attention: Any) -> Any:
    """Next-token cross-entropy on the assistant turn. The output layer runs only where there is a
    target (the shared system prompt and question are a third of each sequence): cheaper on CPU."""
    import torch.nn.functional as F

    hidden = model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    return F.cross_entropy(model.lm_head(hidden[mask]).float(), targets[mask])


def learning_rate(settings: TrainSettings, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay over the run's progress (by steps or by wall time)."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    return settings.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_policy(
    out_dir: Path, settings: TrainSettings, on_progress: Callable[[float, int, float], None] | None = None
) -> dict[str, Any]:
    """Train one policy and save it (model, tokenizer, chat template, training.json) to ``out_dir``."""
    import torch

    if settings.size not in SIZES:
        raise ValueError(f"unknown policy size {settings.size!r}: use {' or '.join(SIZES)}")
    torch.set_num_threads(settings.threads)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, SIZES[settings.size], settings.seed)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=0.01, betas=(0.9, 0.98)
    )
    stream = example_stream(tokenizer, settings)
    started, step, smoothed = time.monotonic(), 0, float("nan")
    model.train()
    while True:
        elapsed = time.monotonic() - started
        progress = elapsed / settings.max_seconds
        if settings.max_steps:
            progress = max(progress, step / settings.max_steps)
        if progress >= 1.0:
            break
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(settings, step, progress)
        input_ids, labels, attention = make_batch(
            [next(stream) for _ in range(settings.batch_size)], tokenizer.pad_token_id
        )
        loss = answer_loss(model, input_ids, labels, attention)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        step += 1
        smoothed = loss.item() if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss.item()
        if on_progress is not None:
            on_progress(min(progress, 1.0), step, smoothed)
    info = {
        "settings": asdict(settings),
        "steps": step,
        "seconds": round(time.monotonic() - started, 1),
        "final_loss": round(smoothed, 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples_seen": step * settings.batch_size,
        "torch": torch.__version__,
    }
    save_policy(model, tokenizer, out_dir, info)
    return info


def save_policy(model: Any, tokenizer: Any, out_dir: Path, info: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
