"""Vectorised per-row sampling: each row's draw comes from its own seeded stream (SplitMix64), by
inverse CDF, so it is reproducible, independent of batch mates, and distributed as the row's
tempered (nucleus-cut) distribution."""

from __future__ import annotations

import numpy as np
import torch

from pumsearch.backends.sampling import RowSampling, sample_tokens, uniforms

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def _rows(n: int, temperature: float = 1.0, top_p: float = 1.0, first_seed: int = 0) -> RowSampling:
    return RowSampling.of(range(first_seed, first_seed + n), [temperature] * n, [top_p] * n, "cpu")


def test_uniforms_are_reproducible_distinct_and_uniform():
    seeds = np.arange(50_000, dtype=np.uint64)
    u = uniforms(seeds, 0)
    assert np.array_equal(u, uniforms(seeds, 0))
    assert not np.array_equal(u, uniforms(seeds, 1))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 0.95 * 5_000 and counts.max() < 1.05 * 5_000


def _frequencies(logits: torch.Tensor, rows: RowSampling) -> torch.Tensor:
    tokens = sample_tokens(logits.expand(len(rows.seeds), -1).clone(), rows, steps=3)
    return torch.bincount(tokens, minlength=logits.shape[-1]).float() / len(rows.seeds)


def test_draws_follow_the_tempered_distribution():
    logits = PROBS.log()[None]
    n = 40_000
    assert torch.allclose(_frequencies(logits, _rows(n)), PROBS, atol=0.01)
    tempered = torch.softmax(logits[0] / 0.5, dim=-1)
    assert torch.allclose(_frequencies(logits, _rows(n, temperature=0.5)), tempered, atol=0.01)


def test_top_p_keeps_only_the_nucleus_renormalised():
    freq = _frequencies(PROBS.log()[None], _rows(40_000, top_p=0.7))
    assert freq[2] == 0 and freq[3] == 0  # 0.5 + 0.3 reaches 0.7: the tail is cut
    assert torch.allclose(freq[:2], torch.tensor([0.625, 0.375]), atol=0.01)


def test_greedy_rows_take_the_argmax_and_a_row_does_not_depend_on_its_batch_mates():
    logits = torch.randn(6, 50)
    rows = RowSampling.of(range(6), [0.0, 1.0, 0.8, 1.0, 0.0, 1.2], [1.0, 1.0, 0.9, 1.0, 1.0, 0.5], "cpu")
    tokens = sample_tokens(logits, rows, steps=0)
    assert tokens[0] == logits[0].argmax() and tokens[4] == logits[4].argmax()
    for b in range(6):
        alone = sample_tokens(logits[b : b + 1], rows.select([b]), steps=0)
        assert int(alone[0]) == int(tokens[b])


def test_each_row_can_be_at_its_own_step():
    seeds = np.arange(5, dtype=np.uint64)
    steps = np.array([0, 3, 1, 7, 2])
    together = uniforms(seeds, steps)
    for i in range(5):
        assert together[i] == uniforms(seeds[i : i + 1], int(steps[i]))[0]
