"""Generation with transformers on CPU or GPU: batched sampling with a hand-rolled decode loop.

Why not ``model.generate``: its sampling draws from one global random stream, so a request's
samples would depend on what else shares its batch. Here every row samples from its own stream,
seeded from the request's seed and the sample index, so a search is reproducible however many
problems run beside it. The loop (decode_loop.py) also detects stop strings per row, reports
exact token counts, finish reasons and (when asked) per-token log-probabilities, and keeps the
keys and values of prompts and step prefixes in a byte-budgeted prefix cache (kv_cache.py), so
the N samples of a prompt prefill it once and each round of a tree search prefills only the new
step. docs/backends.md says why transformers' own continuous batching is not used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from pumsearch.models import ModelLoadError, hash_seed, load_pretrained, resolve_device
from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)


class TransformersGenerator:
    """The transformers backend. Prefixes are extended by token ids.

    ``max_batch_rows``: rows decoded together. ``kv_cache_mb``: the prefix cache's budget in MiB
    (None: a fifth of the free memory, at most 4 GiB; 0: no cache across calls, rows of one call
    that share a prompt still prefill it once). ``prefill_tokens``: padded tokens per prefill
    forward."""

    takes_token_ids = True
    samples_reproducible = True  # a sample's draws depend only on its seed (docs/backends.md)

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_batch_rows: int = 64,
                 kv_cache_mb: int | None = None, prefill_tokens: int = 8192) -> None:
        from pumsearch.backends.decode_loop import BatchDecoder

        if kv_cache_mb is not None and kv_cache_mb < 0:
            raise ValueError(f"kv_cache_mb must be >= 0 (got {kv_cache_mb})")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_rows = max_batch_rows
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()
        self._warned_no_template = False
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids()[0]
        self.eos_ids = set(self._eos_ids())
        self.decoder = BatchDecoder(model, tokenizer, pad_id=self.pad_id, kv_cache_mb=kv_cache_mb,
                                    prefill_tokens=prefill_tokens)

    @property
    def prefix_cache(self) -> Any:
        """The PrefixKVCache (its ``stats`` and ``bytes_used`` are for benchmarks)."""
        return self.decoder.prefix_cache

    @property
    def decode_stats(self) -> Any:
        """Forward passes so far (DecodeStats; for benchmarks)."""
        return self.decoder.stats

    @classmethod
    def load(cls, name: str, *, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False,
             **kwargs: Any) -> TransformersGenerator:
        device = resolve_device(device)
        tokenizer, model = load_pretrained(name, dtype=dtype, device=device,
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

    @property
    def max_context(self) -> int | None:
        """Positions the model reads (the engine refuses a longer prompt)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        from pumsearch.backends.decode_loop import Row

        rows, owners = [], []
        for i, req in enumerate(requests):
            ids = tuple(req.prompt_ids) if req.prompt_ids is not None else self._encode_text_prompt(req.prompt_text)
            for j in range(req.n):
                rows.append(Row(ids, hash_seed(req.seed, j), req.params))
                owners.append(i)
        with self._lock:
            results = self.decoder.run(rows, self.eos_ids, self.max_batch_rows)
        outputs = [GenerationOutput([], prompt_tokens=0) for _ in requests]
        for owner, row, result in zip(owners, rows, results, strict=True):
            outputs[owner].completions.append(self._completion(result))
            outputs[owner].prompt_tokens += len(row.prompt_ids)
            outputs[owner].cached_tokens += result.cached_tokens
        return outputs

    def _encode_text_prompt(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _completion(self, result: Any) -> Completion:
        ids, matched = result.token_ids, result.matched_stop
        text = self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True)
        if matched is not None:
            text = text[: text.find(matched)]
        logprob = sum(result.token_logprobs) if result.token_logprobs is not None else None
        return Completion(text=text, token_ids=ids, num_tokens=len(ids), finish_reason=result.finish_reason,
                          matched_stop=matched, logprob=logprob, token_logprobs=result.token_logprobs,
                          top_logprobs=result.top_logprobs)

    async def aclose(self) -> None:
        pass


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
