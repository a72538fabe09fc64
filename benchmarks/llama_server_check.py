"""The witness and the checks of benchmarks/real_servers.sh (pumsearch against llama-cpp-python's server).

``proxy``: a recording reverse proxy between pumsearch and the server. Into every
``/v1/completions`` request that does not ask for log-probabilities it puts ``logprobs: 0``, which
makes llama-cpp-python list the generated tokens (``logprobs.tokens``, llama_cpp/llama.py:1728-1793:
they include the tokens of a matched stop string, which the text leaves out, and not the EOS),
and it takes the log-probabilities out of the answer again, so pumsearch decides as it would
without the proxy (from the token counts). Each exchange is appended to a JSONL log with the
server's own verdict: ``step`` when a stop string follows the text in the generated tokens,
``eos`` for any other ``finish_reason: "stop"``, ``length`` for ``"length"``.

``check``: compares one pumsearch record and tree with that log and the server's stderr:
finish reasons (every response's verdict against the node pumsearch made of it), counters
(samples, prompt and generated tokens against ``usage``; cached tokens unknown while the server
log shows its prefix reuse), one request in flight, and the answer graded. Exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


# -- the proxy ----------------------------------------------------------------------------------
def verdict(request: dict[str, Any], choice: dict[str, Any]) -> str:
    """How the server ended ``choice``, from the tokens it generated (see the module doc)."""
    if choice.get("finish_reason") == "length":
        return "length"
    tokens = "".join((choice.get("logprobs") or {}).get("tokens") or [])
    stops = request.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    rest = tokens[len(choice.get("text", "")):]
    return "step" if any(rest.startswith(s) for s in stops) else "eos"


def serve_proxy(port: int, upstream: str, log_path: Path) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # the JSONL log is the record
            pass

        def _forward(self, body: bytes | None) -> tuple[int, bytes]:
            req = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=3600) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as err:
                return err.code, err.read()

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer(*self._forward(None))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/completions":
                self._answer(*self._forward(raw))
                return
            request = json.loads(raw)
            asked = request.get("logprobs") is not None
            status, payload = self._forward(json.dumps({**request, "logprobs": request.get("logprobs", 0)}).encode())
            if status == 200:
                answer = json.loads(payload)
                verdicts = [verdict(request, c) for c in answer.get("choices", [])]
                entry = {"request": request, "usage": answer.get("usage"), "verdicts": verdicts,
                         "texts": [c.get("text") for c in answer.get("choices", [])]}
                with lock, log_path.open("a") as log:
                    log.write(json.dumps(entry) + "\n")
                if not asked:
                    for choice in answer.get("choices", []):
                        choice["logprobs"] = None
                payload = json.dumps(answer).encode()
            self._answer(status, payload)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# -- the checks ---------------------------------------------------------------------------------
def response_nodes(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes that are one server response each: every step of a tree search; for Best-of-N,
    whose solutions are one response split into a chain of steps, the last node of each chain."""
    nodes = [n for n in tree["graph"]["nodes"] if n.get("finish_reason") is not None]
    if tree["result"]["strategy"] != "bon":
        return nodes
    parents = {e["source"] for e in tree["graph"]["edges"]}
    return [n for n in nodes if n["id"] not in parents]


def load_runs(records_file: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, tree) per problem of a ``solve --json`` output or a run's records.jsonl."""
    runs = []
    for line in records_file.read_text().splitlines():
        if line.strip().startswith("{"):
            record = json.loads(line)
            tree_file = Path(record["tree_file"])
            tree_file = tree_file if tree_file.is_absolute() else records_file.parent / tree_file
            runs.append((record, json.loads(tree_file.read_text())))
    return runs


def check(args: argparse.Namespace) -> int:
    runs = load_runs(Path(args.records))
    log = [json.loads(line) for line in Path(args.proxy_log).read_text().splitlines()]
    server_log = Path(args.server_log).read_text(errors="replace")
    problems: list[str] = []

    server_says = Counter(v for e in log for v in e["verdicts"])
    nodes = [n for _, tree in runs for n in response_nodes(tree)]
    pumsearch_says = Counter(n["finish_reason"] for n in nodes)
    if server_says != pumsearch_says:
        problems.append(f"finish reasons: the server ended its responses {dict(server_says)}, "
                        f"the trees say {dict(pumsearch_says)}")
    by_text: dict[str, set[str]] = {}
    for entry in log:
        for text, said in zip(entry["texts"], entry["verdicts"], strict=True):
            by_text.setdefault(text.strip(), set()).add(said)
    step_nodes = [n for record, tree in runs if record["strategy"] != "bon" for n in response_nodes(tree)]
    said_of = [(n, by_text.get(n["text"].strip(), set())) for n in step_nodes]
    disagree = [n["id"] for n, said in said_of if len(said) == 1 and n["finish_reason"] not in said]
    if disagree:
        problems.append(f"finish reasons: nodes {disagree} are labelled otherwise than the server ended them")

    def total(name: str) -> Any:
        values = [record["counters"].get(name) for record, _ in runs]
        return None if any(v is None for v in values) else sum(values)

    samples = sum(len(e["verdicts"]) for e in log)
    usage_prompt = sum(e["usage"]["prompt_tokens"] for e in log)
    usage_generated = sum(e["usage"]["completion_tokens"] for e in log)
    eos = server_says["eos"]  # llama-cpp-python does not count the EOS it generated; pumsearch does
    expect = {"prompt_tokens": usage_prompt, "generated_tokens": usage_generated + eos, "backend_retries": 0,
              "cached_prompt_tokens": None}
    if len(runs) == 1:  # a call shared by several problems counts all its samples for each of them
        expect["backend_batch_items"] = samples
    for name, value in expect.items():
        if total(name) != value:
            problems.append(f"counter {name}: the records say {total(name)!r}, the server's answers {value!r}")
    peak = max(record["counters"].get("backend_peak_in_flight") or 0 for record, _ in runs)
    if peak != 1:
        problems.append(f"{peak} requests were in flight at once on a one-request-at-a-time server")
    reused = [int(m) for m in re.findall(r"Llama\.generate: (\d+) prefix-match hit", server_log)]
    failed = [record["id"] for record, _ in runs if record.get("status") != "ok" or record.get("correct") is None]
    if failed:
        problems.append(f"problems {failed} failed or were not graded")

    strategies = sorted({record["strategy"] for record, _ in runs})
    answers = [(record.get("prediction"), record.get("correct")) for record, _ in runs]
    wall = max(record["counters"]["wall_time"] for record, _ in runs)
    print(f"  {','.join(strategies)}: problems={len(runs)} (answer, correct)={answers} requests={len(log)} "
          f"samples={samples} server-ended={dict(server_says)} trees={dict(pumsearch_says)} "
          f"prompt-tokens={usage_prompt} generated={usage_generated}+{eos} EOS; the server reused "
          f"{sum(reused)} prompt tokens in {len(reused)} requests (records: unknown); peak-in-flight={peak} "
          f"wall={wall:.1f}s")
    for problem in problems:
        print(f"  MISMATCH {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--log", type=Path, required=True)
    checker = sub.add_parser("check")
    for name in ("records", "proxy-log", "server-log"):
        checker.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    if args.command == "proxy":
        serve_proxy(args.port, args.upstream.rstrip("/"), args.log)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
