"""What ``--dtype bf16-matmul`` costs in fidelity and buys in speed, on the embedded SmolLM2-135M.

1. Fidelity: the mean negative log-likelihood per token of the first ``--problems`` GSM8K gold
   answers (teacher-forced, under the engine's chat prompt) in float32 and in bf16-matmul, how
   often the two agree on the most likely next token, and the largest log-probability gap.
2. Speed: milliseconds per decode step of the transformers backend's own loop at 1-64 rows
   (250-token prompts, 24 new tokens, median of the steps after the first four) for float32,
   bfloat16 and bf16-matmul, interleaved per row count.

    OMP_NUM_THREADS=1 python benchmarks/bench_bf16_matmul.py --threads 1 \\
        --json benchmarks/results/backend/bf16_matmul.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not any(Path(p, "pumsearch").is_dir() for p in sys.path[1:] if p):  # else: the checkout on PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / "pumsearch" / "data" / "gsm8k_test.jsonl"
DTYPES = ("float32", "bfloat16", "bf16-matmul")


def fidelity(generators: dict[str, Any], problems: int) -> dict[str, Any]:
    import torch

    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:problems]]
    reference, other = generators["float32"], generators["bf16-matmul"]
    nll = {"float32": 0.0, "bf16-matmul": 0.0}
    tokens = agree = 0
    gap = 0.0
    with torch.inference_mode():
        for row in rows:
            prompt = list(reference.chat_prompt(row["question"], "Solve step by step.")[1])
            answer = reference.tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer])
            logprobs = {}
            for name, gen in (("float32", reference), ("bf16-matmul", other)):
                logits = gen.model(ids).logits[0, len(prompt) - 1 : -1].float()
                logprobs[name] = torch.log_softmax(logits, -1)
                nll[name] -= logprobs[name][torch.arange(len(answer)), torch.tensor(answer)].sum().item()
            tokens += len(answer)
            agree += int((logprobs["float32"].argmax(-1) == logprobs["bf16-matmul"].argmax(-1)).sum())
            gap = max(gap, float((logprobs["float32"] - logprobs["bf16-matmul"]).abs().max()))
    return {"problems": problems, "tokens": tokens, "nll_per_token": {k: round(v / tokens, 4) for k, v in nll.items()},
            "argmax_agreement": round(agree / tokens, 4), "max_abs_logprob_gap": round(gap, 3)}


def step_ms(gen: Any, rows: int, new_tokens: int = 24, prompt_tokens: int = 250) -> float:
    import numpy as np

    from pumsearch.backends import decode_loop
    from pumsearch.search.protocols import SamplingParams

    times: list[float] = []
    decoder = gen.decoder
    forward = decoder._forward

    def timed(kv: Any, input_ids: Any, positions: Any, *, decode: bool = False) -> Any:
        started = time.perf_counter()
        out = forward(kv, input_ids, positions, decode=decode)
        if decode:
            times.append(time.perf_counter() - started)
        return out

    decoder._forward = timed
    try:
        rng = np.random.default_rng(rows)
        params = SamplingParams(temperature=0.8, max_tokens=new_tokens)
        batch = [decode_loop.Row(tuple(rng.integers(100, 5000, prompt_tokens).tolist()), i, params)
                 for i in range(rows)]
        decoder.run(batch, set())
    finally:
        decoder._forward = forward
    return round(1000 * statistics.median(times[4:]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--rows", default="1,2,4,8,16,32,64")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from pumsearch.backends import load_generator

    generators = {name: load_generator(None, dtype=name, kv_cache_mb=0) for name in DTYPES}
    result: dict[str, Any] = {"command": " ".join(sys.argv), "threads": args.threads,
                              "fidelity": fidelity(generators, args.problems), "step_ms": {}}
    print(json.dumps(result["fidelity"]), flush=True)
    for rows in map(int, args.rows.split(",")):
        result["step_ms"][rows] = {name: step_ms(gen, rows) for name, gen in generators.items()}
        print(rows, json.dumps(result["step_ms"][rows]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
