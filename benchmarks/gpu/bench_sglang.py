"""Check and time the in-process SGLang backend on a GPU (not run on the CPU-only build machine).

    python benchmarks/gpu/bench_sglang.py --model Qwen/Qwen2.5-1.5B-Instruct --problems 16 --budget 16

What it does, with sglang installed (pip install 'pumsearch[sglang]'):
1. Checks: every completion maps to step/eos/length, token ids are returned, prefixes are extended
   by ids (prompt tokens of round 2 = prompt + step ids), and the radix cache hits: in a
   step-by-step search the cached share of prompt tokens must be well above zero.
2. Cached-token share in a beam-like search: rounds of step expansions over K prefixes per problem
   (the tree-search access pattern), reported as cached_prompt_tokens / prompt_tokens.
3. Decode-step time against the memory floor: one batch of B prompts with max_new_tokens=T and
   no stop; time per decode step = wall / T; the floor is weight bytes / measured copy bandwidth
   (~1 ms for a 1.5B bf16 model on an H100: 3.09 GB of weights at a measured 3.02 TB/s).
Prints one JSON line with the figures; add them to benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def copy_bandwidth_gbs(size_mb: int = 1024) -> float:
    import torch

    x = torch.empty(size_mb * 2**20, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 10
    return 2 * x.numel() / seconds / 1e9  # read + write


def weight_bytes(model: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    import torch

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in meta.parameters()) * 2  # bf16


async def tree_rounds(gen, problems: list[str], width: int, rounds: int, step_tokens: int) -> dict:
    from pumsearch.search.protocols import GenerationRequest, SamplingParams

    params = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=step_tokens, stop=("\n\n",))
    frontier = [
        gen.chat_prompt(q, "Please reason step by step, and put your final answer within \\boxed{}.")[1]
        for q in problems
    ]
    frontier = [[ids] for ids in frontier]
    totals = {"prompt": 0, "cached": 0, "generated": 0, "checked_extensions": 0}
    for r in range(rounds):
        requests = [
            GenerationRequest("", tuple(p), width, params, seed=1000 * r + i)
            for i, prefixes in enumerate(frontier)
            for p in prefixes[:1]
        ]
        outputs = await gen.generate(requests)
        new_frontier = []
        for req, out in zip(requests, outputs, strict=True):
            totals["prompt"] += out.prompt_tokens
            totals["cached"] += out.cached_tokens
            assert out.prompt_tokens == width * len(req.prompt_ids), "prompt tokens must count the id prefix"
            kids = []
            for comp in out.completions:
                assert comp.finish_reason in ("step", "eos", "length") and comp.token_ids is not None
                totals["generated"] += comp.num_tokens
                if comp.finish_reason == "step":
                    kids.append(list(req.prompt_ids) + comp.token_ids)
            new_frontier.append(kids or [list(req.prompt_ids)])
            totals["checked_extensions"] += len(kids)
        frontier = new_frontier
    totals["cached_share"] = totals["cached"] / max(totals["prompt"], 1)
    return totals


async def decode_time(gen, batch: int, new_tokens: int) -> float:
    from pumsearch.search.protocols import GenerationRequest, SamplingParams

    params = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=new_tokens, stop=())
    _, ids = gen.chat_prompt("Count slowly from one to one thousand.", None)
    requests = [GenerationRequest("", ids, 1, params, seed=i) for i in range(batch)]
    await gen.generate(requests[:2])  # warm-up
    start = time.perf_counter()
    outputs = await gen.generate(requests)
    wall = time.perf_counter() - start
    steps = max(c.num_tokens for o in outputs for c in o.completions)
    return wall / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--mem-fraction-static", type=float, default=0.8)
    args = parser.parse_args()

    from pumsearch.backends import load_generator
    from pumsearch.search.grading import default_grader  # noqa: F401 (as in a real run)

    gen = load_generator(args.model, backend="sglang", mem_fraction_static=args.mem_fraction_static)
    questions = [f"What is {i} * {i + 7} + {2 * i}?" for i in range(args.problems)]
    try:
        tree = asyncio.run(tree_rounds(gen, questions, args.width, args.rounds, 128))
        per_step = asyncio.run(decode_time(gen, args.batch, args.new_tokens))
    finally:
        asyncio.run(gen.aclose())
    floor = weight_bytes(args.model) / (copy_bandwidth_gbs() * 1e9)
    print(
        json.dumps(
            {
                "model": args.model,
                "tree": tree,
                "decode_step_s": per_step,
                "floor_s": floor,
                "decode_over_floor": per_step / floor,
                "batch": args.batch,
            }
        )
    )


if __name__ == "__main__":  # sglang.Engine starts with the spawn method: keep this guard
    main()
