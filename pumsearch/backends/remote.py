"""What the server backends share: how they talk to a server, chat prompts from a local tokenizer, --launch.

A server takes prompts as text or token ids, but the chat template lives with the tokenizer, so
the client loads the tokenizer locally (from --tokenizer, else --model, else the path the server
reports) and renders prompts exactly as the transformers backend does.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumsearch.backends.errors import BackendError, BackendUnavailable, require_sglang
from pumsearch.backends.http_client import RetryingClient
from pumsearch.models import hash_seed
from pumsearch.search.protocols import GenerationRequest

DEFAULT_IN_FLIGHT = 64  # requests in flight when neither --max-concurrency nor the server says


@dataclass(frozen=True)
class ServerOptions:
    """How a server backend talks to its server: requests in flight at once (None: what the server
    can take, else DEFAULT_IN_FLIGHT), seconds before one times out, retries of a failed one and
    the first backoff (--max-concurrency, --request-timeout, --retries)."""

    max_concurrency: int | None = None
    request_timeout: float = 600.0
    retries: int = 3
    backoff: float = 0.5

    def client(self, url: str, headers: dict[str, str] | None = None, *, server_slots: int | None = None,
               retry_timeouts: bool = True) -> RetryingClient:
        """``server_slots``: how many requests the server runs at once, where it says (the in-flight
        limit unless --max-concurrency is given). ``retry_timeouts``: False for a server that keeps
        running a request whose client hung up, so a timed-out request is not sent twice."""
        in_flight = self.max_concurrency or server_slots or DEFAULT_IN_FLIGHT
        return RetryingClient(url, max_concurrency=in_flight, timeout=self.request_timeout, retries=self.retries,
                              backoff=self.backoff, headers=headers, retry_timeouts=retry_timeouts)

    def start_up_checks(self) -> dict[str, Any]:
        """Keywords of the start-up GETs (health, served model): a shorter timeout, the same retries."""
        return {"timeout": min(self.request_timeout, 30.0), "retries": self.retries, "backoff": self.backoff,
                "error": BackendError, "unavailable": BackendUnavailable}


class TokenizerPrompts:
    """chat_prompt and count_tokens from a local tokenizer (mixed into the server backends)."""

    tokenizer: Any
    takes_token_ids: bool

    def chat_prompt(self, question: str, system_prompt: str | None) -> tuple[str, tuple[int, ...] | None]:
        from pumsearch.backends.transformers_backend import chat_prompt_text, encode_prompt

        text = chat_prompt_text(self.tokenizer, question, system_prompt)
        return text, (encode_prompt(self.tokenizer, text) if self.takes_token_ids else None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_for_bos_adding_server(self, text: str) -> str:
        """A chat-templated prompt for a server that tokenises text with the tokenizer's special
        tokens (a BOS in front): without the template's own BOS, so the model sees one, not two."""
        return strip_template_bos(self.tokenizer, text)


def strip_template_bos(tokenizer: Any, text: str) -> str:
    """``text`` without a leading BOS where encoding it would add one (a Llama-3-style
    post-processor); as it was otherwise."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return text[len(bos):] if ids[:1] == [tokenizer.bos_token_id] else text


def sample_seeds(request: GenerationRequest) -> list[int]:
    """One seed per sample, the same ones the transformers backend derives (servers that take one
    request per sample send these)."""
    return [hash_seed(request.seed, j) % (2**31) for j in range(request.n)]


def merge_body(payload: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``payload`` with ``extra`` (--extra-body) laid over it; objects are merged key by key, so
    ``{"sampling_params": {"top_k": 20}}`` adds one sampling parameter to SGLang's native body."""
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(payload.get(key), dict):
            merge_body(payload[key], value)
        else:
            payload[key] = value
    return payload


class LaunchedServer:
    """A server process this run started (``--launch``); stopped at exit, with only its own
    process group signalled, so no unrelated process is touched. ``env``: variables set for it on
    top of this process's environment."""

    def __init__(self, command: list[str], *, url: str, log_path: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self.url = url
        self.log_path = log_path
        self.env = dict(env or {})
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **self.env},
        )
        atexit.register(self.stop)

    def wait_healthy(self, timeout: float, poll: float = 1.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                where = f"; its log is {self.log_path}" if self.log_path else ""
                raise BackendError(f"the launched server exited with code {code} before it was ready{where}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=poll).status_code == 200:
                    return
            time.sleep(poll)
        self.stop()
        raise BackendError(
            f"the launched server was not healthy after {timeout:g}s (command: {' '.join(self.command)})"
        )

    def stop(self, grace: float = 20.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: only what it started
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        atexit.unregister(self.stop)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_sglang_server(
    model: str,
    *,
    port: int | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 900.0,
    log_path: Path | None = None,
) -> LaunchedServer:
    """Start ``python -m sglang.launch_server`` for ``model`` on 127.0.0.1 and wait for /health.

    Seeds must mean something: SGLang uses ``sampling_seed`` only under
    ``--enable-deterministic-inference`` (sglang/srt/sampling/sampling_batch_info.py:157-171), so
    the server gets that flag. It runs with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (unless this
    process sets the variable), so log-probabilities are of the raw distribution, as the other
    backends return them (sglang/srt/layers/sampler.py:82, 322)."""
    require_sglang()
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *deterministic_args(extra_args),
    ]
    env = {RAW_LOGPROBS_ENV: os.environ.get(RAW_LOGPROBS_ENV, "1")}
    server = LaunchedServer(command, url=f"http://127.0.0.1:{port}", log_path=log_path, env=env)
    server.wait_healthy(timeout)
    return server


DETERMINISTIC_FLAG = "--enable-deterministic-inference"
RAW_LOGPROBS_ENV = "SGLANG_RETURN_ORIGINAL_LOGPROB"


def deterministic_args(extra_args: list[str] | None) -> list[str]:
    """The launch arguments with SGLang's deterministic-inference flag (once)."""
    args = list(extra_args or [])
    return args if DETERMINISTIC_FLAG in args else [*args, DETERMINISTIC_FLAG]
