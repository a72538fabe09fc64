"""Tiny, randomly initialised real models for tests: a Llama with a small real tokenizer.

``build_tiny_llama(dir)`` writes a checkpoint laid out like a hub model (config.json, safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja) that
``TransformersGenerator.load`` (and any ``from_pretrained``) reads. The tokenizer is a WordLevel
model over a small vocabulary, split on whitespace, with ChatML special tokens and a ChatML chat
template. Its vocabulary holds several tokens that contain the step delimiter "\\n\\n" and one
``\\boxed{}`` answer token, so a random model writes multi-step solutions that sometimes end:
near-uniform sampling over ~30 tokens gives steps of ~5 tokens and a few steps per solution.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<unk>", "<|im_start|>", "<|im_end|>")

DEFAULT_WORDS = (
    "system", "user", "assistant", "Step", "we", "add", "take", "the", "sum", "is", "of", "and",
    "1", "2", "3", "4", "5", "6", "+", "=", "x",
    "\n\n", ".\n\n", ",\n\n", ";\n\n",  # a step ends after any of these
    "\\boxed{4}",  # a final answer
)


def build_tiny_tokenizer(words: Sequence[str] = DEFAULT_WORDS):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *words]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_llama(directory: str | Path, *, seed: int = 0, words: Sequence[str] = DEFAULT_WORDS,
                     hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a random LlamaForCausalLM and its tokenizer to ``directory``; returns the path."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(words)
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
