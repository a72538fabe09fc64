"""Step-level process reward models in three checkpoint formats, one per-step probability each.

- ``qwen`` (Qwen2.5-Math-PRM): the chat template with system prompt, the question as the user
  turn and the steps, each followed by ``<extra_0>``, as the assistant turn. A Qwen2 model with a
  two-class head (Linear(h, h), ReLU, Linear(h, 2); state-dict names ``score.0.*`` and
  ``score.2.*`` as in the checkpoint's weight index) gives P(class 1) at each ``<extra_0>``. The
  head is built here and loaded by name, so no remote code runs.
- ``shepherd`` (Math-Shepherd): ``question + " " + steps`` with " ки" after each step (steps
  joined by a newline, as in its model card); at each tag, P("+") from the softmax over the "+"
  and "-" logits (the ids of ``encode("+ -")`` as the card does).
- ``rlhflow`` (RLHFlow/Llama3.1-8B-PRM-*): a chat where each step is a user turn (the first one
  prefixed by the question and a space) answered by an assistant "+"; the step's score is P("+")
  against "-" from the logits that predict that "+" (the position just before it).

Formats are registered in ``PRM_FORMATS`` (``register_prm_format``). Steps are stripped of
surrounding whitespace before tags are added (the formats were trained on stripped steps; a stray
space would change how the tag tokenizes). Tags are located by the character where they were
inserted, so a step that itself contains "+" or the tag text cannot shift the read positions.
``Score.value`` is the last step's value; whole-solution aggregation (last/min/prod/mean) is
``--aggregate``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pumsearch.registry import Entry, Registry
from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.hf import (
    SCORER_SYSTEM_PROMPT,
    Encoded,
    EncodingCache,
    chat_text,
    encode_with_offsets,
    load_backbone,
    pad_id_of,
    read_checkpoint_tensors,
    read_json,
    require_dir,
    right_pad,
    single_token_id,
    tag_token_positions,
)
from pumsearch.search.protocols import Score, ScoreItem

QWEN_TAG = "<extra_0>"
SHEPHERD_TAG = " ки"
QWEN_HEAD_NAMES = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")


class PRMScorer:
    """Shared batching and reading; subclasses render items and turn hidden states into probabilities."""

    value_kind = "probability"
    needs_reference = False
    fmt = ""

    def __init__(self, tokenizer: Any, model: Any, *, path: str) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.path = path
        self.identity = f"prm:{self.fmt}:{path}"
        self.pad_id = pad_id_of(tokenizer)
        self.device = next(model.parameters()).device
        self._encodings = EncodingCache(self.encode)

    # -- rendering ------------------------------------------------------------------------------
    def encode(self, item: ScoreItem) -> Encoded:
        raise NotImplementedError

    def where(self, item: ScoreItem) -> str:
        return f"{self.identity}, problem {item.problem.id!r}"

    def steps_of(self, item: ScoreItem) -> list[str]:
        if not item.steps:
            raise ScorerError(f"{self.where(item)}: a step PRM needs at least one step to score")
        return [step.strip() for step in item.steps]

    # -- scoring --------------------------------------------------------------------------------
    def count_tokens(self, item: ScoreItem) -> int:
        return len(self._encodings.get(item).ids)

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        import torch

        encoded = [self._encodings.pop(item) for item in items]
        input_ids, attention = right_pad([e.ids for e in encoded], self.pad_id, self.device)
        rows = torch.tensor([b for b, e in enumerate(encoded) for _ in e.read_at], device=self.device)
        cols = torch.tensor([p for e in encoded for p in e.read_at], device=self.device)
        with torch.inference_mode():
            hidden = self.hidden_states(input_ids, attention)
            probs = self.probabilities(hidden[rows, cols]).float().cpu().tolist()
        scores, start = [], 0
        for e in encoded:
            values = probs[start : start + len(e.read_at)]
            start += len(e.read_at)
            scores.append(Score(values[-1], values, {"format": self.fmt}))
        return scores

    def hidden_states(self, input_ids: Any, attention: Any) -> Any:
        """Final hidden states (after the last norm) of the causal LM's decoder."""
        decoder = getattr(self.model, self.model.base_model_prefix)
        return decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state

    def probabilities(self, hidden: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PlusMinusPRM(PRMScorer):
    """Causal-LM PRMs read as P("+") over the "+"/"-" logits; only those two rows of the output
    embedding are applied, not the whole vocabulary."""

    def __init__(self, tokenizer: Any, model: Any, *, path: str, plus_minus: tuple[int, int]) -> None:
        super().__init__(tokenizer, model, path=path)
        head = model.get_output_embeddings()
        self.tag_weight = head.weight[list(plus_minus)].detach()
        bias = getattr(head, "bias", None)
        self.tag_bias = bias[list(plus_minus)].detach() if bias is not None else None

    def probabilities(self, hidden: Any) -> Any:
        import torch

        logits = hidden.to(self.tag_weight.dtype) @ self.tag_weight.T
        if self.tag_bias is not None:
            logits = logits + self.tag_bias
        return torch.softmax(logits.float(), dim=-1)[:, 0]


class ShepherdPRM(PlusMinusPRM):
    fmt = "shepherd"

    def __init__(self, tokenizer: Any, model: Any, *, path: str, step_joiner: str = "\n") -> None:
        where = f"prm:shepherd:{path}"
        plus_minus = without_bos(tokenizer, tokenizer.encode("+ -"))
        if len(plus_minus) != 2:
            raise ScorerError(
                f"{where}: the tokenizer does not encode '+ -' as two tokens (got {plus_minus})"
            )
        tag_ids = without_bos(tokenizer, tokenizer.encode(SHEPHERD_TAG.strip()))
        if len(tag_ids) != 1 or tag_ids[0] == tokenizer.unk_token_id:
            raise ScorerError(f"{where}: the tokenizer lacks the step tag {SHEPHERD_TAG!r} as one token")
        self.tag_id = tag_ids[-1]
        self.step_joiner = step_joiner
        super().__init__(tokenizer, model, path=path, plus_minus=(plus_minus[0], plus_minus[1]))

    def encode(self, item: ScoreItem) -> Encoded:
        text, tag_chars = f"{item.problem.question} ", []
        for i, step in enumerate(self.steps_of(item)):
            text += (self.step_joiner if i else "") + step + SHEPHERD_TAG
            tag_chars.append(len(text) - 1)
        ids, offsets = encode_with_offsets(self.tokenizer, text, add_special_tokens=True)
        at = tag_token_positions(ids, offsets, tag_chars, self.tag_id, SHEPHERD_TAG, self.where(item))
        return Encoded(ids, at)  # the logits at the tag itself predict "+" or "-"


class RLHFlowPRM(PlusMinusPRM):
    fmt = "rlhflow"

    def __init__(self, tokenizer: Any, model: Any, *, path: str) -> None:
        where = f"prm:rlhflow:{path}"
        plus, minus = tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]  # as its reference code does
        if plus == minus or tokenizer.unk_token_id in (plus, minus):
            raise ScorerError(f"{where}: the tokenizer has no distinct '+' and '-' tokens")
        self.plus_id = plus
        super().__init__(tokenizer, model, path=path, plus_minus=(plus, minus))

    def encode(self, item: ScoreItem) -> Encoded:
        where = self.where(item)
        conversation: list[dict[str, str]] = []
        plus_chars = []
        for i, step in enumerate(self.steps_of(item)):
            conversation.append(
                {"role": "user", "content": f"{item.problem.question} {step}" if i == 0 else step}
            )
            # the assistant "+" starts right where the generation prompt of this turn ends
            plus_chars.append(
                len(chat_text(self.tokenizer, conversation, add_generation_prompt=True, where=where))
            )
            conversation.append({"role": "assistant", "content": "+"})
        text = chat_text(self.tokenizer, conversation, add_generation_prompt=False, where=where)
        if any(text[c : c + 1] != "+" for c in plus_chars):
            raise ScorerError(
                f"{where}: the chat template does not render the assistant '+' turns as expected"
            )
        ids, offsets = encode_with_offsets(self.tokenizer, text, add_special_tokens=False)
        at = tag_token_positions(ids, offsets, plus_chars, self.plus_id, "+", where)
        return Encoded(ids, [p - 1 for p in at])  # the position that predicts the "+"


class QwenPRM(PRMScorer):
    """Qwen2.5-Math-PRM: ``model`` is a Qwen2Model, ``head`` the native two-class MLP."""

    fmt = "qwen"

    def __init__(
        self, tokenizer: Any, model: Any, head: Any, *, path: str, system_prompt: str = SCORER_SYSTEM_PROMPT
    ) -> None:
        self.tag_id = single_token_id(tokenizer, QWEN_TAG, f"prm:qwen:{path}")
        self.head = head
        self.system_prompt = system_prompt
        super().__init__(tokenizer, model, path=path)

    def encode(self, item: ScoreItem) -> Encoded:
        where = self.where(item)
        steps = self.steps_of(item)
        content = QWEN_TAG.join(steps) + QWEN_TAG
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": item.problem.question},
            {"role": "assistant", "content": content},
        ]
        text = chat_text(self.tokenizer, messages, add_generation_prompt=False, where=where)
        start = text.rfind(content)
        if start < 0:
            raise ScorerError(
                f"{where}: the chat template altered the assistant turn; cannot place the step tags"
            )
        tag_chars, offset = [], start
        for step in steps:
            offset += len(step) + len(QWEN_TAG)
            tag_chars.append(offset - 1)
        ids, offsets = encode_with_offsets(self.tokenizer, text, add_special_tokens=False)
        return Encoded(ids, tag_token_positions(ids, offsets, tag_chars, self.tag_id, QWEN_TAG, where))

    def hidden_states(self, input_ids: Any, attention: Any) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention).last_hidden_state

    def probabilities(self, hidden: Any) -> Any:
        import torch

        return torch.softmax(self.head(hidden).float(), dim=-1)[:, 1]


def without_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    return ids[1:] if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else ids


def build_qwen_head(folder: Any, hidden_size: int, dtype: Any, device: Any) -> Any:
    """The Qwen2.5-Math-PRM head, Linear(h, h') -> ReLU -> Linear(h', 2), from ``score.0/2.*``."""
    import torch

    tensors = read_checkpoint_tensors(folder, QWEN_HEAD_NAMES)
    first, last = tensors["score.0.weight"], tensors["score.2.weight"]
    if first.shape[1] != hidden_size or last.shape[1] != first.shape[0] or last.shape[0] != 2:
        raise ScorerError(
            f"{folder}: PRM head shapes {tuple(first.shape)} and {tuple(last.shape)} do not fit a model of "
            f"hidden size {hidden_size} with two classes"
        )
    head = torch.nn.Sequential(
        torch.nn.Linear(first.shape[1], first.shape[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(last.shape[1], last.shape[0]),
    )
    head.load_state_dict({name.removeprefix("score."): tensors[name] for name in QWEN_HEAD_NAMES})
    return head.to(device=device, dtype=dtype).eval()


# -- formats ------------------------------------------------------------------------------------------
# A format loader: (path, *, device, dtype, system_prompt, step_joiner) -> PRMScorer, for a checkpoint
# directory that exists. To add a format, see docs/architecture.md.
PRM_FORMATS: Registry[Entry] = Registry("--prm-format")


def register_prm_format(name: str, loader: Any, *, help: str, replace: bool = False) -> None:
    """Make ``--prm-format NAME`` (``prm_format=NAME``) load checkpoints with ``loader``."""
    PRM_FORMATS.add(Entry(name, help, loader), replace=replace)


def load_prm(
    path: str | None,
    *,
    prm_format: str = "qwen",
    device: str = "cpu",
    dtype: str = "float32",
    system_prompt: str | None = None,
    step_joiner: str = "\n",
) -> PRMScorer:
    loader = PRM_FORMATS.get(prm_format, error=ScorerError).resolve()
    require_dir(path, f"prm ({prm_format})")
    assert path is not None
    return loader(path, device=device, dtype=dtype, system_prompt=system_prompt, step_joiner=step_joiner)


def _load_qwen(path: str, *, device: str, dtype: str, system_prompt: str | None, step_joiner: str) -> PRMScorer:
    from transformers import Qwen2Model

    folder = Path(path).expanduser()
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    if config.get("model_type") not in (None, "qwen2"):
        raise ScorerError(
            f"{path}: --prm-format qwen expects a Qwen2 checkpoint, found model_type "
            f"{config.get('model_type')!r}"
        )
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    # the score.* tensors are "unexpected" to Qwen2Model: they are loaded below, by name
    hf_logging.set_verbosity_error()
    try:
        tokenizer, model, device = load_backbone(path, device=device, dtype=dtype, model_class=Qwen2Model)
    finally:
        hf_logging.set_verbosity(previous)
    head = build_qwen_head(folder, model.config.hidden_size, next(model.parameters()).dtype, device)
    return QwenPRM(tokenizer, model, head, path=path, system_prompt=system_prompt or SCORER_SYSTEM_PROMPT)


def _load_shepherd(path: str, *, device: str, dtype: str, system_prompt: str | None, step_joiner: str) -> PRMScorer:
    tokenizer, model, _ = load_backbone(path, device=device, dtype=dtype)
    return ShepherdPRM(tokenizer, model, path=path, step_joiner=step_joiner)


def _load_rlhflow(path: str, *, device: str, dtype: str, system_prompt: str | None, step_joiner: str) -> PRMScorer:
    tokenizer, model, _ = load_backbone(path, device=device, dtype=dtype)
    return RLHFlowPRM(tokenizer, model, path=path)


register_prm_format("qwen", _load_qwen, help="Qwen2.5-Math-PRM: <extra_0> after each step, a two-class head")
register_prm_format("shepherd", _load_shepherd, help="Math-Shepherd: ' ки' after each step, P('+') against '-'")
register_prm_format("rlhflow", _load_rlhflow,
                    help="RLHFlow Llama3.1-8B-PRM: each step a user turn answered by '+', P('+') against '-'")
