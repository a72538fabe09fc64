"""HTTP pieces the server backends and the served reward model (``--scorer-url``) share.

Retry rules, the same for every server: connection errors, timeouts and 5xx answers are retried
(backoff doubling from ``backoff`` seconds); a 4xx answer is the caller's mistake and fails at once
with the server's message. Each caller names the exception classes its layer raises (a backend's
``BackendError``, a scorer's ``ScorerError``), so nothing here belongs to either layer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

RETRYABLE = (httpx.TransportError,)  # connect/read/write errors and timeouts, protocol errors


class RetryableStatus(Exception):
    """A 5xx answer: the server may recover, so the request is tried again."""


def server_message(response: httpx.Response, limit: int = 300) -> str:
    """The error text a server sent (SGLang and OpenAI servers wrap it in {"error": ...})."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:limit].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body.get("detail", body)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:limit]
    return str(body)[:limit]


def describe(err: BaseException) -> str:
    """A one-line description of a transport error (httpx messages can be empty)."""
    text = str(err).strip()
    kind = {httpx.ConnectError: "connection refused or unreachable", httpx.TimeoutException: "timed out"}
    for cls, words in kind.items():
        if isinstance(err, cls):
            return f"{words}{f' ({text})' if text and words not in text else ''}"
    return text or type(err).__name__


def json_or_raise(response: httpx.Response, url: str, error: type[Exception]) -> Any:
    """The JSON body of a 2xx answer. A 5xx raises RetryableStatus; a 4xx is the caller's mistake
    and raises ``error`` with the server's message, as does a body that is not JSON."""
    if response.status_code >= 500:
        raise RetryableStatus(f"HTTP {response.status_code}: {server_message(response)}")
    if response.status_code >= 400:
        raise error(f"{url} refused the request (HTTP {response.status_code}): {server_message(response)}")
    try:
        return response.json()
    except ValueError:
        raise error(f"malformed response from {url}: not JSON ({response.text[:80]!r})") from None


def get_json_sync(url: str, *, timeout: float, retries: int, backoff: float, error: type[Exception],
                  unavailable: type[Exception], accept_404: bool = False) -> Any:
    """A GET at start-up (health and model checks), with the retry rules above: ``error`` for a 4xx,
    ``unavailable`` when no attempt got an answer. None on 404 when ``accept_404`` (so a caller can
    try an older endpoint name)."""
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            response = httpx.get(url, timeout=timeout)
        except RETRYABLE as err:
            last = describe(err)
            continue
        if response.status_code >= 500:
            last = f"HTTP {response.status_code}: {server_message(response)}"
            continue
        if response.status_code == 404 and accept_404:
            return None
        if response.status_code >= 400:
            raise error(f"{url} answered HTTP {response.status_code}: {server_message(response)}")
        if not response.content:
            return {}
        try:
            return response.json()
        except json.JSONDecodeError:
            return {"_text": response.text}
    raise unavailable(f"no server answering at {url} ({last}); start one, or check --url")


def served_model_info(url: str, *, timeout: float, retries: int, backoff: float, error: type[Exception],
                      unavailable: type[Exception]) -> dict[str, Any] | None:
    """Wait for an SGLang server's /health, then read what it serves from /model_info
    (/get_model_info on older versions): ``model_path`` and ``is_generation``. None where the
    server does not say (sglang-router may not)."""
    checks = {"timeout": timeout, "retries": retries, "backoff": backoff, "error": error, "unavailable": unavailable}
    get_json_sync(f"{url}/health", **checks)
    for path in ("/model_info", "/get_model_info"):
        info = get_json_sync(f"{url}{path}", accept_404=True, **checks)
        if isinstance(info, dict) and info.get("model_path"):
            return info
    return None


def same_model(asked: str, served: str) -> bool:
    """Whether a model name and the one a server reports name the same model: equal, or equal
    last path components (a hub name against a local copy of it)."""

    def last(name: str) -> str:
        return Path(name.rstrip("/")).name.lower()

    return asked.rstrip("/") == served.rstrip("/") or last(asked) == last(served)


__all__ = [
    "RETRYABLE",
    "RetryableStatus",
    "describe",
    "get_json_sync",
    "json_or_raise",
    "same_model",
    "served_model_info",
    "server_message",
]
