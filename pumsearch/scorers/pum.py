"""The Prefix Utility Model (PUM) in the layout of the released zhiqix/PUM checkpoint.

Layout (see docs/scorers.md for which parts are documented publicly and which are inferred)::

    <checkpoint>/backbone/adapter_config.json        PEFT LoRA adapter; names the base model
    <checkpoint>/backbone/adapter_model.safetensors
    <checkpoint>/value_head.pt                       state dict of an MLP on the final hidden state
    <checkpoint>/model_args.json                     (optional) may name the head's activation
    <checkpoint>/tokenizer files, chat_template.jinja

Input: the chat template with the system prompt and the problem as the user turn, the generation
prompt opened, then the prefix (steps joined by the step delimiter) as the unfinished assistant
turn. The value is the head applied to the final hidden state (after the last norm) at the last
token, or ``read_offset`` tokens before it. One unbounded scalar per (problem, prefix), higher is
better; partial and complete prefixes are scored alike.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pumsearch.models import check_safetensors, resolve_model_name
from pumsearch.scorers.base import ScorerError
from pumsearch.scorers.hf import (
    SCORER_SYSTEM_PROMPT,
    Encoded,
    EncodingCache,
    chat_text,
    load_backbone,
    pad_id_of,
    read_json,
    require_dir,
    right_pad,
)
from pumsearch.search.protocols import Score, ScoreItem

DEFAULT_ACTIVATION = "relu"
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "sigmoid", "identity")


class PUMScorer:
    value_kind = "unbounded"
    needs_reference = False

    def __init__(
        self,
        tokenizer: Any,
        decoder: Any,
        head: Any,
        *,
        path: str,
        system_prompt: str | None = SCORER_SYSTEM_PROMPT,
        step_delimiter: str = "\n\n",
        read_offset: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.head = head
        self.identity = f"pum:{path}"
        self.system_prompt = system_prompt
        self.step_delimiter = step_delimiter
        self.read_offset = read_offset
        self.pad_id = pad_id_of(tokenizer)
        self.device = next(decoder.parameters()).device
        self._encodings = EncodingCache(self.encode)

    def render(self, item: ScoreItem) -> str:
        messages = [{"role": "user", "content": item.problem.question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        prompt = chat_text(self.tokenizer, messages, add_generation_prompt=True, where=self.identity)
        return prompt + self.step_delimiter.join(item.steps)

    def encode(self, item: ScoreItem) -> Encoded:
        ids = self.tokenizer(self.render(item), add_special_tokens=False)["input_ids"]
        return Encoded(list(ids), [max(len(ids) - 1 - self.read_offset, 0)])

    def count_tokens(self, item: ScoreItem) -> int:
        return len(self._encodings.get(item).ids)

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        import torch

        encoded = [self._encodings.pop(item) for item in items]
        input_ids, attention = right_pad([e.ids for e in encoded], self.pad_id, self.device)
        rows = torch.arange(len(encoded), device=self.device)
        cols = torch.tensor([e.read_at[0] for e in encoded], device=self.device)
        with torch.inference_mode():
            hidden = self.decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
            values = self.head(hidden[rows, cols].float()).squeeze(-1).cpu().tolist()
        return [Score(float(v)) for v in values]

    def close(self) -> None:
        pass


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def unwrap_state(state: Any, where: str) -> dict[str, Any]:
    """The head's tensors, whether saved bare or inside a {"state_dict": ...}-style wrapper."""
    import torch

    while isinstance(state, dict) and len(state) == 1 and isinstance(next(iter(state.values())), dict):
        state = next(iter(state.values()))
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise ScorerError(f"{where} is not a state dict of tensors")
    return state


def infer_value_head(state: dict[str, Any], hidden_size: int, activation: str, where: str) -> Any:
    """An MLP from a state dict: Linear layers chained by shape, from the hidden size down to one
    output, with ``activation`` between them. Anything but Linear weights and biases is refused."""
    import torch

    layers: dict[str, dict[str, Any]] = {}
    for name, tensor in state.items():
        prefix, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias"):
            raise ScorerError(f"{where}: cannot interpret tensor {name!r} (only Linear weights and biases)")
        layers.setdefault(prefix, {})[kind] = tensor
    for prefix, parts in layers.items():
        if "weight" not in parts or parts["weight"].dim() != 2:
            raise ScorerError(
                f"{where}: layer {prefix or '(root)'!r} is not a Linear layer (needs a 2-D weight)"
            )
    remaining = sorted(layers, key=_natural_key)
    chain: list[str] = []
    width = hidden_size
    while remaining:
        nxt = next((p for p in remaining if layers[p]["weight"].shape[1] == width), None)
        if nxt is None:
            break
        chain.append(nxt)
        remaining.remove(nxt)
        width = layers[nxt]["weight"].shape[0]
    if remaining or not chain or width != 1:
        shapes = ", ".join(f"{p or '(root)'}: {tuple(layers[p]['weight'].shape)}" for p in sorted(layers))
        raise ScorerError(
            f"{where}: value head shapes ({shapes}) do not fit a base model of hidden size "
            f"{hidden_size} (need Linear layers chaining {hidden_size} -> ... -> 1)"
        )
    modules: list[Any] = []
    for i, prefix in enumerate(chain):
        out_f, in_f = layers[prefix]["weight"].shape
        linear = torch.nn.Linear(in_f, out_f, bias="bias" in layers[prefix])
        with torch.no_grad():
            linear.weight.copy_(layers[prefix]["weight"])
            if "bias" in layers[prefix]:
                linear.bias.copy_(layers[prefix]["bias"])
        modules.append(linear)
        if i < len(chain) - 1:
            modules.append(activation_module(activation))
    return torch.nn.Sequential(*modules).float().eval()


def activation_module(name: str) -> Any:
    import torch

    table = {
        "relu": torch.nn.ReLU,
        "gelu": torch.nn.GELU,
        "tanh": torch.nn.Tanh,
        "silu": torch.nn.SiLU,
        "sigmoid": torch.nn.Sigmoid,
        "identity": torch.nn.Identity,
    }
    key = name.lower()
    if key not in table:
        raise ScorerError(f"unknown value-head activation {name!r}: use one of {', '.join(ACTIVATIONS)}")
    return table[key]()


def activation_from_args(folder: Path) -> str | None:
    """An activation named in model_args.json (any string field whose key mentions activation)."""
    path = folder / "model_args.json"
    if not path.exists():
        return None
    for key, value in read_json(path).items():
        if isinstance(value, str) and ("activation" in key.lower() or key.lower().endswith("act_fn")):
            return value
    return None


def check_layout(folder: Path) -> tuple[Path, dict[str, Any], Path]:
    adapter = folder / "backbone"
    config = adapter / "adapter_config.json"
    if not config.exists():
        raise ScorerError(f"PUM checkpoint {folder} has no LoRA adapter: {config} is missing")
    if not any((adapter / f).exists() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ScorerError(
            f"PUM checkpoint {folder} has no adapter weights: {adapter}/adapter_model.safetensors is missing"
        )
    if (adapter / "adapter_model.safetensors").exists():
        check_safetensors(adapter / "adapter_model.safetensors")  # cut short: one line, not peft's traceback
    head = folder / "value_head.pt"
    if not head.exists():
        raise ScorerError(f"PUM checkpoint {folder} has no value head: {head} is missing")
    return adapter, read_json(config), head


def load_value_head_state(path: Path) -> dict[str, Any]:
    """The value head's tensors, read with weights_only (no code in the file runs). A torch.save
    archive holding more than tensors is named as such, anything else that does not read as
    corrupt; torch's own hint to load the file unsafely is never passed on."""
    import pickle
    import zipfile

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage bytes raise anything from UnpicklingError to KeyError
        if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            raise ScorerError(f"{path} holds pickled objects, not only tensors (torch.load with weights_only "
                              "refuses it; e.g. a whole module saved with torch.save): save the head's state_dict() "
                              "instead") from None
        raise ScorerError(f"{path} is corrupt: no saved tensors could be read from it ({type(err).__name__}); "
                          "restore value_head.pt from the PUM checkpoint") from None
    return unwrap_state(state, str(path))


@contextlib.contextmanager
def quiet_tied_embeddings() -> Iterator[None]:
    """peft warns when an adapter touches a tied LM head or embedding (a checkpoint trained with
    ``pumsearch pum train --mode full`` does); a PUM never runs its LM head, so the tie is moot."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*(tie_word_embeddings|tied|embedding layers)",
                                category=UserWarning)
        yield


def resolve_base(base: str) -> str:
    """The base model's path where the adapter names it by a registered alias (``testbed:strong``,
    as ``pumsearch pum train --base testbed:strong`` records it); any other name as given."""
    try:
        return resolve_model_name(base)
    except ValueError as err:
        raise ScorerError(f"PUM base model {base!r}: {err}") from None


def load_pum(
    path: str | None,
    *,
    base: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    system_prompt: str | None = SCORER_SYSTEM_PROMPT,
    activation: str | None = None,
    read_offset: int = 0,
    step_delimiter: str = "\n\n",
    merge: bool = True,
) -> PUMScorer:
    """Load a PUM checkpoint. ``base`` overrides the adapter's base_model_name_or_path; ``merge``
    folds the LoRA weights into the base for speed (the value is the same up to rounding)."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    folder = require_dir(path, "pum")
    assert path is not None
    adapter, adapter_config, head_file = check_layout(folder)
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ScorerError(f"{adapter}/adapter_config.json names no base model: pass --scorer-base")
    base = resolve_base(base)
    activation = activation or activation_from_args(folder) or DEFAULT_ACTIVATION
    activation_module(activation)  # refuse an unknown name before any model loads
    state = load_value_head_state(head_file)
    try:
        hidden_size = AutoConfig.from_pretrained(base).hidden_size
    except (OSError, ValueError) as err:
        raise ScorerError(
            f"cannot read the PUM base model {base!r} ({str(err).splitlines()[0]}): download it and pass "
            "--scorer-base PATH"
        ) from None
    head = infer_value_head(state, hidden_size, activation, str(head_file))
    tokenizer, model, device = load_backbone(base, device=device, dtype=dtype)
    if (folder / "tokenizer_config.json").exists() or (folder / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))  # the checkpoint's own, with its template
    with quiet_tied_embeddings():
        model = PeftModel.from_pretrained(model, str(adapter))
        model = model.merge_and_unload() if merge else model.get_base_model()
    model.eval()
    decoder = getattr(model, model.base_model_prefix)
    return PUMScorer(
        tokenizer,
        decoder,
        head.to(device),
        path=path,
        system_prompt=system_prompt,
        step_delimiter=step_delimiter,
        read_offset=read_offset,
    )
