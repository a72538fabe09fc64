"""Backend and engine overhead benchmarks (issue: engine core).

1. The transformers backend against a bare ``model.generate`` on the same prompts and settings:
   tokens per second and their ratio (goal >= 0.95). Greedy decoding, so both produce exactly the
   same tokens and the comparison is of the same work; sampling is timed too, for information.
2. Engine overhead on the scripted generator: microseconds of engine time per expansion.
3. Share of wall time outside backend and scorer calls on the embedded model (goal <= 3%).

    python benchmarks/bench_backend.py --problems 8 --n 4 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

import torch

from pumsearch.backends import load_generator
from pumsearch.backends.scripted import ScriptedGenerator, counting_policy
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.grading import reference_from_gsm8k
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from pumsearch.strategies import BestOfN


def gsm8k_problems(k: int) -> list[Problem]:
    from importlib.resources import files

    lines = files("pumsearch.data").joinpath("gsm8k_test.jsonl").read_text().splitlines()[:k]
    rows = [json.loads(line) for line in lines]
    return [Problem(f"gsm8k:{i}", r["question"], reference_from_gsm8k(r["answer"])) for i, r in enumerate(rows)]


def bench_generate(generator, problems: list[Problem], n: int, max_tokens: int, temperature: float,
                   repeats: int = 3) -> dict:
    """Our backend vs model.generate on the same left-padded batch (eos disabled: fixed length).
    The two alternate ``repeats`` times and the best time of each is kept, so a burst of load on a
    shared machine hits both sides alike."""
    runs = [_generate_once(generator, problems, n, max_tokens, temperature) for _ in range(repeats)]
    ours = max(r["ours_tok_s"] for r in runs)
    bare = max(r["generate_tok_s"] for r in runs)
    return {**runs[0], "repeats": repeats, "ours_tok_s": ours, "generate_tok_s": bare, "ratio": round(ours / bare, 3)}


def _generate_once(generator, problems: list[Problem], n: int, max_tokens: int, temperature: float) -> dict:
    prompts = [generator.chat_prompt(p.question, SearchConfig().system_prompt)[1] for p in problems]
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
    requests = [GenerationRequest("", ids, n, params, seed=i) for i, ids in enumerate(prompts)]
    eos_ids = generator.eos_ids
    generator.eos_ids = set()  # both sides generate exactly max_tokens per row
    try:
        started = time.perf_counter()
        outputs = generator.generate_sync(requests)
        ours = time.perf_counter() - started
    finally:
        generator.eos_ids = eos_ids
    our_tokens = sum(c.num_tokens for o in outputs for c in o.completions)

    tok = generator.tokenizer
    rows = [list(ids) for ids in prompts for _ in range(n)]
    width = max(map(len, rows))
    input_ids = torch.tensor([[generator.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    kwargs = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                  do_sample=temperature > 0)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
    started = time.perf_counter()
    with torch.inference_mode():
        out = generator.model.generate(input_ids, attention_mask=mask, **kwargs)
    bare = time.perf_counter() - started
    bare_tokens = (out.shape[1] - width) * out.shape[0]
    return {
        "rows": len(rows), "max_tokens": max_tokens, "temperature": temperature,
        "ours_tok_s": round(our_tokens / ours, 1), "generate_tok_s": round(bare_tokens / bare, 1),
        "ratio": round((our_tokens / ours) / (bare_tokens / bare), 3),
    }


def bench_engine_overhead(problems: int, n: int) -> dict:
    """Engine time per expansion when the backend costs nothing (the scripted generator)."""
    gen = ScriptedGenerator(counting_policy(steps=6))
    config = SearchConfig(budget=n, max_tokens=512)
    probs = [Problem(f"p{i}", f"question {i}") for i in range(problems)]
    engine = Engine(gen, concurrency=problems)
    started = time.perf_counter()
    asyncio.run(engine.run(probs, BestOfN(config)))
    elapsed = time.perf_counter() - started
    expansions = problems * n
    return {"problems": problems, "n": n, "expansions": expansions,
            "engine_us_per_expansion": round(1e6 * (elapsed - engine.totals.backend_time) / expansions, 1)}


def bench_overhead_share(generator, problems: list[Problem], n: int, max_tokens: int) -> dict:
    config = SearchConfig(budget=n, max_tokens=max_tokens)
    engine = Engine(generator, concurrency=len(problems))
    started = time.perf_counter()
    asyncio.run(engine.run(problems, BestOfN(config)))
    wall = time.perf_counter() - started
    outside = wall - engine.totals.backend_time - engine.totals.scorer_time
    return {"problems": len(problems), "n": n, "max_tokens": max_tokens, "wall_s": round(wall, 2),
            "backend_s": round(engine.totals.backend_time, 2), "outside_share": round(outside / wall, 4),
            "backend_calls": engine.totals.backend_calls}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}))
    generator = load_generator(None)
    problems = gsm8k_problems(args.problems)
    generate_problems = problems[:2]
    print(json.dumps({"generate_greedy": bench_generate(generator, generate_problems, args.n, args.max_tokens, 0.0)}))
    print(json.dumps({"generate_sampled": bench_generate(generator, generate_problems, args.n, args.max_tokens, 0.8)}))
    print(json.dumps({"engine_overhead": bench_engine_overhead(64, 16)}))
    print(json.dumps({"overhead_share": bench_overhead_share(generator, problems, args.n, args.max_tokens)}))


if __name__ == "__main__":
    main()
