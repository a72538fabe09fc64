"""pumsearch's Best-of-N (majority) against its-hub's self-consistency on one llama-cpp-python server (issue 17).

Starts llama-cpp-python's server on the embedded SmolLM2 GGUF with one thread (as
benchmarks/real_servers.sh does), then runs, in the order given (ABBA by default, so a burst of
load on a shared machine hits both alike), ``pumsearch run --strategy bon --select majority`` and
benchmarks/itshub_self_consistency.py (under its-hub's own Python) on the same problems, budget,
token cap, temperature and system prompt. For each run it prints what the client saw (wall time
of the search and of the whole process, prompt and generated tokens) and what the server's log
says it did: requests, prompt tokens it evaluated and reused from its prefix cache, tokens
decoded, and the time it spent inside requests (``total time`` summed) - the rest of the wall is
the client's own time and the gaps between requests. Not part of the test suite.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_itshub.py --itshub-python /tmp/itshub-venv/bin/python \\
        --server-python /tmp/pumsearch-llamacpp-venv/bin/python --problems 4 --budget 4 --max-tokens 128

``--order`` names the runs: ``pum`` (pumsearch as it is), ``hub`` (its-hub), ``pum-hubsampling``
(pumsearch sending the sampling values its-hub leaves to the server's defaults: top_k 40,
top_p 0.95, min_p 0.05, repeat_penalty 1.1, llama_cpp/server/types.py:26-69).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# what llama-cpp-python fills in for a request that names no sampling values (its-hub names none
# but the temperature); sent by the ``pum-hubsampling`` run to tell sampler cost from client cost
SERVER_DEFAULT_SAMPLING = {"top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}


def server_log_summary(text: str) -> dict[str, Any]:
    """Per-request figures of llama-cpp-python's ``--verbose true`` log, summed."""
    requests = len(re.findall(r'"POST /v1/(?:chat/)?completions HTTP', text))
    reused = sum(int(m) for m in re.findall(r"Llama\.generate: (\d+) prefix-match hit", text))
    evaluated = sum(int(m) for m in re.findall(r"prompt eval time =.*/\s+(\d+) tokens", text))
    decoded = sum(int(m) for m in re.findall(r"\beval time =.*/\s+(\d+) runs", text))
    inside = sum(float(m) for m in re.findall(r"total time =\s+([\d.]+) ms", text)) / 1000
    return {"requests": requests, "prompt_reused": reused, "prompt_evaluated": evaluated,
            "decoded": decoded, "server_seconds": round(inside, 2)}


def start_server(python: str, gguf: str, port: int, log: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        ["nice", "-n", "10", python, "-m", "llama_cpp.server", "--model", gguf, "--n_threads", "1",
         "--n_threads_batch", "1", "--n_ctx", "4096", "--host", "127.0.0.1", "--port", str(port),
         "--seed", "0", "--verbose", "true"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: see {log}") from None
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not answer in 120 s")


def run_pumsearch(args: argparse.Namespace, url: str, out: Path, extra_body: dict[str, Any] | None) -> dict[str, Any]:
    command = [args.pumsearch, "run", "--dataset", str(args.problem_file), "--out", str(out), "--strategy", "bon",
               "--select", "majority", "--budget", str(args.budget), "--max-tokens", str(args.max_tokens),
               "--temperature", str(args.temperature), "--backend", "openai", "--url", url, "--seed", "0",
               "--threads", "1"]
    if extra_body:
        command += ["--extra-body", json.dumps(extra_body)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    started = min(r["timings"]["started_at"] for r in records)
    finished = max(r["timings"]["finished_at"] for r in records)
    return {"wall": round(finished - started, 2),
            "prompt_tokens": sum(r["counters"]["prompt_tokens"] for r in records),
            "completion_tokens": sum(r["counters"]["generated_tokens"] for r in records),
            "answers": [r["prediction"] for r in records]}


def run_itshub(args: argparse.Namespace, url: str, model: str) -> dict[str, Any]:
    command = [args.itshub_python, "-W", "ignore", str(HERE / "itshub_self_consistency.py"), "--url", url,
               "--model", model, "--problems", str(args.problem_file), "--budget", str(args.budget),
               "--max-tokens", str(args.max_tokens), "--temperature", str(args.temperature),
               "--system-prompt", args.system_prompt, "--cap-field", args.itshub_cap_field]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--itshub-python", required=True, help="a Python with its_hub[lm] installed")
    parser.add_argument("--server-python", required=True, help="a Python with llama-cpp-python[server]")
    parser.add_argument("--pumsearch", default=str(Path(sys.executable).parent / "pumsearch"))
    parser.add_argument("--problems", type=int, default=4, help="the first N GSM8K test problems")
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--order", default="pum,hub,hub,pum")
    parser.add_argument("--itshub-cap-field", default="max_tokens", choices=("max_tokens", "max_completion_tokens"))
    parser.add_argument("--port", type=int, default=8741)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import pumsearch
    from pumsearch.backends.embedded import find_gguf
    from pumsearch.models import load_tokenizer
    from pumsearch.search.config import DEFAULT_SYSTEM_PROMPT

    args.system_prompt = DEFAULT_SYSTEM_PROMPT
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-itshub-"))
    out.mkdir(parents=True, exist_ok=True)
    gsm8k = (Path(pumsearch.__file__).parent / "data/gsm8k_test.jsonl").read_text().splitlines()
    args.problem_file = out / "problems.jsonl"
    args.problem_file.write_text("\n".join(gsm8k[: args.problems]) + "\n")
    gguf = find_gguf()
    started = time.perf_counter()
    load_tokenizer(str(gguf))  # the GGUF's tokenizer, read once into the cache, as after a first run
    print(json.dumps({"tokenizer_cache_warm": True, "seconds": round(time.perf_counter() - started, 2)}), flush=True)
    log = out / "server.log"
    server = start_server(args.server_python, str(gguf), args.port, log)
    url = f"http://127.0.0.1:{args.port}"
    try:
        listing = json.load(urllib.request.urlopen(f"{url}/v1/models"))
        model = listing["data"][0]["id"]
        for i, name in enumerate(args.order.split(",")):
            mark = len(log.read_text(errors="replace"))
            begun = time.perf_counter()
            if name == "hub":
                client = run_itshub(args, url, model)
            else:
                client = run_pumsearch(args, url, out / f"run{i}-{name}",
                                       SERVER_DEFAULT_SAMPLING if name == "pum-hubsampling" else None)
            process = time.perf_counter() - begun
            time.sleep(0.5)  # the server's access-log line follows its reply
            server_side = server_log_summary(log.read_text(errors="replace")[mark:])
            row = {"run": name, **client, "process_wall": round(process, 2), **server_side}
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait()
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
