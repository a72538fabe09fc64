"""The witness and the checks of benchmarks/real_servers.sh (pumsearch against llama-cpp-python's server).

``proxy``: a recording reverse proxy between pumsearch and the server; it passes every exchange
through unchanged and appends each ``/v1/completions`` request and answer to a JSONL log.

``check``: compares pumsearch's records and trees with that log and the server's own log
(``--verbose true``), and exits 1 on a mismatch:

- **finish reasons**, each response's from the server's log. llama-cpp-python decodes every token
  it appends before sampling the next, and stops on an EOS before appending it but on a stop
  string (or the token cap) after appending its last token, which is then never decoded
  (llama_cpp/llama.py:975-1010, 1412-1439, 1582-1585). Its per-request timings count one-token
  decodes as ``eval ... runs`` (vendor/llama.cpp/src/llama-context.cpp:781-790: a one-token prompt
  remainder, printed as "prompt eval ... 1 tokens", is one of them). So the generated tokens
  decoded equal ``usage.completion_tokens`` for an end of sequence and fall one short for a stop
  string or the cap: evidence pumsearch never sees. Every response's verdict is compared with
  the node pumsearch made of it;
- **counters**: prompt and generated tokens against ``usage`` (pumsearch counts the EOS the
  server leaves out), samples, no retries, cached tokens unknown while the server's log shows
  its prefix reuse, one request in flight;
- **answers**: every problem finished and graded.
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
            status, payload = self._forward(raw)
            if self.path == "/v1/completions":
                entry = {"request": json.loads(raw), "status": status,
                         "answer": json.loads(payload) if status == 200 else payload.decode(errors="replace")}
                with lock, log_path.open("a") as log:
                    log.write(json.dumps(entry) + "\n")
            self._answer(status, payload)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# -- the server's log ---------------------------------------------------------------------------
def decoded_per_request(server_log: str) -> list[int]:
    """Generated tokens the server decoded, per answered /v1/completions request, in order."""
    decoded, prompt_one, runs = [], False, None
    for line in server_log.splitlines():
        if (m := re.search(r"prompt eval time =.*/\s+(\d+) tokens", line)):
            prompt_one = int(m.group(1)) == 1
        elif (m := re.search(r"\beval time =.*/\s+(\d+) runs", line)):
            runs = int(m.group(1))
        elif "POST /v1/completions" in line and runs is not None:
            decoded.append(runs - int(prompt_one))
            runs = None
    return decoded


def verdicts(log: list[dict[str, Any]], decoded: list[int]) -> list[str]:
    """How the server ended each answered request (see the module doc); "?" where the counts fit neither."""
    answered = [e for e in log if e["status"] == 200]
    if len(answered) != len(decoded):
        raise SystemExit(f"  MISMATCH the server logged {len(decoded)} completions, the proxy saw {len(answered)}")
    out = []
    for entry, n in zip(answered, decoded, strict=True):
        (choice,) = entry["answer"]["choices"]
        generated = entry["answer"]["usage"]["completion_tokens"]
        if choice["finish_reason"] == "length":
            out.append("length" if n == generated - 1 else "?")
        else:
            out.append({generated: "eos", generated - 1: "step"}.get(n, "?"))
    return out


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


def finish_problems(runs: list[tuple[dict[str, Any], dict[str, Any]]], texts: list[str], said: list[str]) -> list[str]:
    """Where the trees' finish reasons differ from how the server ended its responses."""
    problems = []
    server_says = Counter(said)
    pumsearch_says = Counter(n["finish_reason"] for _, tree in runs for n in response_nodes(tree))
    if server_says != pumsearch_says:
        problems.append(f"finish reasons: the server ended its responses {dict(server_says)}, "
                        f"the trees say {dict(pumsearch_says)}")
    by_text: dict[str, set[str]] = {}
    for text, verdict in zip(texts, said, strict=True):
        by_text.setdefault(text.strip(), set()).add(verdict)
    # a tree search's node is one response, found by its text where no other response has that text
    step_nodes = [n for record, tree in runs if record["strategy"] != "bon" for n in response_nodes(tree)]
    told = [(n, by_text.get(n["text"].strip(), set())) for n in step_nodes]
    disagree = [n["id"] for n, verdicts_of_text in told
                if len(verdicts_of_text) == 1 and n["finish_reason"] not in verdicts_of_text]
    if disagree:
        problems.append(f"finish reasons: nodes {disagree} are labelled otherwise than the server ended them")
    return problems


def counter_problems(runs: list[tuple[dict[str, Any], dict[str, Any]]], usages: list[dict[str, Any]],
                     eos: int) -> list[str]:
    """Where the records' counters differ from the server's answers."""
    def total(name: str) -> Any:
        values = [record["counters"].get(name) for record, _ in runs]
        return None if any(v is None for v in values) else sum(values)

    # llama-cpp-python does not count the EOS it generated; pumsearch does
    expect = {"prompt_tokens": sum(u["prompt_tokens"] for u in usages),
              "generated_tokens": sum(u["completion_tokens"] for u in usages) + eos,
              "backend_retries": 0, "cached_prompt_tokens": None}
    if len(runs) == 1:  # a call shared by several problems counts all its samples for each of them
        expect["backend_batch_items"] = len(usages)
    problems = [f"counter {name}: the records say {total(name)!r}, the server's answers {value!r}"
                for name, value in expect.items() if total(name) != value]
    peak = max(record["counters"].get("backend_peak_in_flight") or 0 for record, _ in runs)
    if peak != 1:
        problems.append(f"{peak} requests were in flight at once on a one-request-at-a-time server")
    failed = [record["id"] for record, _ in runs if record.get("status") != "ok" or record.get("correct") is None]
    if failed:
        problems.append(f"problems {failed} failed or were not graded")
    return problems


def check(args: argparse.Namespace) -> int:
    runs = load_runs(Path(args.records))
    log = [json.loads(line) for line in Path(args.proxy_log).read_text().splitlines()]
    server_log = Path(args.server_log).read_text(errors="replace")
    said = verdicts(log, decoded_per_request(server_log))
    answered = [e for e in log if e["status"] == 200]
    texts = [e["answer"]["choices"][0]["text"] for e in answered]
    usages = [e["answer"]["usage"] for e in answered]
    eos = said.count("eos")
    problems = finish_problems(runs, texts, said) + counter_problems(runs, usages, eos)

    reused = [int(m) for m in re.findall(r"Llama\.generate: (\d+) prefix-match hit", server_log)]
    trees = Counter(n["finish_reason"] for _, tree in runs for n in response_nodes(tree))
    answers = [(record.get("prediction"), record.get("correct")) for record, _ in runs]
    print(f"  {','.join(sorted({r['strategy'] for r, _ in runs}))}: problems={len(runs)} (answer, correct)={answers} "
          f"requests={len(log)} samples={len(answered)} server-log-ended={dict(Counter(said))} trees={dict(trees)} "
          f"prompt-tokens={sum(u['prompt_tokens'] for u in usages)} "
          f"generated={sum(u['completion_tokens'] for u in usages)}+{eos} EOS; the server reused "
          f"{sum(reused)} prompt tokens in {len(reused)} requests (records: unknown); "
          f"peak-in-flight={max(r['counters'].get('backend_peak_in_flight') or 0 for r, _ in runs)} "
          f"wall={max(r['counters']['wall_time'] for r, _ in runs):.1f}s")
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
