"""Scorer benchmarks (CPU by default): wrapper throughput against a bare forward, and the cache
hit rate of a beam-search-like access pattern.

    python benchmarks/bench_scorers.py [--items 32] [--repeats 5] [--hidden 256] [--layers 4]

1. Throughput. A PUM checkpoint (random Qwen3 base, random LoRA adapter saved by peft, random
   value head) is scored through ``load_scorer("pum")``: tokenization, length-sorted micro-batches,
   padding, forward, head, cache bookkeeping (the cache is cleared before every repeat). The bare
   forward runs the same merged model and head on the same items, tokenized and padded
   beforehand, as one batch. Ratio = bare time / scorer time (goal >= 0.9).
2. Cache. Beam search at N=16, beam width 4 (4 kept prefixes, 4 children each), depth 8: each
   round scores the 16 children and, as a simple strategy does, re-scores the kept parents when it
   ranks them again; children are drawn from a small step vocabulary so identical prefixes recur.
   Reports the hit rate and checks that each unique prefix reached the model exactly once. (The
   beam strategy itself lives on another branch; rerun this against it once merged.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package and tests/

from pumsearch.scorers import BatchedScorer, load_scorer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import Score, ScoreItem


def build_checkpoint(root: Path, hidden: int, layers: int) -> Path:
    from tests import tiny_models as h

    h.TINY = dict(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 2),
        num_key_value_heads=max(hidden // 128, 1),
        head_dim=8,  # as build_pum always had
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    ckpt, _ = h.build_pum(root, head_sizes=(hidden // 4,))
    return ckpt


def make_items(n: int, rng: np.random.Generator) -> list[ScoreItem]:
    words = ["add", "the", "two", "numbers", "then", "divide", "by", "three", "so", "the", "total", "is"]
    items = []
    for i in range(n):
        steps = tuple(
            " ".join(rng.choice(words, size=int(rng.integers(5, 20)))) for _ in range(int(rng.integers(1, 6)))
        )
        items.append(ScoreItem(Problem(f"p{i % 4}", f"What is {i} + {i + 1} ?", None), steps))
    return items


def bare_forward(inner, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[float]:
    input_ids, attention, last = batch
    with torch.inference_mode():
        hidden = inner.decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return inner.head(hidden[torch.arange(len(last)), last].float()).squeeze(-1).tolist()


def throughput(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        scorer = load_scorer("pum", model=str(build_checkpoint(Path(tmp), args.hidden, args.layers)))
    inner = scorer.inner
    items = make_items(args.items, np.random.default_rng(0))
    encoded = [inner.tokenizer(inner.render(i), add_special_tokens=False)["input_ids"] for i in items]
    width = max(map(len, encoded))
    input_ids = torch.full((len(encoded), width), inner.pad_id)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    batch = (input_ids, attention, torch.tensor([len(e) - 1 for e in encoded]))
    bare_forward(inner, batch)  # warm-up
    asyncio.run(scorer.score(items))
    bare_times, scorer_times = [], []
    for _ in range(args.repeats):  # interleaved, so load on the shared machine hits both alike
        started = time.perf_counter()
        expected = bare_forward(inner, batch)
        bare_times.append(time.perf_counter() - started)
        scorer._cache.clear()
        started = time.perf_counter()
        got = asyncio.run(scorer.score(items))
        scorer_times.append(time.perf_counter() - started)
        assert np.allclose([s.value for s in got], expected, atol=1e-4)
    tokens = sum(map(len, encoded))
    bare, wrapped = statistics.median(bare_times), statistics.median(scorer_times)
    return {
        "items": len(items),
        "tokens": tokens,
        "padded_tokens": len(encoded) * width,
        "bare_s": bare,
        "scorer_s": wrapped,
        "ratio": bare / wrapped,
        "scorer_tok_per_s": tokens / wrapped,
    }


class CountingScorer:
    """A model-free inner scorer that records every prefix that reaches it."""

    identity = "count"
    value_kind = "unbounded"
    needs_reference = False

    def __init__(self) -> None:
        self.seen: list[ScoreItem] = []

    def count_tokens(self, item: ScoreItem) -> int:
        return sum(len(s.split()) for s in item.steps) + 1

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        self.seen.extend(items)
        return [Score(float(len(i.steps))) for i in items]

    def close(self) -> None:
        pass


def beam_cache(
    n: int = 16, width: int = 4, depth: int = 8, problems: int = 8, seed: int = 0
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    inner = CountingScorer()
    scorer = BatchedScorer(inner)
    vocabulary = [f"step {k}" for k in range(6)]  # a small step vocabulary: identical prefixes recur
    requested: set[ScoreItem] = set()

    async def run() -> None:
        beams = {p: [ScoreItem(Problem(f"p{p}", f"question {p}"), ())] for p in range(problems)}
        for _ in range(depth):
            calls = []
            for p, kept in beams.items():
                children = [
                    ScoreItem(b.problem, (*b.steps, str(rng.choice(vocabulary))))
                    for b in kept
                    for _ in range(width)
                ][:n]
                parents = [b for b in kept if b.steps]
                calls.append((p, children, parents))
            batch = [i for _, children, parents in calls for i in (*children, *parents)]
            requested.update(batch)
            scores = await scorer.score(batch)  # all problems' work in one call, as the engine batches it
            offset = 0
            for p, children, parents in calls:
                mine = scores[offset : offset + len(children)]
                offset += len(children) + len(parents)
                order = np.argsort([-s.value + rng.random() * 1e-3 for s in mine])
                beams[p] = [children[i] for i in order[: n // width]]

    asyncio.run(run())
    return {
        "requested": scorer.stats.requested,
        "unique": len(requested),
        "forwarded": len(inner.seen),
        "unique_forwarded": len(set(inner.seen)),
        "cache_hits": scorer.stats.cache_hits,
        "hit_rate": scorer.stats.hit_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = throughput(args)
    print(
        f"throughput: {result['items']} items, {result['tokens']} tokens ({result['padded_tokens']} padded); "
        f"bare forward {result['bare_s']:.3f} s, scorer {result['scorer_s']:.3f} s, "
        f"ratio {result['ratio']:.3f} (goal >= 0.9), {result['scorer_tok_per_s']:.0f} tok/s"
    )
    cache = beam_cache()
    print(
        f"beam-like cache (N=16, width 4, depth 8, 8 problems): {cache['requested']} requested, "
        f"{cache['unique']} unique, {cache['forwarded']} reached the model "
        f"({cache['unique_forwarded']} distinct), hit rate {cache['hit_rate']:.3f}"
    )


if __name__ == "__main__":
    main()
