"""Real loopback HTTP servers for the server backends' tests, with fault injection.

``InferenceServer`` is a stdlib ThreadingHTTPServer on 127.0.0.1 that follows SGLang's native API
and the OpenAI completions API field for field (SGLang 0.5.x: python/sglang/srt/entrypoints/
http_server.py and managers/io_struct.py GenerateReqInput; finish_reason objects as in
managers/schedule_batch.py; OpenAI's /v1/completions and /v1/models), and generates with a tiny,
randomly initialised real Llama (tests/tiny_models.py ``build_step_llama``, fixture
``step_llama_dir``) through pumsearch's transformers backend:

- GET /health, GET /model_info (and /get_model_info), GET /v1/models
- POST /generate: ``text`` or ``input_ids``, ``sampling_params``, ``rid``, ``return_logprob``;
  answers ``{"text", "output_ids", "meta_info": {"id", "prompt_tokens", "completion_tokens",
  "cached_tokens", "finish_reason", "e2e_latency"}}``. ``cached_tokens`` is the longest prefix the
  prompt shares with any earlier prompt+output (at most prompt length - 1), as a radix cache does.
- POST /v1/completions: ``prompt``, ``n``, ``max_tokens``, ``temperature``, ``top_p``, ``stop``,
  ``seed``; choices carry SGLang's ``matched_stop``; ``usage`` counts tokens.
- POST /classify (reward servers): ``{"model", "text": [...]}`` -> ``[{"embedding": [r], "meta_info"}]``.

Faults: ``fail_next`` (answer 500 that many times), ``delay`` (seconds before answering a POST),
``malformed`` (a 200 whose body is not JSON), ``reject`` (answer 400 with this message),
``die_after`` (stop listening after that many answered POSTs: later requests find the port
closed). A stopped server's port refuses connections.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Faults:
    fail_next: int = 0
    delay: float = 0.0
    malformed: bool = False
    reject: str | None = None
    die_after: int | None = None


@dataclass
class Exchange:
    path: str
    request: dict[str, Any]
    response: Any


class _QuietHTTPServer(ThreadingHTTPServer):
    """Client disconnects (the fault tests cause them on purpose) are not printed: a traceback on
    stderr from this server thread would land in whatever CLI output a later test captures."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class ServerState:
    log: list[Exchange] = field(default_factory=list)
    seen: list[list[int]] = field(default_factory=list)  # prompt + output ids, for cached_tokens
    answered: int = 0
    posts: int = 0  # every POST received, answered or not
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class InferenceServer:
    def __init__(self, model_dir: Path, *, served_name: str | None = None, reward: bool = False) -> None:
        self.model_dir = model_dir
        self.served_name = served_name or str(model_dir)
        self.reward = reward
        self.faults = Faults()
        self.state = ServerState()
        self._generator: Any = None
        self._reward_model: Any = None
        self._tokenizer: Any = None
        self._httpd: ThreadingHTTPServer | None = None
        self.dying = threading.Event()  # die_after reached: no further request is answered
        self.closed = threading.Event()  # the port is closed
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, port: int = 0) -> InferenceServer:
        self.dying.clear()
        self.closed.clear()
        if self.reward:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self._reward_model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
        elif self._generator is None:
            from pumsearch.backends.transformers_backend import TransformersGenerator

            self._generator = TransformersGenerator.load(str(self.model_dir))
            self._tokenizer = self._generator.tokenizer
        self._httpd = _QuietHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self.closed.set()

    def generate_log(self) -> list[Exchange]:
        return [e for e in self.state.log if e.path == "/generate"]

    # -- endpoints ------------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        return {
            "model_path": self.served_name,
            "tokenizer_path": self.served_name,
            "is_generation": not self.reward,
            "preferred_sampling_params": None,
        }

    def native_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        from pumsearch.search.protocols import GenerationRequest, SamplingParams

        sp = body.get("sampling_params") or {}
        unknown = set(sp) - SGLANG_SAMPLING_KEYS
        if unknown:
            raise _Reject(f"unknown sampling params: {sorted(unknown)}")
        stop = sp.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        params = SamplingParams(
            temperature=sp.get("temperature", 1.0),
            top_p=sp.get("top_p", 1.0),
            max_tokens=sp.get("max_new_tokens", 128),
            stop=stop,
        )
        ids = body.get("input_ids")
        text = body.get("text")
        if ids is None and text is None:
            raise _Reject("either text or input_ids should be provided")
        if ids is None:
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        started = time.perf_counter()
        request = GenerationRequest(
            prompt_text=text or "", prompt_ids=tuple(ids), n=1, params=params, seed=sp.get("sampling_seed")
        )
        (out,) = self._generator.generate_sync([request])
        (comp,) = out.completions
        cached = self._cached_prefix(list(ids), comp.token_ids or [])
        if comp.finish_reason == "step":
            finish = {"type": "stop", "matched": comp.matched_stop}
        elif comp.finish_reason == "eos":
            finish = {"type": "stop", "matched": comp.token_ids[-1]}
        else:
            finish = {"type": "length", "length": params.max_tokens}
        return {
            "text": comp.text,
            "output_ids": comp.token_ids,
            "meta_info": {
                "id": body.get("rid") or uuid.uuid4().hex,
                "finish_reason": finish,
                "prompt_tokens": len(ids),
                "completion_tokens": comp.num_tokens,
                "cached_tokens": cached,
                "e2e_latency": time.perf_counter() - started,
            },
        }

    def _cached_prefix(self, prompt: list[int], output: list[int]) -> int:
        with self.state.lock:
            best = 0
            for seq in self.state.seen:
                n = 0
                for a, b in zip(seq, prompt, strict=False):
                    if a != b:
                        break
                    n += 1
                best = max(best, n)
            self.state.seen.append(prompt + output)
        return min(best, len(prompt) - 1)

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        from pumsearch.search.protocols import GenerationRequest, SamplingParams

        if body.get("model") != self.served_name:
            raise _Reject(f"The model `{body.get('model')}` does not exist.", status=404)
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        params = SamplingParams(
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            max_tokens=body.get("max_tokens", 16),
            stop=stop,
        )
        ids = self._tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
        request = GenerationRequest(
            prompt_text=body["prompt"],
            prompt_ids=tuple(ids),
            n=int(body.get("n", 1)),
            params=params,
            seed=body.get("seed"),
        )
        (out,) = self._generator.generate_sync([request])
        choices = []
        for i, comp in enumerate(out.completions):
            finish = "length" if comp.finish_reason == "length" else "stop"
            matched = (
                comp.matched_stop
                if comp.finish_reason == "step"
                else (comp.token_ids[-1] if comp.finish_reason == "eos" else None)
            )
            choices.append(
                {
                    "index": i,
                    "text": comp.text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "matched_stop": matched,
                }
            )
        generated = sum(c.num_tokens for c in out.completions)
        return {
            "id": uuid.uuid4().hex,
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": generated,
                "total_tokens": len(ids) + generated,
            },
        }

    def classify(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        texts = body["text"] if isinstance(body["text"], list) else [body["text"]]
        results = []
        for text in texts:
            ids = self._tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                reward = float(self._reward_model(input_ids=ids).logits[0, 0])
            results.append(
                {
                    "embedding": [reward],
                    "meta_info": {"id": uuid.uuid4().hex, "prompt_tokens": int(ids.shape[1])},
                }
            )
        return results


SGLANG_SAMPLING_KEYS = {  # SamplingParams fields, python/sglang/srt/sampling/sampling_params.py
    "max_new_tokens",
    "stop",
    "stop_token_ids",
    "stop_regex",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_new_tokens",
    "n",
    "json_schema",
    "regex",
    "ebnf",
    "structural_tag",
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "no_stop_trim",
    "custom_params",
    "stream_interval",
    "logit_bias",
    "sampling_seed",
}


class _Reject(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _handler_for(server: InferenceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self._answered()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, None, raw=b"")
            elif self.path in ("/model_info", "/get_model_info"):
                self._send(200, server.model_info())
            elif self.path == "/v1/models":
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": server.served_name, "object": "model", "owned_by": "sglang"}],
                    },
                )
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            state, faults = server.state, server.faults
            if server.dying.is_set():  # dead already: hang up once the port is closed, never answer
                server.closed.wait(10)
                self.close_connection = True
                return
            with state.lock:
                state.posts += 1
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
            self.in_flight = True
            try:
                self._post(state, faults)
            finally:
                self._answered()

        def _answered(self) -> None:
            """A POST stops counting as in flight before its answer goes out: the client may send
            its next request as soon as it reads the answer, before this thread runs on."""
            if getattr(self, "in_flight", False):
                self.in_flight = False
                with server.state.lock:
                    server.state.in_flight -= 1

        def _post(self, state: ServerState, faults: Faults) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if faults.delay:
                time.sleep(faults.delay)
            with state.lock:
                fail = faults.fail_next > 0
                faults.fail_next -= int(fail)
            if fail:
                self._send(500, {"error": {"message": "injected failure", "code": 500}})
                return
            if faults.reject is not None:
                self._send(400, {"error": {"message": faults.reject, "code": 400}})
                return
            if faults.malformed:
                self._send(200, None, raw=b'{"text": "cut off')
                return
            routes = {
                "/generate": server.native_generate,
                "/v1/completions": server.completions,
                "/classify": server.classify,
            }
            if self.path not in routes:
                self._send(404, {"detail": "Not Found"})
                return
            try:
                response = routes[self.path](body)
            except _Reject as err:
                self._send(err.status, {"error": {"message": str(err), "code": err.status}})
                return
            with state.lock:
                state.log.append(Exchange(self.path, body, response))
                state.answered += 1
                dying = faults.die_after is not None and state.answered >= faults.die_after
            if dying:
                server.dying.set()  # before answering, so no later request is served
            self._send(200, response)
            if dying:
                threading.Thread(target=server.stop, daemon=True).start()

    return Handler


def closed_port_url() -> str:
    """The address of a port nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
