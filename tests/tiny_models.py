"""Tiny, randomly initialised checkpoints of real layouts, and their tokenizers (no downloads).

Every checkpoint is written with ``save_pretrained`` (and ``torch.save`` for the PUM value head), so
the loaders read it exactly as they read the real model. All share one size (``TINY``: 2 layers,
hidden 32) and one ChatML template; tokenizers are real ``tokenizers`` models of each family:

- ``chat_tokenizer``: byte-level BPE with ChatML special tokens, like Qwen's and SmolLM's. With
  ``corpus`` it learns merges from it (compact prompts); without, every byte is a token, which
  ``Qwen2Tokenizer`` rebuilds exactly from vocab and merges.
- ``word_tokenizer``: a word-level vocabulary of the words of a corpus, for the layouts whose
  tests look ids up by word: ``step_tokenizer`` (a chat policy whose random model writes steps),
  ``llama3_tokenizer`` (Llama 3 header tokens), ``mistral_tokenizer`` (sentencepiece-like "▁").

Checkpoints: ``build_tiny_causal_lm`` (Llama, Qwen2, Qwen3 or Mistral with the learned BPE),
``build_step_llama`` (the step policy; it serves the loopback inference servers too),
``build_tiny_reward`` (a one-label classifier served by /classify), and the scorer layouts
``build_pum``, ``build_qwen_prm``, ``build_shepherd``, ``build_rlhflow``, ``build_orm``.
tests/conftest.py builds each once per session (``tiny_llama_dir``, ``step_llama_dir``, ...).

Migration (issue 12). tests/ is a package: import ``tests.<module>``; conftest.py no longer puts
tests/ on sys.path. Old name -> new name:

    tiny_models.build_tiny_causal_lm          -> tests.tiny_models.build_tiny_causal_lm (unchanged)
    tiny_models.build_tokenizer()             -> tests.tiny_models.chat_tokenizer(corpus=CORPUS)
    tiny_models.CHATML_TEMPLATE               -> tests.tiny_models.CHATML
    helpers_models.build_tiny_llama(dir)      -> tests.tiny_models.build_step_llama(dir); fixture step_llama_dir
    helpers_models.build_tiny_tokenizer()     -> tests.tiny_models.step_tokenizer()
    helpers_runs.build_tiny_llama(dir)        -> fixture tiny_llama_dir (build_tiny_causal_lm(dir, "llama"))
    helpers_servers.build_tiny_policy(dir)    -> tests.tiny_models.build_step_llama(dir); fixture step_llama_dir
    helpers_servers.build_tiny_reward(dir)    -> tests.tiny_models.build_tiny_reward(dir); fixture tiny_reward_dir
    helpers_servers.build_tokenizer()         -> tests.tiny_models.step_tokenizer()
    helpers_servers.tiny_llama_config(tok)    -> tests.tiny_models.tiny_config(LlamaConfig, tok)
    helpers_scorers.build_pum, build_qwen_prm, build_shepherd, build_rlhflow, build_orm, qwen_prm_class,
      SYSTEM, TINY, llama3_tokenizer, mistral_tokenizer
                                              -> tests.tiny_models.<same name>; fixture scorer_checkpoints
    helpers_scorers.chatml_tokenizer(...)     -> tests.tiny_models.chat_tokenizer(tag="<extra_0>")
    helpers_scorers.build_tokenizer(...)      -> tests.tiny_models.word_tokenizer(SCORER_CORPUS, ...)
    from helpers_search import ...            -> from tests.helpers_search import ... (so for every helpers_*)
    fixtures tiny_llama_dir, tiny_qwen2_dir, embedded_model_dir: unchanged; new: tiny_qwen3_dir,
      step_llama_dir, tiny_reward_dir, scorer_checkpoints (all session-scoped, in conftest.py)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)

# What the learned BPE is trained on: the prompts and solutions the generation tests write.
CORPUS = [
    "Natalia sold 48 clips in April and half as many in May. How many altogether?",
    "Step 1: 48 / 2 = 24.\n\nStep 2: 48 + 24 = 72.\n\nThe answer is \\boxed{72}.",
    "Solve the problem step by step. Separate the steps with a blank line.",
    "put your final answer within \\boxed{}. What is 2 + 3? 2 + 3 = 5.",
    "start 7, add 5, times 3, subtract 4. 7 + 5 = 12\n\n12 * 3 = 36\n\n36 - 4 = 32",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 +-*/=(){}[]\\.,:;?!$#'\"",
]
# The words of the scorer tests: every id they look up is one of these.
SCORER_CORPUS = [
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
# The words of the step policy: the questions the search and server tests ask, and the pieces a
# solution is made of. Several tokens end a step ("\n\n" in them) and one states an answer, so
# near-uniform sampling writes multi-step solutions that sometimes finish.
STEP_CORPUS = [
    "system user assistant",
    "what is one two three four five , how many ?",
    "what is 1 + 3 , take the sum of 2 and 2 , x = 4",
    "step by step so we add the answer is of a and to in",
    "What is 0 1 2 3 4 5 6 7 8 9 + 1 ?",
    "\n",
    "\n\n",
    ".\n\n",
    ",\n\n",
    ";\n\n",
    "\\boxed{4}",
]


WORD_SPLIT = r"\s+|\w+|[^\w\s]"  # runs of whitespace, words and single punctuation marks
STEP_SPLIT = r"[.,;]?\n\n|\\boxed\{\w*\}|" + WORD_SPLIT  # and a step's end, an answer: one piece each


def tiny_config(config_cls: Any, tokenizer: Any, **extra: Any) -> Any:
    """The one tiny configuration, sized to ``tokenizer`` with its special tokens looked up."""
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "bos_token_id": tokenizer.bos_token_id}
    return config_cls(vocab_size=len(tokenizer), **{**TINY, **ids, **extra})


def save_checkpoint(model: Any, tokenizer: Any, directory: Path, **save_options: Any) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory, **save_options)
    tokenizer.save_pretrained(directory)
    return directory


# -- tokenizers -------------------------------------------------------------------------------------
def chat_tokenizer(*, corpus: Sequence[str] | None = None, tag: str | None = None,
                   chat_template: str | None = CHATML) -> Any:
    """A byte-level BPE with Qwen's special tokens and, if given, the chat template. ``tag`` adds a
    step tag (Qwen2.5-Math-PRM's ``<extra_0>``) as a special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *([tag] if tag else [])]
    if corpus is None:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        model = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    else:
        model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    model.decoder = decoders.ByteLevel()
    if corpus is not None:
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        model.train_from_iterator(list(corpus) * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def word_tokenizer(
    corpus: Iterable[str],
    *,
    special: list[str],
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str | None,
    metaspace: bool = False,
    split: str = WORD_SPLIT,
    drop: Iterable[str] = (),
) -> Any:
    """A WordLevel tokenizer over the pieces of ``corpus`` (minus ``drop``), with ``special`` added:
    pieces are what ``split`` matches, or sentencepiece-like words with ``metaspace``. Decoding
    gives back the encoded text exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if metaspace:  # sentencepiece-like (Mistral): words carry a leading "▁"; newlines split off
        pre = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), "isolated"),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            ]
        )
        decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        pre = pre_tokenizers.Split(Regex(split), "isolated")
        decoder = decoders.Fuse()
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
    model.decoder = decoder
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


def step_tokenizer() -> Any:
    """The step policy's tokenizer: ChatML over the words of ``STEP_CORPUS``."""
    return word_tokenizer(STEP_CORPUS, special=["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>",
                          pad="<pad>", chat_template=CHATML, split=STEP_SPLIT)


def llama3_tokenizer() -> Any:
    return word_tokenizer(
        SCORER_CORPUS,
        special=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        chat_template=LLAMA3,
    )


def mistral_tokenizer(*, with_tag: bool = True) -> Any:
    return word_tokenizer(
        SCORER_CORPUS,
        special=[],
        bos="<s>",
        eos="</s>",
        pad="</s>",
        chat_template=None,
        metaspace=True,
        drop=() if with_tag else ("ки",),
    )


# -- generation checkpoints -------------------------------------------------------------------------
def causal_lm_classes(arch: str) -> tuple[Any, Any]:
    import transformers

    family = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral"}[arch]
    return getattr(transformers, f"{family}Config"), getattr(transformers, f"{family}ForCausalLM")


def build_tiny_causal_lm(
    directory: str | Path, arch: str = "llama", *, seed: int = 0, chat_template: str | None = CHATML
) -> Path:
    """A random ``arch`` causal LM with the BPE learned on ``CORPUS``; its output layer is scaled up
    so samples differ clearly across seeds."""
    import torch

    config_cls, model_cls = causal_lm_classes(arch)
    tokenizer = chat_tokenizer(corpus=CORPUS, chat_template=chat_template)
    torch.manual_seed(seed)
    model = model_cls(tiny_config(config_cls, tokenizer))
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return save_checkpoint(model, tokenizer, Path(directory))


def build_step_llama(directory: str | Path, *, seed: int = 0) -> Path:
    """A random LlamaForCausalLM with ``step_tokenizer``, and a generation_config.json like a hub
    model's."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = step_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(LlamaConfig, tokenizer)).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return save_checkpoint(model, tokenizer, Path(directory))


def build_tiny_reward(directory: str | Path, *, seed: int = 1) -> Path:
    """A random LlamaForSequenceClassification with one label (a Skywork-style ORM) and the step
    policy's tokenizer, as a reward server serves it."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = step_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_config(LlamaConfig, tokenizer, num_labels=1))
    return save_checkpoint(model, tokenizer, Path(directory))


# -- scorer checkpoints -----------------------------------------------------------------------------
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
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer()
    base_dir, ckpt = root / "base", root / "pum"
    config = tiny_config(Qwen3Config, tokenizer)
    save_checkpoint(Qwen3ForCausalLM(config), tokenizer, base_dir)
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
    import torch
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
    import torch
    from transformers import Qwen2Config

    torch.manual_seed(seed)
    tokenizer = chat_tokenizer(tag="<extra_0>" if with_tag else None)
    config = tiny_config(Qwen2Config, tokenizer, num_labels=2, architectures=["Qwen2ForProcessRewardModel"])
    model = qwen_prm_class()(config)
    with torch.no_grad():  # make the head's two classes differ clearly
        for p in model.score.parameters():
            p.normal_(0, 0.5)
    return save_checkpoint(model, tokenizer, root / "qwen-prm", max_shard_size="40KB" if shard else "10GB")


def build_shepherd(root: Path, *, seed: int = 2, with_tag: bool = True) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    tokenizer = mistral_tokenizer(with_tag=with_tag)
    return save_checkpoint(MistralForCausalLM(tiny_config(MistralConfig, tokenizer)), tokenizer, root / "shepherd")


def build_rlhflow(root: Path, *, seed: int = 3) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = llama3_tokenizer()
    return save_checkpoint(LlamaForCausalLM(tiny_config(LlamaConfig, tokenizer)), tokenizer, root / "rlhflow")


def build_orm(root: Path, *, seed: int = 4) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = llama3_tokenizer()
    model = LlamaForSequenceClassification(tiny_config(LlamaConfig, tokenizer, num_labels=1))
    return save_checkpoint(model, tokenizer, root / "orm")
