"""Generation with transformers on CPU or GPU: batched sampling with a hand-rolled decode loop.

Why not ``model.generate``: its sampling draws from one global random stream, so a request's
samples would depend on what else shares its batch. Here every row samples from its own stream,
seeded from the request's seed and the sample index, so a search is reproducible however many
problems run beside it. The loop (decode_loop.py) also detects stop strings per row, reports
exact token counts, finish reasons and (when asked) per-token log-probabilities, and keeps the
keys and values of prompts and step prefixes in a byte-budgeted prefix cache (kv_cache.py), so
the N samples of a prompt prefill it once and each round of a tree search prefills only the new
step. Async calls share one running decode loop: a call's rows join the batch while other calls'
rows decode, and each call returns as soon as its own rows finish, so the engine can hand each
search's round over as soon as it is ready (``admits_rows_while_running``). docs/backends.md says
why transformers' own continuous batching is not used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Hashable, Sequence
from typing import Any

from pumsearch.models import ModelLoadError, hash_seed, load_pretrained, resolve_device, resolve_dtype
from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)


class TransformersGenerator:
    """The transformers backend. Prefixes are extended by token ids.

    ``max_batch_rows``: rows decoded together. ``kv_cache_mb``: the prefix cache's budget in MiB
    (None: a fifth of the free memory, at most 4 GiB; 0: no cache across calls, rows of one call
    that share a prompt still prefill it once). ``prefill_tokens``: padded tokens per prefill
    forward. ``continuous``: async calls join the running decode batch, and the engine submits
    each search's work as soon as it is ready (False: one lock-step batch per round, as before)."""

    takes_token_ids = True

    def __init__(self, model: Any, tokenizer: Any, *, name: str, max_batch_rows: int = 64,
                 kv_cache_mb: int | None = None, prefill_tokens: int = 8192, continuous: bool = True) -> None:
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
        self.admits_rows_while_running = continuous
        self._feed = _CallFeed()

    @property
    def prefix_cache(self) -> Any:
        """The PrefixKVCache (its ``stats`` and ``bytes_used`` are for benchmarks)."""
        return self.decoder.prefix_cache

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

    @property
    def max_context(self) -> int | None:
        """Positions the model reads (the engine refuses a longer prompt)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """The rows of ``requests`` go to the running decode loop (started if none runs); this call
        returns when they have all finished, whatever else the loop is decoding."""
        from pumsearch.backends.decode_loop import check_prompts

        rows, owners = self._rows(requests)
        check_prompts(rows)
        if not rows:
            return self._outputs(requests, rows, owners, [])
        loop = asyncio.get_running_loop()
        call = _Call(loop, len(rows))
        if self._feed.submit(call, rows):  # started once this turn of the event loop is over, so
            loop.call_soon(self._start_loop)  # the calls made together are admitted together
        results = await call.future
        return self._outputs(requests, rows, owners, results)

    def _start_loop(self) -> None:
        # not a daemon: the interpreter waits for it at exit rather than killing it inside torch
        threading.Thread(target=self._serve_feed, name="pumsearch-decode").start()

    def _serve_feed(self) -> None:
        """The decode loop's thread: it serves the feed until no row is waiting or decoding."""
        try:
            with self._lock:
                self.decoder.serve(self._feed, self.eos_ids, self.max_batch_rows)
        except BaseException as err:  # every call in flight gets it; the next call starts afresh
            self._feed.fail(err)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        rows, owners = self._rows(requests)
        with self._lock:
            results = self.decoder.run(rows, self.eos_ids, self.max_batch_rows)
        return self._outputs(requests, rows, owners, results)

    def _rows(self, requests: Sequence[GenerationRequest]) -> tuple[list[Any], list[int]]:
        """One decode row per sample, and the request each belongs to."""
        from pumsearch.backends.decode_loop import Row

        rows, owners = [], []
        for i, req in enumerate(requests):
            ids = tuple(req.prompt_ids) if req.prompt_ids is not None else self._encode_text_prompt(req.prompt_text)
            for j in range(req.n):
                rows.append(Row(ids, hash_seed(req.seed, j), req.params))
                owners.append(i)
        return rows, owners

    def _outputs(self, requests: Sequence[GenerationRequest], rows: list[Any], owners: list[int],
                 results: list[Any]) -> list[GenerationOutput]:
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


class _Call:
    """One async generate call waiting on the decode loop: its rows' results, by index, handed to
    its event loop when the last one is in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rows: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self.results: list[Any] = [None] * rows
        self.remaining = rows

    def finish(self, index: int, result: Any) -> bool:
        """Record one row's result; True when it was the call's last."""
        self.results[index] = result
        self.remaining -= 1
        if self.remaining:
            return False
        self.loop.call_soon_threadsafe(_settle, self.future, self.results, None)
        return True

    def fail(self, err: BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, None, err)


def _settle(future: asyncio.Future[list[Any]], results: list[Any] | None, err: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if err is not None:
        future.set_exception(err)
    else:
        future.set_result(results)


class _CallFeed:
    """The rows of the async calls, queued for the decode loop's thread (decode_loop.RowFeed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[Hashable, Any]] = []
        self._open: set[_Call] = set()
        self.serving = False

    def submit(self, call: _Call, rows: list[Any]) -> bool:
        """Queue a call's rows; True when no loop is serving, so the caller must start one."""
        with self._lock:
            self._queue += [((call, j), row) for j, row in enumerate(rows)]
            self._open.add(call)
            start, self.serving = not self.serving, True
            return start

    def take(self, *, idle: bool) -> list[tuple[Hashable, Any]]:
        with self._lock:
            rows, self._queue = self._queue, []
            if idle and not rows:
                self.serving = False  # decided under the lock: a later submit starts a new loop
            return rows

    def done(self, key: Hashable, result: Any) -> None:
        call, index = key  # type: ignore[misc]
        if call.finish(index, result):
            with self._lock:
                self._open.discard(call)

    def fail(self, err: BaseException) -> None:
        with self._lock:
            calls, self._open, self._queue, self.serving = self._open, set(), [], False
        for call in calls:
            call.fail(err)


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
