"""Batched generation for the transformers backend: prefill only what the prefix cache lacks,
then decode one token per live row per step.

1. Prefill. Rows that share a prompt are prefilled once (Best-of-N's N samples, the M children
   of a beam). Each distinct prompt is looked up in the PrefixKVCache; only its uncached suffix
   runs through the model, with the cached keys and values copied in beside it, and the result
   goes back into the cache. The last prompt token always runs, for its logits.
2. Decode. Every row samples from its own seeded stream (sampling.py), so its tokens do not
   depend on its batch mates; a finished row leaves the batch, and rows still waiting join it
   (prefilled, then merged in) when a quarter of it is free, so a call longer than the batch has
   one tail; a row that stopped at a step delimiter leaves its keys and values in the cache,
   where the next round of a tree search (which extends exactly that prefix) finds them.
3. Stops. End of sequence and token caps are checked for the whole batch at once; the decoded
   tail of a row is read for stop strings only on steps whose token could complete one.

Models whose cache is not plain attention layers (or sliding-window models on sequences longer
than the window) take a plain path: transformers' DynamicCache, no prefix sharing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
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
class _Batch:
    """The rows decoding together, in batch order: their keys and values, where each row's
    positions sit in them, and per row the next-token logits, next position and tokens so far."""

    kv: Any  # KVBuffer, or _PlainKV on the plain path
    layouts: list[RowLayout] | None  # None on the plain path (no prefix sharing, no merging)
    members: list[int]  # batch position -> row of the call
    logits: torch.Tensor
    positions: torch.Tensor
    steps: np.ndarray
    sampling: RowSampling

    def select(self, live: list[int]) -> tuple[_Batch, torch.Tensor]:
        """The batch of the ``live`` rows (their order may change: the buffer moves as few rows as
        it can), and the old batch positions of its rows, in order."""
        order = self.kv.keep_rows(live)
        keep = torch.tensor(order, device=self.positions.device)
        layouts = None if self.layouts is None else [self.layouts[i] for i in order]
        batch = _Batch(self.kv, layouts, [self.members[i] for i in order], self.logits[keep], self.positions[keep],
                       self.steps[order], self.sampling.select(order))
        return batch, keep


@dataclass
class _Prefilled:
    kv: Any  # KVBuffer, or _PlainKV on the plain path
    layouts: list[RowLayout] | None  # per row; None on the plain path
    logits: torch.Tensor  # [rows, vocab]: next-token logits at the end of each prompt
    cached: list[int]


@dataclass
class DecodeStats:
    """Forward passes so far: decode steps (one token per live row), the rows they carried, and
    prefill forwards. A tree search's rounds each last as long as their slowest row, so these
    say how many forwards a strategy needs, apart from how much each costs (benchmarks)."""

    decode_steps: int = 0
    row_steps: int = 0
    prefill_forwards: int = 0


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
        self.stats = DecodeStats()

    # -- one call -------------------------------------------------------------------------------
    def run(self, rows: list[Row], eos_ids: set[int], max_rows: int = 64) -> list[RowResult]:
        """Generate every row, at most ``max_rows`` at a time. Rows join the running batch as
        others finish (a quarter of the batch at a time), so a long call has one tail, not one
        per ``max_rows`` rows."""
        if any(not row.prompt_ids for row in rows):
            raise ValueError("a generation request has an empty prompt: give it at least one token")
        with torch.inference_mode():
            return self._run(rows, eos_ids, max_rows)

    def _run(self, rows: list[Row], eos_ids: set[int], max_rows: int) -> list[RowResult]:
        state: _RowState | None = None
        cached = [0] * len(rows)
        pending, batch = list(range(len(rows))), None
        while batch is not None or pending:
            room = max_rows - (0 if batch is None else len(batch.members))
            if pending and (batch is None or self._may_join(batch, [rows[i] for i in pending[:room]], max_rows)):
                joining, pending = pending[:room], pending[room:]
                new = self._admit([rows[i] for i in joining], joining, cached)
                batch = new if batch is None else self._merge(batch, new)
            state = state or _RowState(rows, self._stop_screen(batch.logits.shape[-1]), eos_ids, self.tokenizer)
            batch = self._step(rows, batch, state)
        assert state is not None
        return state.results(cached)

    def _may_join(self, batch: _Batch, joining: list[Row], max_rows: int) -> bool:
        """Rows join a running batch when a quarter of it is free and both share prefixes (the
        plain path's DynamicCache cannot take rows of another length)."""
        room = max_rows - len(batch.members)
        return batch.layouts is not None and room >= max(1, max_rows // 4) and self._shares_prefixes(joining)

    def _admit(self, subset: list[Row], joining: list[int], cached: list[int]) -> _Batch:
        """Prefill the joining rows, with prefix sharing where the model allows it."""
        prefilled = self._prefill_shared(subset) if self._shares_prefixes(subset) else self._prefill_plain(subset)
        for i, count in zip(joining, prefilled.cached, strict=True):
            cached[i] = count
        sampling = RowSampling.of([r.seed for r in subset], [r.params.temperature for r in subset],
                                  [r.params.top_p for r in subset], self.device)
        positions = torch.tensor([len(r.prompt_ids) for r in subset], device=self.device)
        return _Batch(prefilled.kv, prefilled.layouts, list(joining), prefilled.logits, positions,
                      np.zeros(len(subset), dtype=np.int64), sampling)

    def _step(self, rows: list[Row], batch: _Batch, state: _RowState) -> _Batch | None:
        """Sample one token per row, retire the rows that finished, run the rest one position on."""
        tokens = sample_tokens(batch.logits, batch.sampling, batch.steps)
        finished = state.record(batch.members, batch.steps, tokens, batch.logits)
        if finished:
            if batch.layouts is not None:
                self._keep_steps(rows, batch, finished, state)
            live = [i for i in range(len(batch.members)) if i not in finished]
            if not live:
                return None
            batch, kept = batch.select(live)
            tokens = tokens[kept]
        kv = batch.kv
        kv.reserve(1)
        kv.mask[:, kv.length] = 1
        batch.logits = self._forward(kv, tokens[:, None], batch.positions[:, None], decode=True)
        batch.positions, batch.steps = batch.positions + 1, batch.steps + 1
        return batch

    def _merge(self, running: _Batch, joining: _Batch) -> _Batch:
        """One batch of both, each right-aligned so every row's next token goes in one column.
        Columns no row uses any more (the padding left of the earliest live row) are dropped, so
        the buffer stays as wide as its widest row, however long rows keep joining it."""
        assert self.shape is not None and running.layouts is not None and joining.layouts is not None
        spans = [(part, min(layout.first_column for layout in part.layouts)) for part in (running, joining)]
        length = max(part.kv.length - first for part, first in spans)
        headroom = max(part.kv.capacity - part.kv.length for part, _ in spans)
        kv = KVBuffer(self.shape, len(running.members) + len(joining.members), length + headroom)
        kv.length = length
        layouts, start = [], 0
        for part, first in spans:
            n, width = len(part.members), part.kv.length - first
            used, target = slice(first, part.kv.length), slice(length - width, length)
            kv.data[:, :, start : start + n, :, target] = part.kv.data[:, :, :, :, used]
            kv.mask[start : start + n, target] = part.kv.mask[:, used]
            layouts += [layout.shifted(length - width - first) for layout in part.layouts]
            start += n
        return _Batch(kv, layouts, running.members + joining.members,
                      torch.cat([running.logits, joining.logits]), torch.cat([running.positions, joining.positions]),
                      np.concatenate([running.steps, joining.steps]), running.sampling.concat(joining.sampling))

    def _shares_prefixes(self, rows: list[Row]) -> bool:
        if self.shape is None:
            return False
        window = self.shape.sliding_window  # within the window, sliding attention is full attention
        longest = max(len(r.prompt_ids) for r in rows) + _MAX_GAP  # the widest a prefill forward gets
        return window is None or longest + max(r.params.max_tokens for r in rows) <= window

    def _forward(self, kv: Any, input_ids: torch.Tensor, positions: torch.Tensor, *, decode: bool = False
                 ) -> torch.Tensor:
        if decode:
            self.stats.decode_steps += 1
            self.stats.row_steps += input_ids.shape[0]
        else:
            self.stats.prefill_forwards += 1
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
        first = {}
        for b, row in enumerate(rows):  # the first row of a prompt computed its suffix; the rest shared it
            first.setdefault(row.prompt_ids, b)
        for i, prompt in enumerate(prompts):
            prefilled.cached[first[prompt]] = cached[i]
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
    def _keep_steps(self, rows: list[Row], batch: _Batch, finished: set[int], state: _RowState) -> None:
        """Rows that stopped at a step delimiter leave their keys and values in the prefix cache:
        a tree search extends exactly these prefixes next round. (A row that ended or hit its cap
        is a finished solution; nothing extends it.) The last token's keys were never computed."""
        assert batch.layouts is not None
        for i in finished:
            b = batch.members[i]
            if state.finish[b] != "step" or not self.prefix_cache.enabled:
                continue
            ids = rows[b].prompt_ids + tuple(state.token_ids(b)[:-1])
            layout = batch.layouts[i]
            self.prefix_cache.insert(ids, lambda s, e, i=i, lay=layout: batch.kv.row_kv(i, lay, s, e))

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

    def keep_rows(self, live: list[int]) -> list[int]:
        keep = torch.tensor(live, device=self.mask.device)
        self.cache.batch_select_indices(keep)
        self.mask = self.mask[keep]
        return live


class _RowState:
    """What each row has generated so far and why it stopped."""

    def __init__(self, rows: list[Row], stops: StopScreen, eos_ids: set[int], tokenizer: Any) -> None:
        self.rows, self.tokenizer = rows, tokenizer
        device, vocab = stops.device, stops.vocab_size
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

    def record(self, active: list[int], steps: np.ndarray, tokens: torch.Tensor, logits: torch.Tensor) -> set[int]:
        """Append each row's token (its ``steps``-th); returns the batch positions that finished."""
        index = torch.tensor(active, device=tokens.device)
        at = torch.from_numpy(steps).to(tokens.device)
        self.generated[index, at] = tokens
        if self.logprobs is not None:
            self.logprobs.record(active, at, tokens, logits)
        eos = self.is_eos[tokens]
        capped = self.max_tokens[index] <= at + 1
        may_stop = self.may_stop[self.stop_group[index], tokens] & ~eos
        finished: dict[int, str] = {i: "eos" for i in eos.nonzero().flatten().tolist()}
        for i in may_stop.nonzero().flatten().tolist():
            if self._stop_in_tail(active[i], int(steps[i]) + 1):
                finished[i] = "step"
        for i in capped.nonzero().flatten().tolist():
            finished.setdefault(i, "length")
        for i, reason in finished.items():
            self.finish[active[i]], self.lengths[active[i]] = reason, int(steps[i]) + 1
        return set(finished)

    def _stop_in_tail(self, b: int, length: int) -> bool:
        """The decoded tail of row ``b`` (its longest stop string plus two tokens) holds a stop."""
        tail_ids = self.generated[b, max(0, length - self.windows[b]) : length].tolist()
        tail = self.tokenizer.decode(tail_ids, skip_special_tokens=True)
        self.matched[b] = next((s for s in self.rows[b].params.stop if s in tail), None)
        return self.matched[b] is not None

    def token_ids(self, b: int) -> list[int]:
        """What row ``b`` generated (every row finishes: the loop runs to the largest cap)."""
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

    def record(self, active: list[int], steps: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        positions = [i for i, b in enumerate(active) if self.wants[b]]
        if not positions:
            return
        at = torch.tensor(positions, device=tokens.device)
        rows, step = torch.tensor([active[i] for i in positions], device=tokens.device), steps[at]
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
