"""The prefix KV cache (radix tree): matching, sharing, least-recently-used eviction, the budget."""

from __future__ import annotations

import torch

from pumsearch.backends.kv_cache import PrefixKVCache

LAYERS, HEADS, DIM = 2, 1, 2
TOKEN_BYTES = LAYERS * 2 * HEADS * DIM * 4  # float32


def kv_for(ids: list[int]) -> torch.Tensor:
    """Keys and values that spell the token and its position, so a test can read back which
    sequence and position a segment came from."""
    kv = torch.zeros((LAYERS, 2, HEADS, len(ids), DIM))
    kv[..., 0] = torch.tensor(ids, dtype=torch.float32)
    kv[..., 1] = torch.arange(len(ids), dtype=torch.float32)
    return kv


def source(ids: list[int], asked: list[tuple[int, int]] | None = None):
    full = kv_for(ids)

    def kv_of(start: int, end: int) -> torch.Tensor:
        if asked is not None:
            asked.append((start, end))
        return full[:, :, :, start:end]

    return kv_of


def joined(segments: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(segments, dim=3) if segments else torch.zeros((LAYERS, 2, HEADS, 0, DIM))


def test_a_stored_sequence_and_its_prefixes_are_found_with_their_keys_and_values():
    cache = PrefixKVCache(budget_bytes=1 << 20)
    ids = [5, 6, 7, 8, 9]
    assert cache.insert(ids, source(ids)) == 5
    assert torch.equal(joined(cache.match(ids)), kv_for(ids))
    assert torch.equal(joined(cache.match([5, 6, 7])), kv_for(ids)[:, :, :, :3])  # part of a segment
    assert torch.equal(joined(cache.match([5, 6, 7, 8, 9, 10, 11])), kv_for(ids))  # longer query
    assert cache.match([6, 7]) == []  # not a prefix
    assert cache.match([5, 6, 1]) and joined(cache.match([5, 6, 1])).shape[3] == 2


def test_sequences_that_share_a_prefix_share_one_copy_of_it_and_only_new_tokens_are_computed():
    cache = PrefixKVCache(budget_bytes=1 << 20)
    a, b = [1, 2, 3, 4, 5], [1, 2, 3, 9, 9, 9]
    cache.insert(a, source(a))
    asked: list[tuple[int, int]] = []
    assert cache.insert(b, source(b, asked)) == 3
    assert asked == [(3, 6)]  # the shared three tokens were not asked for again
    assert cache.bytes_used == (5 + 3) * TOKEN_BYTES
    shared_a, shared_b = cache.match(a)[0], cache.match(b)[0]
    assert shared_a is shared_b and shared_a.shape[3] == 3  # the children branch from one copy
    assert torch.equal(joined(cache.match(b)), kv_for(b))
    assert cache.insert(a, source(a)) == 0  # already there


def test_least_recently_used_leaves_are_evicted_and_the_budget_is_never_exceeded():
    cache = PrefixKVCache(budget_bytes=9 * TOKEN_BYTES)
    root = [1, 2]
    a, b, c = [*root, 10, 11], [*root, 20, 21], [*root, 30, 31, 32, 33]
    for ids in (a, b):
        cache.insert(ids, source(ids))
        assert cache.bytes_used <= cache.budget_bytes
    cache.match(a)  # a is now more recent than b
    cache.insert(c, source(c))
    assert cache.bytes_used <= cache.budget_bytes
    assert joined(cache.match(b)).shape[3] == 2  # b's own tokens went; the shared root stayed
    assert torch.equal(joined(cache.match(a)), kv_for(a))
    assert torch.equal(joined(cache.match(c)), kv_for(c))
    assert cache.stats.peak_bytes <= cache.budget_bytes
    assert cache.stats.evicted_tokens == 2


def test_the_path_being_extended_is_never_evicted_to_make_room_for_its_own_leaf():
    cache = PrefixKVCache(budget_bytes=6 * TOKEN_BYTES)
    a = [1, 2, 3, 4]
    cache.insert(a, source(a))
    longer = [*a, 5, 6]
    assert cache.insert(longer, source(longer)) == 2
    assert torch.equal(joined(cache.match(longer)), kv_for(longer))
    other = [7, 8, 9]  # no room without evicting the whole of `longer`
    assert cache.insert(other, source(other)) == 3
    assert cache.bytes_used <= cache.budget_bytes
    assert torch.equal(joined(cache.match(other)), kv_for(other))


def test_a_segment_larger_than_the_budget_is_not_stored_and_a_zero_budget_stores_nothing():
    cache = PrefixKVCache(budget_bytes=3 * TOKEN_BYTES)
    ids = [1, 2, 3, 4]
    assert cache.insert(ids, source(ids)) == 0
    assert cache.bytes_used == 0 and cache.match(ids) == []
    off = PrefixKVCache(budget_bytes=0)
    assert not off.enabled
    assert off.insert(ids, source(ids)) == 0 and off.match(ids) == []


def test_evicting_one_half_of_a_split_segment_frees_its_memory():
    """A split copies both halves: a view would keep the whole segment's storage alive."""
    cache = PrefixKVCache(budget_bytes=1 << 20)
    a, b = [1, 2, 3, 4, 5, 6], [1, 2, 9]
    cache.insert(a, source(a))
    cache.insert(b, source(b))
    lower = cache.root.children[1].children[3]
    assert lower.kv.untyped_storage().nbytes() == 4 * TOKEN_BYTES
    assert cache.root.children[1].kv.untyped_storage().nbytes() == 2 * TOKEN_BYTES


def test_dropping_finished_rows_moves_only_the_rows_past_the_kept_count_and_keeps_every_live_row():
    from pumsearch.backends.kv_batch import KVBuffer, KVShape

    shape = KVShape(layers=2, kv_heads=1, head_dim=3, dtype=torch.float32, device=torch.device("cpu"),
                    sliding_window=None, sliding_layers=(False, False))
    buffer = KVBuffer(shape, rows=6, capacity=4)
    for row in range(6):  # every value of a row names the row
        buffer.data[:, :, row] = float(row)
        buffer.mask[row] = row
    before = {row: (buffer.data[:, :, row].clone(), buffer.mask[row].clone()) for row in range(6)}
    storage = buffer.data.data_ptr()

    order = buffer.keep_rows([0, 2, 4, 5])

    assert sorted(order) == [0, 2, 4, 5] and order[0] == 0 and order[2] == 2  # rows in place stay put
    assert buffer.rows == 4 and buffer.mask.shape[0] == 4
    for new, old in enumerate(order):
        assert torch.equal(buffer.data[:, :, new], before[old][0]) and torch.equal(buffer.mask[new], before[old][1])
    assert buffer.data.data_ptr() == storage  # no copy of the whole buffer
