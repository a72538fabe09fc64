"""Tiny, randomly initialised checkpoints laid out like the real scorer checkpoints.

Each builder writes a directory with save_pretrained (and torch.save for the PUM value head) that
the scorer loaders read exactly as they would read the real model. Tokenizers are real
``tokenizers`` WordLevel models over the words the tests use, with the real special tokens and
chat templates of each family; tests look every id up from the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CORPUS = [
    SYSTEM,
    "system user assistant",
    "What is 2 + 3 ?",
    "What is 7 - 4 ?",
    "First add 2 and 3 .",
    "So the answer is 5 .",
    "The answer is \\boxed{5} .",
    "Then subtract 4 from 7 to get 3 .",
    "We check it twice , and it holds .",
    "A much longer step that talks about many things and keeps going on .",
    "good bad step one two three four",
    "+ - ки",
    "\n",
    "\n\n",
]
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def build_tokenizer(
    *,
    special: list[str],
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str | None,
    metaspace: bool = False,
    drop: Iterable[str] = (),
    corpus: Iterable[str] = CORPUS,
) -> Any:
    """A WordLevel tokenizer over the words of ``corpus`` (minus ``drop``), with ``special`` added."""
    if metaspace:  # sentencepiece-like (Mistral): words carry a leading "▁"; newlines split off
        pre = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), "isolated"),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            ]
        )
    else:  # runs of whitespace, words and single punctuation marks are each one token
        pre = pre_tokenizers.Split(Regex(r"\s+|\w+|[^\w\s]"), "isolated")
    words: dict[str, int] = {"<unk>": 0}
    if bos:
        words[bos] = len(words)
    for text in corpus:
        for piece, _ in pre.pre_tokenize_str(text):
            bare = piece.lstrip("▁")
            if bare in drop:
                continue
            # a sentencepiece vocabulary has words with and without the leading "▁"
            for form in [bare, "▁" + bare] if metaspace and bare else [piece]:
                words.setdefault(form, len(words))
    model = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    model.pre_tokenizer = pre
    if metaspace and bos:  # Mistral's tokenizer puts <s> in front of every encoding
        model.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, words[bos])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="<unk>", bos_token=bos, eos_token=eos, pad_token=pad
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def chatml_tokenizer(*, with_tag: bool = True) -> Any:
    """A Qwen-style byte-level BPE (every byte a token, no merges: Qwen2Tokenizer rebuilds it from
    vocab and merges exactly), with Qwen's special tokens and ChatML template."""
    from tokenizers import decoders

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    model = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    model.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<extra_0>"] if with_tag else [])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.chat_template = CHATML
    return tokenizer


def llama3_tokenizer() -> Any:
    return build_tokenizer(
        special=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        chat_template=LLAMA3,
    )


def mistral_tokenizer(*, with_tag: bool = True) -> Any:
    return build_tokenizer(
        special=[],
        bos="<s>",
        eos="</s>",
        pad="</s>",
        chat_template=None,
        metaspace=True,
        drop=() if with_tag else ("ки",),
    )


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def build_pum(
    root: Path,
    *,
    seed: int = 0,
    head_sizes: tuple[int, ...] = (16,),
    model_args: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """A PUM checkpoint: tiny Qwen3 base in ``root/base``; ``root/pum`` holds backbone/ (a random
    LoRA adapter saved by peft), value_head.pt (an nn.Sequential MLP's state dict), model_args.json,
    the tokenizer and its chat template. Returns (checkpoint dir, base dir)."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    _seeded(seed)
    tokenizer = chatml_tokenizer(with_tag=False)
    base_dir, ckpt = root / "base", root / "pum"
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        head_dim=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **TINY,
    )
    Qwen3ForCausalLM(config).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base = Qwen3ForCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(ckpt / "backbone")
    layers: list[torch.nn.Module] = []
    width = config.hidden_size
    for size in (*head_sizes, 1):
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    torch.save(torch.nn.Sequential(*layers[:-1]).state_dict(), ckpt / "value_head.pt")
    (ckpt / "model_args.json").write_text(json.dumps(model_args or {"model_name_or_path": str(base_dir)}))
    tokenizer.save_pretrained(ckpt)
    return ckpt, base_dir


def qwen_prm_class() -> Any:
    """A stand-in for the hub's remote-code class, used only to *write* a checkpoint with its
    state-dict names (model.* and score.0/score.2) and to compute expected values in tests."""
    from transformers import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            h = config.hidden_size
            self.score = torch.nn.Sequential(
                torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, config.num_labels)
            )
            self.post_init()

        def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.score(hidden)

    return Qwen2ForProcessRewardModel


def build_qwen_prm(root: Path, *, seed: int = 1, with_tag: bool = True, shard: bool = True) -> Path:
    from transformers import Qwen2Config

    _seeded(seed)
    tokenizer = chatml_tokenizer(with_tag=with_tag)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Qwen2ForProcessRewardModel"],
        **TINY,
    )
    model = qwen_prm_class()(config)
    with torch.no_grad():  # make the head's two classes differ clearly
        for p in model.score.parameters():
            p.normal_(0, 0.5)
    out = root / "qwen-prm"
    model.save_pretrained(out, max_shard_size="40KB" if shard else "10GB")
    tokenizer.save_pretrained(out)
    return out


def build_shepherd(root: Path, *, seed: int = 2, with_tag: bool = True) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    _seeded(seed)
    tokenizer = mistral_tokenizer(with_tag=with_tag)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        head_dim=8,
        **TINY,
    )
    out = root / "shepherd"
    MistralForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_rlhflow(root: Path, *, seed: int = 3) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    _seeded(seed)
    tokenizer = llama3_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY,
    )
    out = root / "rlhflow"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_orm(root: Path, *, seed: int = 4) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    _seeded(seed)
    tokenizer = llama3_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY,
    )
    out = root / "orm"
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
