"""The SGLang server backend (``--backend sglang-server --url URL``): native POST /generate.

Each sample is its own request (SGLang's n > 1 has had bugs; repeated prompts share the radix
cache anyway), with its own ``sampling_seed`` and ``rid``, all sent at once up to
``max_concurrency`` in flight. Prefixes go as ``input_ids`` so the model sees exactly what it
generated and the radix cache hits. The same client works against sglang-router, which speaks
the same API. Start-up checks /health and /model_info (falling back to /get_model_info on older
servers) and refuses a server that serves another model than --model names, and reads from
/server_info whether the server honours seeds (only with ``--enable-deterministic-inference``,
which ``--launch`` passes): ``samples_reproducible`` says so, and runs record it. A text prompt
(a prefix whose token ids are unknown) goes without the chat template's BOS, since SGLang adds
one (sglang/srt/managers/tokenizer_manager.py:1020-1071). ``--extra-body`` is merged into every
body (``{"sampling_params": {"top_k": 20}}`` adds a sampling parameter).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from pumsearch.backends.errors import BackendError
from pumsearch.backends.remote import (
    RAW_LOGPROBS_ENV,
    LaunchedServer,
    ServerOptions,
    TokenizerPrompts,
    merge_body,
    sample_seeds,
)
from pumsearch.backends.sglang_common import (
    completion_from_sglang,
    logprob_fields,
    prompt_counts,
    sglang_sampling_params,
    sglang_seeds_honoured,
)
from pumsearch.http_common import same_model, served_model_info
from pumsearch.models import load_tokenizer
from pumsearch.search.budget import add_known
from pumsearch.search.protocols import GenerationOutput, GenerationRequest


class SGLangServerGenerator(TokenizerPrompts):
    """``samples_reproducible``: whether the server honours seeds (None where it does not say);
    ``logprobs_tempered``: whether its log-probabilities are of logits / T (None where unknown)."""

    takes_token_ids = True

    def __init__(self, url: str, tokenizer: Any, *, name: str, options: ServerOptions | None = None,
                 launched: LaunchedServer | None = None, extra_body: dict[str, Any] | None = None,
                 samples_reproducible: bool | None = None, logprobs_tempered: bool | None = None) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.name = name
        self.client = (options or ServerOptions()).client(self.url)
        self.launched = launched
        self.extra_body = dict(extra_body or {})
        self.samples_reproducible = samples_reproducible
        self.logprobs_tempered = logprobs_tempered

    @classmethod
    def connect(cls, url: str, *, model: str | None = None, tokenizer: str | None = None,
                launched: LaunchedServer | None = None, trust_remote_code: bool = False,
                extra_body: dict[str, Any] | None = None, **options: Any) -> SGLangServerGenerator:
        """Check the server (health, served model, seeds) and load the tokenizer for chat prompts.
        ``options``: ServerOptions fields (max_concurrency, request_timeout, retries, backoff)."""
        url = url.rstrip("/")
        settings = ServerOptions(**options)
        served = server_model_path(url, settings)
        if model is not None and served is not None and not same_model(model, served):
            raise BackendError(
                f"the server at {url} serves {served!r}, not {model!r}: "
                "point --url at the right server or fix --model"
            )
        name = model or served
        source = tokenizer or model or served
        if source is None:
            raise BackendError(f"the server at {url} does not say which model it serves: pass --tokenizer")
        tempered = None
        if launched is not None:
            tempered = launched.env.get(RAW_LOGPROBS_ENV) != "1"
        return cls(url, load_tokenizer(source, trust_remote_code=trust_remote_code), name=name or source,
                   options=settings, launched=launched, extra_body=extra_body,
                   samples_reproducible=sglang_seeds_honoured(url, settings.start_up_checks()),
                   logprobs_tempered=tempered)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        jobs = [self._sample(req, seed) for req in requests for seed in sample_seeds(req)]
        results = await asyncio.gather(*jobs)
        outputs: list[GenerationOutput] = []
        offset = 0
        for req in requests:
            mine = results[offset : offset + req.n]
            offset += req.n
            out = GenerationOutput([r[0] for r in mine])
            for _, body, retries, _in_flight in mine:
                prompt, cached = prompt_counts(body)
                out.prompt_tokens += prompt
                out.cached_tokens = add_known(out.cached_tokens, cached)
                out.retries += retries
            outputs.append(out)
        peak = max((r[3] for r in results), default=0)  # the call's peak, on every output of the call
        for out in outputs:
            out.requests_in_flight = peak
        return outputs

    async def _sample(self, req: GenerationRequest, seed: int) -> tuple[Any, dict[str, Any], int, int]:
        payload: dict[str, Any] = {
            "sampling_params": sglang_sampling_params(req.params, seed),
            "rid": uuid.uuid4().hex,
        }
        if req.prompt_ids is not None:
            payload["input_ids"] = list(req.prompt_ids)
        else:
            payload["text"] = self.text_for_bos_adding_server(req.prompt_text)
        payload.update(logprob_fields(req))
        reply = await self.client.post_json("/generate", merge_body(payload, self.extra_body))
        body = reply.body[0] if isinstance(reply.body, list) and len(reply.body) == 1 else reply.body
        completion = completion_from_sglang(body, req.params.stop, f"{self.url}/generate")
        return completion, body, reply.retries, reply.in_flight

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.launched is not None:
            self.launched.stop()
            self.launched = None


def server_model_path(url: str, options: ServerOptions) -> str | None:
    """The served model's path (None where the server does not say); refuses an embedding/reward
    model server, which cannot generate."""
    info = served_model_info(url, **options.start_up_checks())
    if info is None:
        return None
    if info.get("is_generation") is False:
        raise BackendError(
            f"the server at {url} serves {info['model_path']!r} as an embedding/reward "
            "model (--is-embedding); it cannot generate"
        )
    return str(info["model_path"])
