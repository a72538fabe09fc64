"""The keys and values of one decode batch in a single preallocated tensor, seen by a transformers
model as its ``Cache``.

One tensor ``[layers, 2, rows, kv_heads, capacity, head_dim]`` holds every layer: a row's cached
prefix is written into it with one copy, a finished row's keys and values are read out with one
slice, and dropping finished rows is one index. transformers' DynamicCache instead concatenates
each layer's tensors at every step (a copy of the whole cache per token).

Columns are not positions: a row is laid out as ``[pad][cached prefix][pad][new tokens...]`` so
that rows with different cached lengths can prefill their uncached suffixes in one forward. The
attention mask hides the padding and ``position_ids`` carry the true positions; ``RowLayout``
maps positions back to columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer, DynamicSlidingWindowLayer


@dataclass(frozen=True)
class KVShape:
    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    sliding_window: int | None  # the smallest sliding window of any layer; None if none slides
    sliding_layers: tuple[bool, ...]

    @property
    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


def kv_shape_of(model: Any) -> KVShape | None:
    """The model's cache geometry, or None when its cache is not plain attention layers (linear
    attention, state-space or other layers the buffer cannot stand in for)."""
    from transformers import DynamicCache

    try:
        config = model.config.get_text_config(decoder=True)
        layers = DynamicCache(config=model.config).layers
    except (AttributeError, KeyError, TypeError, ValueError):  # a config transformers' cache cannot read
        return None
    if not layers or any(type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers):
        return None
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    windows = [layer.sliding_window for layer in layers if isinstance(layer, DynamicSlidingWindowLayer)]
    param = next(model.parameters())
    return KVShape(len(layers), int(heads), int(head_dim), param.dtype, param.device,
                   min(windows) if windows else None, tuple(isinstance(x, DynamicSlidingWindowLayer) for x in layers))


@dataclass
class RowLayout:
    """Where a row's positions sit in the buffer: positions ``[0, cached)`` from column
    ``cached_col``, positions ``cached`` onwards from column ``tail_col``."""

    cached_col: int
    cached: int
    tail_col: int

    @property
    def first_column(self) -> int:
        return self.cached_col if self.cached else self.tail_col

    def shifted(self, by: int) -> RowLayout:
        return RowLayout(self.cached_col + by, self.cached, self.tail_col + by)


class KVBuffer:
    def __init__(self, shape: KVShape, rows: int, capacity: int) -> None:
        self.shape = shape
        self.data = torch.zeros((shape.layers, 2, rows, shape.kv_heads, capacity, shape.head_dim),
                                dtype=shape.dtype, device=shape.device)
        self.mask = torch.zeros((rows, capacity), dtype=torch.long, device=shape.device)
        self.length = 0  # columns in use

    @property
    def cache(self) -> Cache:
        """A transformers Cache over this buffer, made afresh for each forward: a cache kept on the
        buffer would form a reference cycle, and the buffer's memory would wait for the garbage
        collector instead of going when the batch ends."""
        return Cache(layers=[_BufferLayer(self, i, sliding) for i, sliding in enumerate(self.shape.sliding_layers)])

    @property
    def rows(self) -> int:
        return self.data.shape[2]

    @property
    def capacity(self) -> int:
        return self.data.shape[4]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A layer's new keys and values go after the columns in use (``advance`` moves past them
        once every layer has written); returns the layer's keys and values up to them."""
        end = self.length + keys.shape[-2]
        self.data[layer, 0, :, :, self.length:end] = keys
        self.data[layer, 1, :, :, self.length:end] = values
        return self.data[layer, 0, :, :, :end], self.data[layer, 1, :, :, :end]

    def advance(self, tokens: int) -> None:
        self.length += tokens

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` more columns, growing by half again at least (amortised)."""
        need = self.length + columns
        if need <= self.capacity:
            return
        new_capacity = max(need, self.capacity + self.capacity // 2)
        data = self.data.new_zeros((*self.data.shape[:4], new_capacity, self.data.shape[5]))
        data[:, :, :, :, : self.length] = self.data[:, :, :, :, : self.length]
        mask = self.mask.new_zeros((self.rows, new_capacity))
        mask[:, : self.length] = self.mask[:, : self.length]
        self.data, self.mask = data, mask

    def keep_rows(self, live: list[int]) -> list[int]:
        """Drop every row not in ``live`` (ascending row indices), so they stop costing compute;
        returns the old indices of the rows kept, in their new order. Live rows already among the
        first ``len(live)`` rows stay where they are and the rows past them fill the gaps, so
        only those are copied (copying the whole buffer each time a row finishes cost a tenth of
        a beam search's time); the buffer then narrows to the rows kept, a view of the same
        memory, which is given back when the buffer next grows or the batch ends."""
        kept = len(live)
        movers = [i for i in live if i >= kept]
        gaps = sorted(set(range(kept)) - set(live))
        order = list(range(kept))
        for gap, mover in zip(gaps, movers, strict=True):
            order[gap] = mover
        if movers:
            self.data[:, :, gaps] = self.data[:, :, movers]
            self.mask[gaps] = self.mask[movers]
        self.data, self.mask = self.data[:, :, :kept], self.mask[:kept]
        return order

    def row_kv(self, row: int, layout: RowLayout, start: int, end: int) -> torch.Tensor:
        """Keys and values of positions ``[start, end)`` of ``row``, ``[layers, 2, heads, n, dim]``."""
        pieces = []
        if start < layout.cached:
            stop = min(end, layout.cached)
            pieces.append(self.data[:, :, row, :, layout.cached_col + start : layout.cached_col + stop])
            start = stop
        if start < end:
            first = layout.tail_col + start - layout.cached
            pieces.append(self.data[:, :, row, :, first : first + end - start])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=3)


class _BufferLayer(CacheLayerMixin):
    """One layer of the model's cache, stored in the shared KVBuffer."""

    is_croppable = False

    def __init__(self, buffer: KVBuffer, index: int, sliding: bool) -> None:
        super().__init__()
        self.buffer, self.index, self.is_sliding = buffer, index, sliding
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self.buffer.write(self.index, key_states, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.buffer.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.buffer.length

    def get_max_length(self) -> int:
        return -1
