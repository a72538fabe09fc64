"""its-hub's self-consistency over a few problems against an OpenAI-compatible server (benchmarks/bench_itshub.sh).

Runs under a Python with its-hub installed (its own venv: ``pip install 'its_hub[lm]'``), not
pumsearch's, and imports nothing of pumsearch. For each problem, one ``SelfConsistency.ainfer``
with ``budget`` samples, voting on the \\boxed{} answer; prints one JSON line with the totals.

its-hub sends the token cap as ``max_completion_tokens``, which llama-cpp-python's
``/v1/chat/completions`` does not read (it has only ``max_tokens``, default unlimited), so with
``--cap-field max_tokens`` the request body names the cap as that server reads it (the one
change made to its-hub's requests; without it every sample runs to its end of sequence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from its_hub.core.algorithms.self_consistency import SelfConsistency, create_regex_projection_function
from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel


class CapAsMaxTokens(OpenAICompatibleLanguageModel):
    """its-hub's client with the cap sent under ``max_tokens``."""

    def _prepare_request_data(self, *args: Any, **kwargs: Any) -> dict:
        data = super()._prepare_request_data(*args, **kwargs)
        if "max_completion_tokens" in data:
            data["max_tokens"] = data.pop("max_completion_tokens")
        return data


async def solve_all(args: argparse.Namespace, problems: list[dict[str, Any]]) -> dict[str, Any]:
    client = CapAsMaxTokens if args.cap_field == "max_tokens" else OpenAICompatibleLanguageModel
    lm = client(endpoint=f"{args.url.rstrip('/')}/v1", api_key="none", model_name=args.model,
                system_prompt=args.system_prompt, max_completion_tokens=args.max_tokens,
                temperature=args.temperature)
    vote = SelfConsistency(create_regex_projection_function(r"\\boxed\{([^}]*)\}"))
    prompt_tokens = completion_tokens = requests = 0
    answers = []
    start = time.perf_counter()
    for problem in problems:
        result = await vote.ainfer(lm, problem["question"], budget=args.budget, return_response_only=False)
        prompt_tokens += result.usage.prompt_tokens
        completion_tokens += result.usage.completion_tokens
        requests += result.usage.num_calls
        answers.append(max(result.response_counts, key=result.response_counts.get))
    wall = time.perf_counter() - start
    await lm.close()
    return {"tool": "its-hub", "problems": len(problems), "budget": args.budget, "wall": round(wall, 2),
            "requests": requests, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "answers": [a[0] if isinstance(a, tuple) else a for a in answers]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True, help="the served model id (GET /v1/models)")
    parser.add_argument("--problems", type=Path, required=True, help="JSONL with a question field")
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--system-prompt", required=True)
    parser.add_argument("--cap-field", choices=("max_tokens", "max_completion_tokens"), default="max_tokens")
    args = parser.parse_args()
    problems = [json.loads(line) for line in args.problems.read_text().splitlines() if line.strip()]
    print(json.dumps(asyncio.run(solve_all(args, problems))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
