"""Generation with transformers on CPU or GPU: batched sampling with a hand-rolled decode loop.

Why not ``model.generate``: its sampling draws from one global random stream, so a request's
samples would depend on what else shares its batch. Here every row has its own torch.Generator,
seeded from the request's seed and the sample index, so a search is reproducible however many
problems run beside it. The loop also detects stop strings per row (a finished row stops
counting tokens) and reports exact token counts and finish reasons.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pumsearch.models import ModelLoadError, hash_seed, load_pretrained, resolve_device, resolve_dtype
from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)


@dataclass
class _Row:
    request_index: int
    prompt_ids: list[int]
    seed: int
    temperature: float
    top_p: float
    max_tokens: int
    stops: tuple[str, ...]


class _StopTracker:
    """Per-row generated ids and why each row stopped: end of sequence, a stop string (checked on
    the decoded tail, so a stop split across tokens is seen), or the row's token cap."""

    def __init__(self, rows: list[_Row], eos_ids: set[int], tokenizer: Any) -> None:
        self.rows, self.eos_ids, self.tokenizer = rows, eos_ids, tokenizer
        self.generated: list[list[int]] = [[] for _ in rows]
        self.finish: list[str | None] = [None] * len(rows)
        self.matched: list[str | None] = [None] * len(rows)
        self.windows = [max((len(s) for s in r.stops), default=0) + 2 for r in rows]

    def advance(self, b: int, token: int) -> None:
        row, ids = self.rows[b], self.generated[b]
        ids.append(token)
        if token in self.eos_ids:
            self.finish[b] = "eos"
        elif row.stops:
            tail = self.tokenizer.decode(ids[-self.windows[b]:], skip_special_tokens=True)
            hit = next((s for s in row.stops if s in tail), None)
            if hit is not None:
                self.finish[b], self.matched[b] = "step", hit
        if self.finish[b] is None and len(ids) >= row.max_tokens:
            self.finish[b] = "length"


class TransformersGenerator:
    """The transformers backend. Prefixes are extended by token ids."""

    takes_token_ids = True

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_batch_rows: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_rows = max_batch_rows
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()
        self._warned_no_template = False
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids()[0]
        self.eos_ids = set(self._eos_ids())

    @classmethod
    def load(cls, name: str, *, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False,
             **kwargs: Any) -> TransformersGenerator:
        device = resolve_device(device)
        tokenizer, model = load_pretrained(name, dtype=resolve_dtype(dtype, device), device=device,
                                           trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, name=name, **kwargs)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (self.tokenizer.eos_token_id, gen_eos):
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, list | tuple):
                ids.extend(int(v) for v in value)
        if not ids:
            raise ModelLoadError(f"{self.name}: the tokenizer defines no end-of-sequence token")
        return list(dict.fromkeys(ids))

    # -- prompts --------------------------------------------------------------------------------
    def chat_prompt(self, question: str, system_prompt: str | None) -> tuple[str, tuple[int, ...]]:
        text = chat_prompt_text(self.tokenizer, question, system_prompt, warn=not self._warned_no_template)
        if getattr(self.tokenizer, "chat_template", None) is None:
            self._warned_no_template = True
        return text, encode_prompt(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        rows = []
        for i, req in enumerate(requests):
            ids = list(req.prompt_ids) if req.prompt_ids is not None else self._encode_text_prompt(req.prompt_text)
            for j in range(req.n):
                rows.append(_Row(i, ids, hash_seed(req.seed, j), req.params.temperature, req.params.top_p,
                                 req.params.max_tokens, req.params.stop))
        completions: list[Completion] = []
        with self._lock:
            for start in range(0, len(rows), self.max_batch_rows):
                completions.extend(self._decode_rows(rows[start : start + self.max_batch_rows]))
        outputs = [GenerationOutput([], prompt_tokens=0) for _ in requests]
        for row, completion in zip(rows, completions, strict=True):
            outputs[row.request_index].completions.append(completion)
            outputs[row.request_index].prompt_tokens += len(row.prompt_ids)
        return outputs

    def _encode_text_prompt(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _decode_rows(self, rows: list[_Row]) -> list[Completion]:
        """Prefill the left-padded prompts, then decode one token per live row per step. A row that
        finishes leaves the batch (its KV cache rows are dropped), so it stops costing compute."""
        import torch
        from transformers import DynamicCache

        device = self.device
        step_input, attention = self._left_pad(rows)
        step_positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator(device="cpu").manual_seed(r.seed) for r in rows]
        temperature = torch.tensor([max(r.temperature, 1e-5) for r in rows]).unsqueeze(-1)
        top_p = torch.tensor([r.top_p for r in rows]).unsqueeze(-1)
        tracker = _StopTracker(rows, self.eos_ids, self.tokenizer)
        active = list(range(len(rows)))  # batch position -> row
        cache = DynamicCache()
        forward_kw = self._forward_keywords(cache)
        with torch.inference_mode():
            for _ in range(max(r.max_tokens for r in rows)):
                out = self.model(input_ids=step_input, attention_mask=attention, position_ids=step_positions,
                                 use_cache=True, **forward_kw)
                tokens = sample_next(out.logits[:, -1, :].float().cpu(), temperature[active], top_p[active],
                                     [rows[b].temperature == 0 for b in active], [generators[b] for b in active])
                for b, token in zip(active, tokens, strict=True):
                    tracker.advance(b, token)
                live = [i for i, b in enumerate(active) if tracker.finish[b] is None]
                if not live:
                    break
                if len(live) < len(active):
                    keep = torch.tensor(live, device=device)
                    cache.batch_select_indices(keep)
                    attention, step_positions = attention[keep], step_positions[keep]
                    active, tokens = [active[i] for i in live], [tokens[i] for i in live]
                step_input = torch.tensor([[t] for t in tokens], device=device)
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], 1)
                step_positions = step_positions[:, -1:] + 1
        return [self._completion(tracker.generated[b], tracker.finish[b] or "length", tracker.matched[b])
                for b in range(len(rows))]

    def _left_pad(self, rows: list[_Row]) -> tuple[Any, Any]:
        """Prompt ids and attention mask, left-padded so every row's next token is at the end."""
        import torch

        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
            attention[b, width - len(row.prompt_ids):] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def _forward_keywords(self, cache: Any) -> dict[str, Any]:
        keywords = {cache_keyword(self.model): cache}
        # only the last position's logits are needed: the lm head over a whole prompt is costly
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            keywords["logits_to_keep"] = 1
        return keywords

    def _completion(self, ids: list[int], finish: str, matched: str | None) -> Completion:
        text = self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True)
        if matched is not None:
            text = text[: text.find(matched)]
        return Completion(text=text, token_ids=ids, num_tokens=len(ids), finish_reason=finish,  # type: ignore[arg-type]
                          matched_stop=matched)

    async def aclose(self) -> None:
        pass


def cache_keyword(model: Any) -> str:
    """transformers 5.x renames ``past_key_values`` to ``cache``; use whichever forward takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def sample_next(logits: Any, temperature: Any, top_p: Any, greedy: list[bool], generators: list[Any]) -> list[int]:
    """One token per row: greedy where temperature is 0, else nucleus sampling with the row's own
    generator (so a row's draw never depends on its batch mates). The vocabulary is sorted only
    for rows with top_p < 1: a full sort per decode step costs more than the draw itself."""
    import torch

    probs = torch.softmax(logits / temperature, dim=-1)
    nucleus = [b for b in range(logits.shape[0]) if not greedy[b] and float(top_p[b]) < 1.0]
    sorted_rows = {}
    if nucleus:
        sorted_probs, order = probs[nucleus].sort(dim=-1, descending=True)
        keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p[nucleus]  # always keeps the top token
        for i, b in enumerate(nucleus):
            sorted_rows[b] = (sorted_probs[i] * keep[i], order[i])
    tokens = []
    for b in range(logits.shape[0]):
        if greedy[b]:
            tokens.append(int(logits[b].argmax()))
        elif b in sorted_rows:
            row_probs, order = sorted_rows[b]
            tokens.append(int(order[torch.multinomial(row_probs, 1, generator=generators[b])]))
        else:
            tokens.append(int(torch.multinomial(probs[b], 1, generator=generators[b])))
    return tokens


def encode_prompt(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Token ids of a rendered prompt. A chat template writes its own special tokens; a plain
    prompt gets the model's beginning-of-sequence token, as the model saw in training."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return tuple(ids)


def chat_prompt_text(tokenizer: Any, question: str, system_prompt: str | None, *, warn: bool = True) -> str:
    """The chat-templated prompt with the assistant turn open; a plain prompt where the model has
    no chat template (with a warning)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if warn:
        log.warning("the model has no chat template; using a plain prompt")
    head = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{head}Question: {question}\n\nAnswer:\n"
