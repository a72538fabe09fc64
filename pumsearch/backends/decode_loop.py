"""Batched generation for the transformers backend: prefill only what the prefix cache lacks,
then decode one token per live row per step.

1. Prefill. Rows that share a prompt are prefilled once (Best-of-N's N samples, the M children
   of a beam). Each distinct prompt is looked up in the PrefixKVCache; only its uncached suffix
   runs through the model, with the cached keys and values copied in beside it, and the result
   goes back into the cache. The last prompt token always runs, for its logits.
2. Decode. Every row samples from its own seeded stream (sampling.py), so its tokens do not
   depend on its batch mates; a finished row leaves the batch; a row that stopped at a step
   delimiter leaves its keys and values in the cache, where the next round of a tree search
   (which extends exactly that prefix) finds them.
3. Stops. End of sequence and token caps are checked for the whole batch at once; the decoded
   tail of a row is read for stop strings only on steps whose token could complete one.

Models whose cache is not plain attention layers (or sliding-window models on sequences longer
than the window) take a plain path: transformers' DynamicCache, no prefix sharing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from pumsearch.backends.kv_batch import KVBuffer, KVShape, RowLayout, kv_shape_of
from pumsearch.backends.kv_cache import PrefixKVCache, default_budget_mb
from pumsearch.backends.sampling import RowSampling, StopScreen, sample_tokens, token_logprobs
from pumsearch.search.protocols import SamplingParams

_FIRST_CAPACITY = 64  # decode columns reserved at first; the buffer grows by half when it fills
_MAX_GAP = 16  # padding columns a prefill forward may add past its longest prompt


@dataclass
class Row:
    prompt_ids: tuple[int, ...]
    seed: int
    params: SamplingParams

    @property
    def wants_logprobs(self) -> bool:
        return self.params.want_logprobs or self.params.top_logprobs > 0


@dataclass
class RowResult:
    token_ids: list[int]
    finish_reason: str
    matched_stop: str | None
    cached_tokens: int  # prompt tokens this row did not compute (from the cache or a batch mate)
    token_logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class _Part:
    """One prefill forward: its distinct prompts, their keys and values, their last logits."""

    prompts: list[tuple[int, ...]]
    buffer: KVBuffer
    layouts: list[RowLayout]
    logits: torch.Tensor

    def kv_of(self, j: int) -> Any:
        return lambda start, end: self.buffer.row_kv(j, self.layouts[j], start, end)


@dataclass
class _Prefilled:
    kv: Any  # KVBuffer, or _PlainKV on the plain path
    layouts: list[RowLayout] | None  # per row; None on the plain path
    logits: torch.Tensor  # [rows, vocab]: next-token logits at the end of each prompt
    cached: list[int]


class BatchDecoder:
    def __init__(self, model: Any, tokenizer: Any, *, pad_id: int, kv_cache_mb: int | None = None,
                 prefill_tokens: int = 8192) -> None:
        self.model, self.tokenizer, self.pad_id = model, tokenizer, pad_id
        self.device = next(model.parameters()).device
        self.shape: KVShape | None = kv_shape_of(model)
        budget_mb = default_budget_mb(self.device) if kv_cache_mb is None else kv_cache_mb
        self.prefix_cache = PrefixKVCache((budget_mb << 20) if self.shape is not None else 0)
        self.prefill_tokens = prefill_tokens
        self._cache_keyword = cache_keyword(model)
        # only the last position's logits are needed: the lm head over a whole prompt is costly
        keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._keep_last_logits = {"logits_to_keep": 1} if keeps_logits else {}
        self._stops: StopScreen | None = None

    # -- one batch ------------------------------------------------------------------------------
    def run(self, rows: list[Row], eos_ids: set[int]) -> list[RowResult]:
        if any(not row.prompt_ids for row in rows):
            raise ValueError("a generation request has an empty prompt: give it at least one token")
        with torch.inference_mode():
            prefilled = self._prefill_shared(rows) if self._shares_prefixes(rows) else self._prefill_plain(rows)
            return self._decode(rows, prefilled, eos_ids)

    def _shares_prefixes(self, rows: list[Row]) -> bool:
        if self.shape is None:
            return False
        window = self.shape.sliding_window  # within the window, sliding attention is full attention
        longest = max(len(r.prompt_ids) for r in rows)
        return window is None or 2 * longest + max(r.params.max_tokens for r in rows) <= window

    def _forward(self, kv: Any, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        width = kv.length + input_ids.shape[1]
        out = self.model(input_ids=input_ids, attention_mask=kv.mask[:, :width], position_ids=positions,
                         use_cache=True, **{self._cache_keyword: kv.cache}, **self._keep_last_logits)
        kv.advance(input_ids.shape[1])
        return out.logits[:, -1, :].float()

    # -- prefill with prefix sharing ------------------------------------------------------------
    def _prefill_shared(self, rows: list[Row]) -> _Prefilled:
        prompts = list(dict.fromkeys(r.prompt_ids for r in rows))
        segments = [self.prefix_cache.match(p[:-1]) for p in prompts]
        cached = [_token_count(segs) for segs in segments]
        groups = self._prefill_groups([len(p) for p in prompts], cached)
        parts = []
        for group in groups:
            part = self._prefill_group([prompts[i] for i in group], [segments[i] for i in group])
            for j, prompt in enumerate(part.prompts):  # cached at once: later chunks of the call reuse them
                self.prefix_cache.insert(prompt, part.kv_of(j))
            parts.append(part)
        where = {prompts[i]: (g, j) for g, group in enumerate(groups) for j, i in enumerate(group)}
        prefilled = self._assemble(rows, parts, [where[r.prompt_ids] for r in rows])
        seen: set[tuple[int, ...]] = set()
        for b, row in enumerate(rows):  # the first row of a prompt computed its suffix; the rest shared it
            if row.prompt_ids not in seen:
                prefilled.cached[b] = cached[prompts.index(row.prompt_ids)]
            seen.add(row.prompt_ids)
        return prefilled

    def _prefill_groups(self, lengths: list[int], cached: list[int]) -> list[list[int]]:
        """Prompts in forwards of at most ``prefill_tokens`` padded tokens, shortest suffix first
        (so prompts of similar length pad little). A forward is as wide as its longest cached part
        plus its longest suffix, so a prompt that would widen it well past its longest prompt (a
        mostly cached prompt beside a mostly new one) starts another forward: otherwise every
        decode step would attend over the gap."""
        groups: list[list[int]] = [[]]
        past = suffix = longest = 0
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i] - cached[i]):
            new_past, new_suffix, new_longest = max(past, cached[i]), max(suffix, lengths[i] - cached[i]), \
                max(longest, lengths[i])
            if groups[-1] and (new_suffix * (len(groups[-1]) + 1) > self.prefill_tokens
                               or new_past + new_suffix > new_longest + _MAX_GAP):
                groups.append([])
                new_past, new_suffix, new_longest = cached[i], lengths[i] - cached[i], lengths[i]
            groups[-1].append(i)
            past, suffix, longest = new_past, new_suffix, new_longest
        return groups

    def _prefill_group(self, prompts: list[tuple[int, ...]], segments: list[list[Any]]) -> _Part:
        """One forward over the uncached suffixes, each row laid out [pad][cached][pad][suffix]."""
        assert self.shape is not None
        cached = [_token_count(segs) for segs in segments]
        suffixes = [prompt[c:] for prompt, c in zip(prompts, cached, strict=True)]
        past, width = max(cached), max(map(len, suffixes))
        buffer = KVBuffer(self.shape, len(prompts), past + width)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(prompts), width), dtype=torch.long)
        layouts = []
        for j, (segs, c, suffix) in enumerate(zip(segments, cached, suffixes, strict=True)):
            column = past - c
            for seg in segs:
                buffer.data[:, :, j, :, column : column + seg.shape[3]] = seg
                column += seg.shape[3]
            start = past + width - len(suffix)
            buffer.mask[j, past - c : past] = 1
            buffer.mask[j, start:] = 1
            input_ids[j, width - len(suffix):] = torch.tensor(suffix)
            positions[j, width - len(suffix):] = torch.arange(c, c + len(suffix))
            layouts.append(RowLayout(past - c, c, start))
        buffer.length = past
        logits = self._forward(buffer, input_ids.to(self.device), positions.to(self.device))
        return _Part(prompts, buffer, layouts, logits)

    def _assemble(self, rows: list[Row], parts: list[_Part], row_part: list[tuple[int, int]]) -> _Prefilled:
        """The decode batch: each row gets a copy of its prompt's keys and values (right-aligned,
        so every row's next token goes in the same column) and its prompt's last logits."""
        assert self.shape is not None
        width = max(part.buffer.length for part in parts)
        kv = KVBuffer(self.shape, len(rows), width + min(_FIRST_CAPACITY, max(r.params.max_tokens for r in rows)))
        kv.length = width
        layouts = [parts[g].layouts[j].shifted(width - parts[g].buffer.length) for g, j in row_part]
        for g, part in enumerate(parts):
            members = [b for b, (pg, _) in enumerate(row_part) if pg == g]
            if not members:
                continue
            source = torch.tensor([row_part[b][1] for b in members], device=self.device)
            target = torch.tensor(members, device=self.device)
            offset, length = width - part.buffer.length, part.buffer.length
            kv.data[:, :, target, :, offset:width] = part.buffer.data[:, :, source, :, :length]
            kv.mask[target, offset:width] = part.buffer.mask[source, :length]
        logits = torch.stack([parts[g].logits[j] for g, j in row_part])
        return _Prefilled(kv, layouts, logits, [len(r.prompt_ids) for r in rows])

    # -- prefill without prefix sharing ---------------------------------------------------------
    def _prefill_plain(self, rows: list[Row]) -> _Prefilled:
        width = max(len(r.prompt_ids) for r in rows)
        kv = _PlainKV(self.model, len(rows), width + min(_FIRST_CAPACITY, max(r.params.max_tokens for r in rows)),
                      self.device)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
            kv.mask[b, width - len(row.prompt_ids) : width] = 1
        positions = (kv.mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(kv, input_ids.to(self.device), positions)
        return _Prefilled(kv, None, logits, [0] * len(rows))

    # -- decode ---------------------------------------------------------------------------------
    def _decode(self, rows: list[Row], prefilled: _Prefilled, eos_ids: set[int]) -> list[RowResult]:
        kv, layouts, logits = prefilled.kv, prefilled.layouts, prefilled.logits
        state = _RowState(rows, self._stop_screen(logits.shape[-1]), eos_ids, self.tokenizer, logits.shape[-1])
        sampling = RowSampling.of([r.seed for r in rows], [r.params.temperature for r in rows],
                                  [r.params.top_p for r in rows], self.device)
        positions = torch.tensor([len(r.prompt_ids) for r in rows], device=self.device)
        active = list(range(len(rows)))  # batch position -> row
        for step in range(max(r.params.max_tokens for r in rows)):
            tokens = sample_tokens(logits, sampling, step)
            finished = state.record(active, step, tokens, logits)
            if finished:
                if layouts is not None:
                    self._keep_steps(rows, kv, layouts, active, finished, state)
                live = [i for i in range(len(active)) if i not in finished]
                if not live:
                    break
                keep = torch.tensor(live, device=self.device)
                kv.keep_rows(keep)
                sampling, positions, tokens = sampling.select(live), positions[keep], tokens[keep]
                active = [active[i] for i in live]
                if layouts is not None:
                    layouts = [layouts[i] for i in live]
            kv.reserve(1)
            kv.mask[:, kv.length] = 1
            logits = self._forward(kv, tokens[:, None], positions[:, None])
            positions = positions + 1
        return state.results(prefilled.cached)

    def _keep_steps(self, rows: list[Row], kv: KVBuffer, layouts: list[RowLayout], active: list[int],
                    finished: set[int], state: _RowState) -> None:
        """Rows that stopped at a step delimiter leave their keys and values in the prefix cache:
        a tree search extends exactly these prefixes next round. (A row that ended or hit its cap
        is a finished solution; nothing extends it.) The last token's keys were never computed."""
        for i in finished:
            b = active[i]
            if state.finish[b] != "step" or not self.prefix_cache.enabled:
                continue
            generated = state.token_ids(b)
            ids = rows[b].prompt_ids + tuple(generated[:-1])
            self.prefix_cache.insert(ids, lambda s, e, i=i: kv.row_kv(i, layouts[i], s, e))

    def _stop_screen(self, vocab: int) -> StopScreen:
        if self._stops is None or self._stops.vocab_size != vocab:
            self._stops = StopScreen(self.tokenizer, vocab, self.device)
        return self._stops


def cache_keyword(model: Any) -> str:
    """transformers 5.x renames ``past_key_values`` to ``cache``; use whichever forward takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _token_count(segments: list[Any]) -> int:
    return sum(segment.shape[3] for segment in segments)


class _PlainKV:
    """transformers' DynamicCache with the same interface as KVBuffer (no prefix sharing)."""

    def __init__(self, model: Any, rows: int, capacity: int, device: Any) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=model.config)
        self.mask = torch.zeros((rows, capacity), dtype=torch.long, device=device)
        self.length = 0

    def advance(self, tokens: int) -> None:
        self.length += tokens

    def reserve(self, columns: int) -> None:
        if self.length + columns > self.mask.shape[1]:
            grown = self.mask.new_zeros((self.mask.shape[0], self.mask.shape[1] * 3 // 2 + columns))
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown

    def keep_rows(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask[keep]


class _RowState:
    """What each row has generated so far and why it stopped."""

    def __init__(self, rows: list[Row], stops: StopScreen, eos_ids: set[int], tokenizer: Any, vocab: int) -> None:
        self.rows, self.tokenizer = rows, tokenizer
        device = stops.device
        longest = max(r.params.max_tokens for r in rows)
        self.is_eos = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.is_eos[[t for t in eos_ids if 0 <= t < vocab]] = True
        self.generated = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
        self.lengths = [0] * len(rows)
        self.finish: list[str | None] = [None] * len(rows)
        self.matched: list[str | None] = [None] * len(rows)
        self.max_tokens = torch.tensor([r.params.max_tokens for r in rows], device=device)
        stop_sets = list(dict.fromkeys(r.params.stop for r in rows))
        self.stop_group = torch.tensor([stop_sets.index(r.params.stop) for r in rows], device=device)
        self.may_stop = torch.stack([stops.candidates(s) if s else
                                     torch.zeros(vocab, dtype=torch.bool, device=device) for s in stop_sets])
        self.windows = [max((len(s) for s in r.params.stop), default=0) + 2 for r in rows]
        self.logprobs = _LogprobRecorder(rows, longest, device) if any(r.wants_logprobs for r in rows) else None

    def record(self, active: list[int], step: int, tokens: torch.Tensor, logits: torch.Tensor) -> set[int]:
        """Append this step's tokens; returns the batch positions that finished."""
        index = torch.tensor(active, device=tokens.device)
        self.generated[index, step] = tokens
        if self.logprobs is not None:
            self.logprobs.record(active, step, tokens, logits)
        for b in active:
            self.lengths[b] = step + 1
        eos = self.is_eos[tokens]
        capped = self.max_tokens[index] <= step + 1
        may_stop = self.may_stop[self.stop_group[index], tokens] & ~eos
        finished: set[int] = set()
        for i in eos.nonzero().flatten().tolist():
            self.finish[active[i]] = "eos"
            finished.add(i)
        for i in may_stop.nonzero().flatten().tolist():
            if self._stop_in_tail(active[i]):
                finished.add(i)
        for i in capped.nonzero().flatten().tolist():
            if i not in finished:
                self.finish[active[i]] = "length"
                finished.add(i)
        return finished

    def _stop_in_tail(self, b: int) -> bool:
        """The decoded tail of row ``b`` (its longest stop string plus two tokens) holds a stop."""
        n = self.lengths[b]
        tail_ids = self.generated[b, max(0, n - self.windows[b]) : n].tolist()
        tail = self.tokenizer.decode(tail_ids, skip_special_tokens=True)
        hit = next((s for s in self.rows[b].params.stop if s in tail), None)
        if hit is not None:
            self.finish[b], self.matched[b] = "step", hit
        return hit is not None

    def token_ids(self, b: int) -> list[int]:
        return self.generated[b, : self.lengths[b]].tolist()

    def results(self, cached: list[int]) -> list[RowResult]:
        out = []
        for b in range(len(self.rows)):
            result = RowResult(self.token_ids(b), self.finish[b] or "length", self.matched[b], cached[b])
            if self.logprobs is not None and self.rows[b].wants_logprobs:
                result.token_logprobs, result.top_logprobs = self.logprobs.of(b, self.lengths[b])
            out.append(result)
        return out


class _LogprobRecorder:
    """Per generated token: its log-probability and the top-k alternatives, for the rows that ask
    (the rest of the batch pays nothing)."""

    def __init__(self, rows: list[Row], longest: int, device: Any) -> None:
        self.wants = [r.wants_logprobs for r in rows]
        self.top_k = [r.params.top_logprobs for r in rows]
        self.k = max(self.top_k)
        self.chosen = torch.zeros((len(rows), longest), dtype=torch.float32, device=device)
        self.top_values = torch.zeros((len(rows), longest, self.k), dtype=torch.float32, device=device)
        self.top_ids = torch.zeros((len(rows), longest, self.k), dtype=torch.long, device=device)

    def record(self, active: list[int], step: int, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        positions = [i for i, b in enumerate(active) if self.wants[b]]
        if not positions:
            return
        at = torch.tensor(positions, device=tokens.device)
        rows = torch.tensor([active[i] for i in positions], device=tokens.device)
        chosen, values, ids = token_logprobs(logits[at], tokens[at], self.k)
        self.chosen[rows, step] = chosen
        if values is not None and ids is not None:
            self.top_values[rows, step] = values
            self.top_ids[rows, step] = ids

    def of(self, b: int, length: int) -> tuple[list[float], list[list[tuple[int, float]]] | None]:
        chosen = self.chosen[b, :length].tolist()
        k = self.top_k[b]
        if k <= 0:
            return chosen, None
        ids, values = self.top_ids[b, :length, :k].tolist(), self.top_values[b, :length, :k].tolist()
        return chosen, [list(zip(i, v, strict=True)) for i, v in zip(ids, values, strict=True)]
