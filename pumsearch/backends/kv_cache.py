"""A byte-budgeted prefix cache of attention keys and values, keyed by token ids (a radix tree).

Each edge of the tree holds a run of tokens and their keys and values for every layer, in one
tensor of shape ``[layers, 2, kv_heads, tokens, head_dim]``. A path from the root spells a token
sequence, so the keys and values of any cached prefix are the concatenation of the segments on
its path; sequences that share a prefix share those segments (the children of a node branch from
one copy). Keys carry their rotary position, and a token at depth d of the tree always sits at
position d of its sequence, so a segment is valid wherever its path is reused.

The tree never holds more than ``budget_bytes``: before a segment is stored, least-recently-used
leaves are evicted until it fits, and a segment larger than the whole budget is not stored.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

KVSource = Callable[[int, int], Any]
"""Returns the keys and values of positions ``[start, end)`` of the sequence being inserted,
shaped ``[layers, 2, kv_heads, end - start, head_dim]`` (a view is fine: it is copied)."""


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: Any  # [layers, 2, kv_heads, len(tokens), head_dim]; None at the root
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()


@dataclass
class CacheStats:
    lookups: int = 0
    matched_tokens: int = 0
    stored_tokens: int = 0
    evicted_tokens: int = 0
    peak_bytes: int = 0


class PrefixKVCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(int(budget_bytes), 0)
        self.root = _Node((), None, None)
        self.bytes_used = 0
        self.stats = CacheStats()
        self._clock = itertools.count(1)

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def match(self, ids: Sequence[int]) -> list[Any]:
        """The cached segments covering the longest cached prefix of ``ids``, in order (views; the
        last may be part of a segment). Their token counts add up to the matched length."""
        self.stats.lookups += 1
        segments: list[Any] = []
        node, pos, tick = self.root, 0, next(self._clock)
        while pos < len(ids) and (child := node.children.get(ids[pos])) is not None:
            shared = _shared_length(child.tokens, ids, pos)
            child.last_used = tick
            segments.append(child.kv if shared == len(child.tokens) else child.kv[:, :, :, :shared])
            pos += shared
            if shared < len(child.tokens):
                break
            node = child
        self.stats.matched_tokens += pos
        return segments

    def insert(self, ids: Sequence[int], kv_of: KVSource) -> int:
        """Store the keys and values of ``ids`` that are not cached yet (asking ``kv_of`` only for
        those positions). Returns the number of tokens stored (0 when they do not fit)."""
        if not self.enabled or not ids:
            return 0
        node, pos, tick = self.root, 0, next(self._clock)
        path = [node]
        while pos < len(ids) and (child := node.children.get(ids[pos])) is not None:
            shared = _shared_length(child.tokens, ids, pos)
            if shared < len(child.tokens):
                child = self._split(child, shared)
            child.last_used = tick
            path.append(child)
            node, pos = child, pos + shared
        if pos == len(ids):
            return 0
        segment = kv_of(pos, len(ids))
        size = segment.numel() * segment.element_size()
        if not self._make_room(size, keep=set(map(id, path))):
            return 0
        leaf = _Node(tuple(ids[pos:]), segment.clone(), node, last_used=tick)
        node.children[ids[pos]] = leaf
        self.bytes_used += size
        self.stats.stored_tokens += len(ids) - pos
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.bytes_used)
        return len(ids) - pos

    def clear(self) -> None:
        self.root = _Node((), None, None)
        self.bytes_used = 0

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s segment after ``at`` tokens; returns the new upper part. Both parts are
        copied, so evicting one frees its memory (a view would keep the whole segment alive)."""
        assert node.parent is not None
        upper = _Node(node.tokens[:at], node.kv[:, :, :, :at].clone(), node.parent, last_used=node.last_used)
        node.parent.children[node.tokens[0]] = upper
        node.tokens, node.kv, node.parent = node.tokens[at:], node.kv[:, :, :, at:].clone(), upper
        upper.children[node.tokens[0]] = node
        return upper

    def _make_room(self, size: int, keep: set[int]) -> bool:
        """Evict least-recently-used leaves (never a node in ``keep``) until ``size`` more fits,
        and a tenth of the budget more: finding the leaves walks the whole tree, so it should not
        happen at every insertion once the cache is full."""
        if size > self.budget_bytes:
            return False
        if self.bytes_used + size <= self.budget_bytes:
            return True
        target = min(self.budget_bytes - size, self.budget_bytes * 9 // 10)
        order = itertools.count()
        leaves = [(n.last_used, next(order), n) for n in self._nodes() if not n.children and id(n) not in keep]
        heapq.heapify(leaves)
        while self.bytes_used > target and leaves:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.bytes_used -= leaf.nbytes
            self.stats.evicted_tokens += len(leaf.tokens)
            if parent is not self.root and not parent.children and id(parent) not in keep:
                heapq.heappush(leaves, (parent.last_used, next(order), parent))
        return self.bytes_used + size <= self.budget_bytes

    def _nodes(self) -> list[_Node]:
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out


def _shared_length(tokens: tuple[int, ...], ids: Sequence[int], pos: int) -> int:
    """How many of ``tokens`` equal ``ids[pos:]``, from the start."""
    end = min(len(tokens), len(ids) - pos)
    if tuple(ids[pos : pos + end]) == tokens[:end]:
        return end
    return next(i for i in range(end) if tokens[i] != ids[pos + i])


def default_budget_mb(device: Any) -> int:
    """A fifth of the memory free on ``device`` (GPU memory for CUDA, available RAM otherwise),
    at most 4 GiB: enough for the prompts and live prefixes of a batch of searches, and it leaves
    the decode batch and the rest of the process room."""
    free = _free_bytes(device)
    return int(min(free // 5, 4 << 30) >> 20)


def _free_bytes(device: Any) -> int:
    import torch

    if str(device).startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30  # unknown: assume 2 GiB free
