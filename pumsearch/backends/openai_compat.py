"""OpenAI-compatible completions (``--backend openai --url URL``): llama.cpp, vLLM, SGLang's /v1, others.

POST /v1/completions, shaped for the server that answers: ``GET /v1/models`` says which kind it is
(pumsearch.backends.openai_servers, where each difference is cited from the server's source), and
the kind decides

- **prompts**: token ids where the server takes them (vLLM, SGLang, llama.cpp), with the generated
  ids asked back, so prefixes are extended by ids exactly as on the other backends; otherwise text,
  without the chat template's BOS where the server adds one itself (else the model would see two),
  or with ``add_special_tokens: false`` where that switch exists (vLLM);
- **samples**: ``n`` in one request where the server honours it (vLLM), else one request per sample,
  each with its own seed (``--server-n`` overrides; an unknown server that answers fewer choices
  than asked is sent one request per sample from then on);
- **sampling**: the neutral value of every sampling field the server would otherwise fill with a
  default of its own (llama.cpp's top_k 40, min_p 0.05; vLLM's generation_config), then
  ``--extra-body`` over all of it;
- **how a choice ended**: vLLM's ``stop_reason``, SGLang's ``matched_stop``, llama.cpp's
  ``__verbose.stop_type``; else the generated token texts of legacy log-probabilities (a stop
  string among them means it matched); else, on llama-cpp-python (which counts stop-string tokens
  but not the EOS), ``completion_tokens`` against the re-tokenised text; else a guess (the step
  delimiter, warned once), since a server that says nothing leaves nothing to decide by;
- **counts**: ``usage`` per request; cached prompt tokens from ``prompt_tokens_details`` where the
  server reports them, None (unknown) where it does not;
- **log-probabilities**: ``logprobs: k`` read from the legacy format or llama.cpp's ``content``
  list; alternatives by token id (vLLM's ``return_tokens_as_token_ids``, llama.cpp's ids), else by
  encoding their text (an alternative whose text is not one token is left out).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pumsearch.backends.errors import BackendError
from pumsearch.backends.openai_servers import LLAMA_CPP, OPENAI, SGLANG, ServerKind, identify, sends_n
from pumsearch.backends.remote import ServerOptions, TokenizerPrompts, merge_body, sample_seeds
from pumsearch.backends.sglang_common import sglang_seeds_honoured
from pumsearch.http_common import get_json_sync, same_model
from pumsearch.models import load_tokenizer
from pumsearch.search.budget import add_known
from pumsearch.search.protocols import Completion, FinishReason, GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)
TokenTop = list[tuple[int, float]]


@dataclass
class _Reply:
    output: GenerationOutput
    in_flight: int


class OpenAICompatGenerator(TokenizerPrompts):
    """``samples_reproducible``: whether a request's seed decides its samples on this server (None
    where unknown). ``logprobs_tempered``: whether the server's log-probabilities are of the
    tempered distribution (SGLang) rather than the raw one (None where unknown)."""

    def __init__(self, url: str, tokenizer: Any, *, name: str, served_model: str, kind: ServerKind = OPENAI,
                 server_n: str = "auto", extra_body: Mapping[str, Any] | None = None,
                 options: ServerOptions | None = None, api_key: str | None = None, server_slots: int | None = None,
                 samples_reproducible: bool | None = None) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.name = name
        self.served_model = served_model
        self.kind = kind
        self.takes_token_ids = kind.takes_token_ids
        self.server_n = server_n
        self.split_samples = not sends_n(kind, server_n)
        self.extra_body = dict(extra_body or {})
        self.samples_reproducible = samples_reproducible
        self.logprobs_tempered = kind.tempered_logprobs
        self.guessed_finishes = 0  # choices whose stop the server did not say and nothing could tell
        self._ids_of_text: dict[str, int | None] = {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.client = (options or ServerOptions()).client(
            self.url, headers=headers, server_slots=1 if kind.one_slot else server_slots,
            retry_timeouts=kind.cancels_on_disconnect is not False,
        )

    @classmethod
    def connect(cls, url: str, *, model: str | None = None, tokenizer: str | None = None, api_key: str | None = None,
                trust_remote_code: bool = False, server_n: str = "auto", extra_body: Mapping[str, Any] | None = None,
                **options: Any) -> OpenAICompatGenerator:
        """Check that the server serves ``model`` (GET /v1/models), learn its kind and slots, and
        load the tokenizer (``--tokenizer``, else ``model``, else the served id; a GGUF file is fine).
        ``options``: ServerOptions fields (max_concurrency, request_timeout, retries, backoff)."""
        url = url.rstrip("/").removesuffix("/v1")
        settings = ServerOptions(**options)
        checks = settings.start_up_checks()
        listing = get_json_sync(f"{url}/v1/models", **checks)
        kind = identify(listing)
        served = [str(m.get("id")) for m in (listing or {}).get("data", []) if isinstance(m, dict)]
        served_model = pick_served_model(url, model, served)
        source = tokenizer or model or served_model
        return cls(url, load_tokenizer(source, trust_remote_code=trust_remote_code), name=model or served_model,
                   served_model=served_model, kind=kind, server_n=server_n, extra_body=extra_body, options=settings,
                   api_key=api_key, server_slots=server_slots(url, kind, checks),
                   samples_reproducible=seeds_decide_samples(url, kind, checks))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        replies = await asyncio.gather(*(self._one(req) for req in requests))
        peak = max((r.in_flight for r in replies), default=0)
        for reply in replies:
            reply.output.requests_in_flight = peak
        return [r.output for r in replies]

    async def _one(self, req: GenerationRequest) -> _Reply:
        if req.n > 1 and self.split_samples:
            return await self._per_sample(req)
        reply = await self.client.post_json("/v1/completions", self._payload(req, req.n, req.seed))
        choices = _choices(reply.body)
        if len(choices) != req.n and req.n > 1 and self.server_n == "auto" and len(choices) == 1:
            log.warning("%s answered 1 choice for n=%d: sending one request per sample from now on", self.url, req.n)
            self.split_samples = True
            return await self._per_sample(req)
        out = self._read(reply.body, choices, req)
        out.retries = reply.retries
        return _Reply(out, reply.in_flight)

    async def _per_sample(self, req: GenerationRequest) -> _Reply:
        """n requests of one choice, seeded as the other backends seed their samples."""
        posts = [self.client.post_json("/v1/completions", self._payload(req, 1, seed)) for seed in sample_seeds(req)]
        out = GenerationOutput([], cached_tokens=0)
        in_flight = 0
        for reply in await asyncio.gather(*posts):
            one = self._read(reply.body, _choices(reply.body), req, expected=1)
            out.completions.extend(one.completions)
            out.prompt_tokens += one.prompt_tokens
            out.cached_tokens = add_known(out.cached_tokens, one.cached_tokens)
            out.retries += reply.retries
            in_flight = max(in_flight, reply.in_flight)
        return _Reply(out, in_flight)

    # -- the request ----------------------------------------------------------------------------
    def _payload(self, req: GenerationRequest, n: int, seed: int | None) -> dict[str, Any]:
        params = req.params
        payload: dict[str, Any] = {
            "model": self.served_model,
            "prompt": self._prompt(req),
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            **self.kind.neutral,
            **self.kind.extra,
        }
        if isinstance(payload["prompt"], str):
            payload.update(self.kind.text_switch)
        if params.stop:
            payload["stop"] = list(params.stop)
        if seed is not None:
            payload["seed"] = seed % (2**31)
        if params.want_logprobs or params.top_logprobs:
            payload["logprobs"] = max(params.top_logprobs, self.kind.min_top_logprobs)
            payload.update(self.kind.logprob_extra)
        return merge_body(payload, self.extra_body)

    def _prompt(self, req: GenerationRequest) -> str | list[int]:
        if req.prompt_ids is not None and self.takes_token_ids:
            return list(req.prompt_ids)
        if self.kind.text_adds_bos and not self.kind.text_switch:
            return self.text_for_bos_adding_server(req.prompt_text)
        return req.prompt_text

    # -- the answer -----------------------------------------------------------------------------
    def _read(self, body: Any, choices: list[Any], req: GenerationRequest,
              expected: int | None = None) -> GenerationOutput:
        source = f"{self.url}/v1/completions"
        expected = req.n if expected is None else expected
        if len(choices) != expected:
            raise BackendError(
                f"malformed response from {source}: expected {expected} choices, got {len(choices)}"
                + (" (the server ignores n: pass --server-n split)" if len(choices) == 1 else "")
            )
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        usage = body.get("usage") or {}
        total = usage.get("completion_tokens")
        one_choice = isinstance(total, int) and len(choices) == 1
        verbose = body.get("__verbose")  # llama.cpp: of the first choice only
        verbose = verbose if isinstance(verbose, dict) and len(choices) == 1 else None
        completions = [
            self._completion(c, req, source, counted=total if one_choice else None, verbose=verbose)
            for c in choices
        ]
        if isinstance(total, int) and not one_choice and any(c.token_ids is None for c in completions):
            share_tokens(completions, total)
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return GenerationOutput(
            completions,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=cached if isinstance(cached, int) else None,
        )

    def _completion(self, choice: Any, req: GenerationRequest, source: str, *, counted: int | None,
                    verbose: dict[str, Any] | None) -> Completion:
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            raise BackendError(f"malformed response from {source}: a choice has no text")
        text = choice["text"]
        token_logprobs, top, token_texts = self._logprobs(choice.get("logprobs"), req.params.top_logprobs)
        reason, matched = self._finish(choice, verbose, req.params.stop, text, counted, token_texts, source)
        ids = choice.get("token_ids") if choice.get("token_ids") is not None else (verbose or {}).get("tokens")
        token_ids = [int(t) for t in ids] if isinstance(ids, list) and ids else None
        if token_ids is not None:
            num_tokens = len(token_ids)
        elif counted is not None:  # a server that does not count the EOS it generated
            num_tokens = counted + int(reason == "eos" and self.kind.counts_eos is False)
        else:
            num_tokens = self.count_tokens(text) + (0 if reason == "length" else 1)  # + the stop/eos token
        return Completion(
            text=text,
            token_ids=token_ids,
            num_tokens=num_tokens,
            finish_reason=reason,
            matched_stop=matched,
            logprob=float(sum(token_logprobs)) if token_logprobs else None,
            token_logprobs=token_logprobs or None,
            top_logprobs=(top or None) if req.params.top_logprobs else None,
        )

    def _finish(self, choice: dict[str, Any], verbose: dict[str, Any] | None, stops: tuple[str, ...], text: str,
                counted: int | None, token_texts: str | None, source: str) -> tuple[FinishReason, str | None]:
        """Why a choice ended, from the best evidence the server gave (see the module doc)."""
        finish = choice.get("finish_reason")
        stop_type = (verbose or {}).get("stop_type")
        if finish == "length" or stop_type == "limit":
            return "length", None
        if finish not in ("stop", "eos", None):
            raise BackendError(f"{source} ended a choice with finish_reason {finish!r}")
        if stop_type in ("eos", "word"):
            return _stop_or_eos(verbose.get("stopping_word") if stop_type == "word" else None, stops)  # type: ignore[union-attr]
        for key in ("stop_reason", "matched_stop"):  # vLLM, SGLang: a str for a stop string
            if key in choice:
                return _stop_or_eos(choice[key], stops)
        if not stops:
            return "eos", None
        if token_texts is not None:  # the generated tokens hold the stop string the text leaves out
            return _stop_or_eos(next((s for s in stops if s in token_texts), None), stops)
        if counted is not None and self.kind.counts_eos is False:
            return self._by_count(text, counted, stops)
        if self.guessed_finishes == 0:
            log.warning("%s does not say whether a choice ended at a stop string or at the end of sequence: "
                        "taking each for a step (docs/backends.md)", source)
        self.guessed_finishes += 1
        return "step", stops[0]

    def _by_count(self, text: str, counted: int, stops: tuple[str, ...]) -> tuple[FinishReason, str | None]:
        """llama-cpp-python counts the tokens of a matched stop string, not the EOS: as many tokens
        as the text re-tokenises to means the end of sequence, as many as text + stop string a
        step. Where both agree (the stop string merges into the text's last token) or neither
        does (the model wrote a tokenisation of its text that is not the tokenizer's own), the
        counts cannot tell, and the choice is taken for a step (counted as a guess)."""
        stop = next((s for s in stops if self.count_tokens(text + s) == counted), None)
        ends = counted == self.count_tokens(text)
        if ends != (stop is not None):
            return ("eos", None) if ends else ("step", stop)
        self.guessed_finishes += 1
        return "step", stop or stops[0]

    def _logprobs(self, entries: Any, k: int) -> tuple[list[float], list[TokenTop], str | None]:
        """(log-probability per token, the k most likely (id, log-probability) per token, the generated
        tokens' text where the format gives it)."""
        if not isinstance(entries, dict):
            return [], [], None
        if isinstance(entries.get("content"), list):  # llama.cpp: ids given; stop-word entries dropped
            content = [e for e in entries["content"] if isinstance(e, dict)]
            top = [[(int(t["id"]), float(t["logprob"])) for t in e.get("top_logprobs") or []][:k] for e in content]
            return [float(e["logprob"]) for e in content], top, None
        values = [float(x) for x in entries.get("token_logprobs") or [] if x is not None]
        tokens = [str(t) for t in entries.get("tokens") or []]
        by_id = any(t.startswith("token_id:") for t in tokens)
        top = [self._top(d, k) for d in entries.get("top_logprobs") or []]
        return values, top, None if by_id or not tokens else "".join(tokens)

    def _top(self, alternatives: Any, k: int) -> TokenTop:
        pairs = []
        for token, value in (alternatives or {}).items():
            token_id = self._token_id(str(token))
            if token_id is not None and value is not None:
                pairs.append((token_id, float(value)))
        return sorted(set(pairs), key=lambda p: p[1], reverse=True)[:k]

    def _token_id(self, token: str) -> int | None:
        if token.startswith("token_id:"):
            return int(token.removeprefix("token_id:"))
        if token not in self._ids_of_text:
            ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
            self._ids_of_text[token] = int(ids[0]) if len(ids) == 1 else None
        return self._ids_of_text[token]

    async def aclose(self) -> None:
        await self.client.aclose()


def _choices(body: Any) -> list[Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    return choices if isinstance(choices, list) else []


def _stop_or_eos(matched: Any, stops: tuple[str, ...]) -> tuple[FinishReason, str | None]:
    """A step when ``matched`` is one of the step delimiters; anything else (an EOS id, None, a
    stop string of the server's own) ends the solution."""
    return ("step", matched) if isinstance(matched, str) and matched in stops else ("eos", None)


def server_slots(url: str, kind: ServerKind, checks: dict[str, Any]) -> int | None:
    """How many requests the server generates at once, where it says: llama.cpp's ``GET /props``
    ``total_slots`` (tools/server/server-context.cpp:4586)."""
    if kind is not LLAMA_CPP:
        return None
    props = get_json_sync(f"{url}/props", accept_404=True, **checks)
    slots = props.get("total_slots") if isinstance(props, dict) else None
    return slots if isinstance(slots, int) and slots > 0 else None


def seeds_decide_samples(url: str, kind: ServerKind, checks: dict[str, Any]) -> bool | None:
    """Whether the server's samples are reproducible from their seeds: by kind, and for SGLang
    from ``GET /server_info`` (``enable_deterministic_inference``; without it SGLang ignores seeds,
    sglang/srt/sampling/sampling_batch_info.py:157-171)."""
    if kind is SGLANG:
        return sglang_seeds_honoured(url, checks)
    return kind.seeded


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
