"""Tiny randomly initialised models of real architectures, built from configs (no downloads).

The tokenizer is a real byte-level BPE trained on a few lines with the `tokenizers` library,
wrapped in PreTrainedTokenizerFast, with ChatML special tokens and a chat template.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Natalia sold 48 clips in April and half as many in May. How many altogether?",
    "Step 1: 48 / 2 = 24.\n\nStep 2: 48 + 24 = 72.\n\nThe answer is \\boxed{72}.",
    "Solve the problem step by step. Separate the steps with a blank line.",
    "put your final answer within \\boxed{}. What is 2 + 3? 2 + 3 = 5.",
    "start 7, add 5, times 3, subtract 4. 7 + 5 = 12\n\n12 * 3 = 36\n\n36 - 4 = 32",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 +-*/=(){}[]\\.,:;?!$#'\"",
]


def build_tokenizer(vocab_size: int = 400, chat_template: str | None = CHATML_TEMPLATE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", chat_template=chat_template
    )


def build_tiny_causal_lm(
    directory: Path, arch: str = "llama", *, seed: int = 0, chat_template: str | None = CHATML_TEMPLATE
) -> Path:
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer = build_tokenizer(chat_template=chat_template)
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }
    config_cls, model_cls = classes[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # larger logits than the default init, so samples differ across seeds
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
