"""OpenAI-compatible completions (``--backend openai --url URL``): vLLM, SGLang's /v1, others.

POST /v1/completions with ``n``, ``stop``, ``seed`` and, when asked, ``logprobs``. This API takes
and returns text, not token ids, so **prefixes are extended by text** (``takes_token_ids`` is
False): the model may see a re-tokenisation of what it wrote. Token counts come from ``usage``
(summed over the n choices); each choice's share is its locally counted length, scaled so the
shares add up to ``usage.completion_tokens``. Which stop matched is read from vLLM's
``stop_reason`` or SGLang's ``matched_stop``; a server that reports neither is taken to have
stopped at the step delimiter whenever a stop was asked for and finish_reason is "stop".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pumsearch.backends.errors import BackendError
from pumsearch.backends.remote import ServerOptions, TokenizerPrompts
from pumsearch.http_common import get_json_sync, same_model
from pumsearch.models import load_tokenizer
from pumsearch.search.protocols import Completion, GenerationOutput, GenerationRequest


class OpenAICompatGenerator(TokenizerPrompts):
    takes_token_ids = False

    def __init__(self, url: str, tokenizer: Any, *, name: str, served_model: str,
                 options: ServerOptions | None = None, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.name = name
        self.served_model = served_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.client = (options or ServerOptions()).client(self.url, headers=headers)

    @classmethod
    def connect(cls, url: str, *, model: str | None = None, tokenizer: str | None = None, api_key: str | None = None,
                trust_remote_code: bool = False, **options: Any) -> OpenAICompatGenerator:
        """Check that the server serves ``model`` (GET /v1/models) and load the tokenizer.
        ``options``: ServerOptions fields (max_concurrency, request_timeout, retries, backoff)."""
        url = url.rstrip("/").removesuffix("/v1")
        settings = ServerOptions(**options)
        listing = get_json_sync(f"{url}/v1/models", **settings.start_up_checks())
        served = [str(m.get("id")) for m in (listing or {}).get("data", []) if isinstance(m, dict)]
        served_model = pick_served_model(url, model, served)
        source = tokenizer or model or served_model
        return cls(url, load_tokenizer(source, trust_remote_code=trust_remote_code), name=model or served_model,
                   served_model=served_model, options=settings, api_key=api_key)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        replies = await asyncio.gather(*(self._one(req) for req in requests))
        peak = max((r[1] for r in replies), default=0)
        for out, _ in replies:
            out.requests_in_flight = peak
        return [out for out, _ in replies]

    async def _one(self, req: GenerationRequest) -> tuple[GenerationOutput, int]:
        payload: dict[str, Any] = {
            "model": self.served_model,
            "prompt": req.prompt_text,
            "n": req.n,
            "max_tokens": req.params.max_tokens,
            "temperature": req.params.temperature,
            "top_p": req.params.top_p,
        }
        if req.params.stop:
            payload["stop"] = list(req.params.stop)
        if req.seed is not None:
            payload["seed"] = req.seed % (2**31)
        if req.params.want_logprobs:
            payload["logprobs"] = 1
        reply = await self.client.post_json("/v1/completions", payload)
        out = self._read(reply.body, req)
        out.retries = reply.retries
        return out, reply.in_flight

    def _read(self, body: Any, req: GenerationRequest) -> GenerationOutput:
        source = f"{self.url}/v1/completions"
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or len(choices) != req.n:
            raise BackendError(
                f"malformed response from {source}: expected {req.n} choices, got "
                f"{len(choices) if isinstance(choices, list) else 'none'}"
            )
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        usage = body.get("usage") or {}
        completions = [self._completion(c, req, source) for c in choices]
        total = usage.get("completion_tokens")
        if isinstance(total, int):
            share_tokens(completions, total)
        details = usage.get("prompt_tokens_details") or {}
        return GenerationOutput(
            completions,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )

    def _completion(self, choice: Any, req: GenerationRequest, source: str) -> Completion:
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            raise BackendError(f"malformed response from {source}: a choice has no text")
        finish = choice.get("finish_reason")
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        reports_stop = "stop_reason" in choice or "matched_stop" in choice
        stop_hit = isinstance(matched, str) and matched in req.params.stop
        if finish == "length":
            reason, matched_stop = "length", None
        elif stop_hit or (finish == "stop" and not reports_stop and req.params.stop):
            reason = "step"
            matched_stop = matched if stop_hit else req.params.stop[0]
        elif finish in ("stop", "eos", None):
            reason, matched_stop = "eos", None
        else:
            raise BackendError(f"{source} ended a choice with finish_reason {finish!r}")
        logprobs = choice.get("logprobs") or {}
        token_logprobs = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        logprob = float(sum(x for x in token_logprobs if x is not None)) if token_logprobs else None
        tokens = self.count_tokens(choice["text"]) + (0 if reason == "length" else 1)  # + the stop/eos token
        return Completion(
            text=choice["text"],
            token_ids=None,
            num_tokens=tokens,
            finish_reason=reason,  # type: ignore[arg-type]
            matched_stop=matched_stop,
            logprob=logprob,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def pick_served_model(url: str, model: str | None, served: list[str]) -> str:
    """The served model ``model`` names (a server that lists none is taken at its word), or the one
    model the server lists when ``model`` is None."""
    if model is not None:
        match = next((s for s in served if same_model(model, s)), None)
        if served and match is None:
            raise BackendError(
                f"the server at {url} serves {', '.join(served)}, not {model!r}: "
                "point --url at the right server or fix --model"
            )
        return match or model
    if len(served) == 1:
        return served[0]
    raise BackendError(
        f"the server at {url} serves {len(served)} models ({', '.join(served) or 'none listed'})"
        ": name one with --model"
    )


def share_tokens(completions: list[Completion], total: int) -> None:
    """Scale the local per-choice counts so they add up to the server's ``total`` (largest
    remainder)."""
    local = [max(c.num_tokens, 1) for c in completions]
    whole = sum(local)
    exact = [total * n / whole for n in local]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)[
        : total - sum(shares)
    ]:
        shares[i] += 1
    for completion, share in zip(completions, shares, strict=True):
        completion.num_tokens = share
