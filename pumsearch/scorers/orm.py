"""Outcome reward models: a sequence classifier (e.g. Skywork-Reward, LlamaForSequenceClassification)
over the chat-formatted conversation [user: question, assistant: solution]; one unbounded scalar
(the first logit at the last token).

An ORM judges finished solutions. A partial prefix is scored as if it were the whole solution
(the model sees an assistant turn that simply ends there), which is usually a low score; use it
for Best-of-N, or accept that meaning in tree search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.hf import Encoded, EncodingCache, chat_text, load_backbone, require_dir, right_pad
from pumsearch.search.protocols import Score, ScoreItem


class ORMScorer:
    value_kind = "unbounded"
    needs_reference = False

    def __init__(self, tokenizer: Any, model: Any, *, path: str, step_delimiter: str = "\n\n") -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.identity = f"orm:{path}"
        self.step_delimiter = step_delimiter
        self.device = next(model.parameters()).device
        # the classifier pools the last token that is not its pad id: that id must be set
        pad = model.config.pad_token_id
        if pad is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            model.config.pad_token_id = pad
        self.pad_id = pad
        self._encodings = EncodingCache(self.encode)

    def encode(self, item: ScoreItem) -> Encoded:
        messages = [
            {"role": "user", "content": item.problem.question},
            {"role": "assistant", "content": self.step_delimiter.join(item.steps)},
        ]
        text = chat_text(self.tokenizer, messages, add_generation_prompt=False, where=self.identity)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Encoded(ids, [len(ids) - 1])

    def count_tokens(self, item: ScoreItem) -> int:
        return len(self._encodings.get(item).ids)

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        encoded = [self._encodings.pop(item) for item in items]
        # a sequence that ends in the pad id would be pooled at the wrong token inside a padded
        # batch; such rows run alone (unpadded), the others together
        safe = [i for i, e in enumerate(encoded) if e.ids[-1] != self.pad_id]
        alone = [i for i in range(len(encoded)) if i not in set(safe)]
        values: dict[int, float] = {}
        if safe:
            values.update(zip(safe, self._forward([encoded[i].ids for i in safe]), strict=True))
        for i in alone:
            values[i] = self._forward([encoded[i].ids])[0]
        return [Score(values[i]) for i in range(len(encoded))]

    def _forward(self, rows: list[list[int]]) -> list[float]:
        import torch

        input_ids, attention = right_pad(rows, self.pad_id, self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        return [float(v) for v in logits[:, 0].float().cpu()]

    def close(self) -> None:
        pass


def load_orm(
    path: str | None, *, device: str = "cpu", dtype: str = "float32", step_delimiter: str = "\n\n"
) -> ORMScorer:
    from transformers import AutoModelForSequenceClassification

    require_dir(path, "orm")
    assert path is not None
    tokenizer, model, _ = load_backbone(
        path, device=device, dtype=dtype, model_class=AutoModelForSequenceClassification
    )
    if not getattr(tokenizer, "chat_template", None):
        raise ScorerError(f"orm checkpoint {path}: its tokenizer has no chat template")
    return ORMScorer(tokenizer, model, path=path, step_delimiter=step_delimiter)
