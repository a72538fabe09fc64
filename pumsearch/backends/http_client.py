"""An httpx client for inference servers: bounded concurrency, timeouts, retries with backoff.

Retries follow pumsearch.http_common's rules (``retries`` times for connection errors, timeouts
and 5xx answers; a 4xx fails at once with the server's message). Every request counts its
retries, and the client keeps the peak number of requests in flight, for the counters of each
result.

A request that times out is abandoned by closing its connection (httpcore closes a connection
whose response was not read to the end), which is how vLLM, SGLang and llama.cpp learn to stop
generating it. A server that keeps running it regardless (llama-cpp-python) would have the retry
queue behind the abandoned request, so for such a server (``retry_timeouts=False``) a timeout is
not retried: it fails with a line saying to raise --request-timeout. Time a request waits for a
free slot here (``max_concurrency``) does not count against its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

from pumsearch.backends.errors import BackendError, BackendUnavailable
from pumsearch.http_common import RETRYABLE, RetryableStatus, describe, json_or_raise


@dataclass
class Reply:
    body: Any
    retries: int
    in_flight: int  # requests in flight when this one started (itself included)


class RetryingClient:
    def __init__(
        self,
        base_url: str,
        *,
        max_concurrency: int = 64,
        timeout: float = 600.0,
        retries: int = 3,
        backoff: float = 0.5,
        connect_timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        retry_timeouts: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max-concurrency must be at least 1")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.retry_timeouts = retry_timeouts
        self.max_concurrency = max_concurrency
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._limits = httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency
        )
        self._headers = headers or {}
        self._client: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0
        self.peak_in_flight = 0

    def _ensure(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # One client per event loop: the CLI may run several asyncio.run calls in one process.
        loop = asyncio.get_running_loop()
        if self._client is None or self._gate is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self._timeout, limits=self._limits, headers=self._headers
            )
            self._gate = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._gate

    async def post_json(self, path: str, payload: dict[str, Any]) -> Reply:
        """POST ``payload`` and return the decoded JSON body, retrying transient failures."""
        client, gate = self._ensure()
        async with gate:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            in_flight = self.in_flight
            try:
                body, retries = await self._post_with_retries(client, path, payload)
            finally:
                self.in_flight -= 1
        return Reply(body, retries, in_flight)

    async def _post_with_retries(
        self, client: httpx.AsyncClient, path: str, payload: dict[str, Any]
    ) -> tuple[Any, int]:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await client.post(path, json=payload)
                return json_or_raise(response, url, BackendError), attempt
            except httpx.TimeoutException as err:
                if not self.retry_timeouts and not isinstance(err, httpx.ConnectTimeout):
                    raise BackendUnavailable(
                        f"{url} {describe(err)} after {self._timeout.read:g}s; the server keeps running a request "
                        "whose client left, so it is not sent again: raise --request-timeout"
                    ) from None
                last = describe(err)
            except RETRYABLE as err:
                last = describe(err)
            except RetryableStatus as err:
                last = str(err)
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        raise BackendUnavailable(f"{url} failed after {tries}: {last}")

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is gone; the sockets went with it
                await self._client.aclose()
            self._client = None
