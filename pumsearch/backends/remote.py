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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumsearch.backends.errors import BackendError, BackendUnavailable, require_sglang
from pumsearch.backends.http_client import RetryingClient


@dataclass(frozen=True)
class ServerOptions:
    """How a server backend talks to its server: requests in flight at once, seconds before one
    times out, retries of a failed one and the first backoff (--max-concurrency, --request-timeout,
    --retries)."""

    max_concurrency: int = 64
    request_timeout: float = 600.0
    retries: int = 3
    backoff: float = 0.5

    def client(self, url: str, headers: dict[str, str] | None = None) -> RetryingClient:
        return RetryingClient(url, max_concurrency=self.max_concurrency, timeout=self.request_timeout,
                              retries=self.retries, backoff=self.backoff, headers=headers)

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


class LaunchedServer:
    """A server process this run started (``--launch``); stopped at exit, with only its own
    process group signalled, so no unrelated process is touched."""

    def __init__(self, command: list[str], *, url: str, log_path: Path | None = None) -> None:
        self.command = command
        self.url = url
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
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
    """Start ``python -m sglang.launch_server`` for ``model`` on 127.0.0.1 and wait for /health."""
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
        *(extra_args or []),
    ]
    server = LaunchedServer(command, url=f"http://127.0.0.1:{port}", log_path=log_path)
    server.wait_healthy(timeout)
    return server
