"""What the server backends share: a local tokenizer for chat prompts, model-name checks, --launch.

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
from pathlib import Path
from typing import Any

from pumsearch.backends.errors import BackendError, require_sglang


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    from pumsearch.backends.transformers_backend import check_model_location

    try:
        check_model_location(name)
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise BackendError(
            f"could not load the tokenizer {name!r} (needed for chat prompts): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; "
            "pass --tokenizer with a local path"
        ) from None


def same_model(asked: str, served: str) -> bool:
    """Whether a model name and the one a server reports name the same model: equal, or equal
    last path components (a hub name against a local copy of it)."""

    def last(name: str) -> str:
        return Path(name.rstrip("/")).name.lower()

    return asked.rstrip("/") == served.rstrip("/") or last(asked) == last(served)


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
