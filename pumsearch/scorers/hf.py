"""Shared pieces of the transformers-based scorers: loading, tag positions, padding, safetensors.

Every model scorer renders an item to one string, tokenizes it once (``count_tokens`` keeps the
encoding for the forward that follows), right-pads a micro-batch and reads the head at known
positions. Right padding with an attention mask leaves every real position of a causal model
exactly as it would be alone, so scores do not depend on batch mates.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumsearch.models import load_pretrained, resolve_device
from pumsearch.scorers.base import ScorerError
from pumsearch.search.protocols import ScoreItem

# The system prompt the released PUM (zhiqix/PUM model card) and Qwen2.5-Math-PRM score under, and
# the rollout scorer's students solve under. The policy's default is SearchConfig.system_prompt.
SCORER_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def load_backbone(path: str, *, device: str, dtype: str, model_class: Any = None) -> tuple[Any, Any, str]:
    """Tokenizer, model and resolved device for a scorer checkpoint (no remote code, ever)."""
    device = resolve_device(device)
    tokenizer, model = load_pretrained(path, dtype=dtype, device=device, model_class=model_class)
    return tokenizer, model, device


def require_dir(path: str | None, what: str) -> Path:
    if not path:
        raise ScorerError(
            f"the {what} scorer needs a checkpoint: pass --scorer-model PATH (model=... in Python)"
        )
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ScorerError(f"{what} checkpoint {path} is not a directory")
    return folder


@dataclass
class Encoded:
    """One rendered item: its token ids and the positions whose outputs give its score(s)."""

    ids: list[int]
    read_at: list[int]


class EncodingCache:
    """Keeps the encodings ``count_tokens`` made so ``score_batch`` does not tokenize twice."""

    def __init__(self, encode: Callable[[ScoreItem], Encoded], size: int = 4096) -> None:
        self.encode = encode
        self.size = size
        self._store: OrderedDict[ScoreItem, Encoded] = OrderedDict()

    def get(self, item: ScoreItem) -> Encoded:
        found = self._store.get(item)
        if found is None:
            found = self.encode(item)
            self._store[item] = found
            if len(self._store) > self.size:
                self._store.popitem(last=False)
        return found

    def pop(self, item: ScoreItem) -> Encoded:
        found = self._store.pop(item, None)
        return found if found is not None else self.encode(item)


def encode_with_offsets(
    tokenizer: Any, text: str, *, add_special_tokens: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def token_at_char(offsets: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose character span covers ``char`` (None when no token does)."""
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index
    return None


def tag_token_positions(
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    tag_chars: Sequence[int],
    tag_id: int,
    tag_text: str,
    where: str,
) -> list[int]:
    """Token positions of the tags inserted at character ``tag_chars`` (each the tag's last
    character). Looking tags up by where they were inserted, not by searching for the tag id,
    means a step whose own text contains the tag cannot shift the read positions."""
    positions = []
    for char in tag_chars:
        index = token_at_char(offsets, char)
        if index is None or ids[index] != tag_id:
            raise ScorerError(
                f"{where}: the tokenizer does not keep the step tag {tag_text!r} as its own token "
                f"(id {tag_id}) in context; this checkpoint's tokenizer does not fit the format"
            )
        positions.append(index)
    return positions


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention[i, : len(row)] = 1
    return input_ids.to(device), attention.to(device)


def pad_id_of(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(value, int):
            return value
    return 0


def single_token_id(tokenizer: Any, token: str, where: str) -> int:
    """The id of an added/special token such as ``<extra_0>``; a clear error when it is missing."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
        raise ScorerError(
            f"{where}: the tokenizer lacks the step tag {token!r}; is this the right checkpoint?"
        )
    return int(token_id)


def chat_text(
    tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool, where: str
) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ScorerError(
            f"{where}: the tokenizer has no chat template (chat_template.jinja or "
            "tokenizer_config.json), which this format needs"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ScorerError(f"cannot read {path}: {err}") from None


def read_checkpoint_tensors(folder: Path, names: Sequence[str]) -> dict[str, Any]:
    """Named tensors from a checkpoint directory: model.safetensors, a sharded index, or a .bin."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    found: dict[str, Any] = {}
    if index.exists():
        weight_map = read_json(index).get("weight_map", {})
        for shard in sorted({weight_map[n] for n in names if n in weight_map}):
            with safe_open(str(folder / shard), framework="pt") as f:
                found.update({n: f.get_tensor(n) for n in names if n in f.keys()})  # noqa: SIM118
    elif single.exists():
        with safe_open(str(single), framework="pt") as f:
            found.update({n: f.get_tensor(n) for n in names if n in f.keys()})  # noqa: SIM118
    elif (folder / "pytorch_model.bin").exists():
        import torch

        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        found.update({n: state[n] for n in names if n in state})
    missing = [n for n in names if n not in found]
    if missing:
        raise ScorerError(f"checkpoint {folder} lacks the tensors {', '.join(missing)}")
    return found


__all__ = [
    "SCORER_SYSTEM_PROMPT",
    "Encoded",
    "EncodingCache",
    "chat_text",
    "encode_with_offsets",
    "load_backbone",
    "pad_id_of",
    "read_checkpoint_tensors",
    "read_json",
    "require_dir",
    "right_pad",
    "single_token_id",
    "tag_token_positions",
    "token_at_char",
]
