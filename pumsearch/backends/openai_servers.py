"""What each OpenAI-compatible server does differently, read from its source (docs/backends.md).

``POST /v1/completions`` is one schema that four servers fill in four ways. A ``ServerKind`` says,
for one of them, what ``OpenAICompatGenerator`` must send and may read; ``identify`` picks the
kind from ``GET /v1/models`` (``data[].owned_by``). Sources (file:line at the versions named in
docs/backends.md: llama-cpp-python 0.3.36, llama.cpp as vendored in it, vLLM 0.33.0, SGLang 0.5.23):

- **llama-cpp-python** (``owned_by: "me"``, llama_cpp/server/app.py:544): ignores ``n`` (types.py:141-143,
  app.py:317-324) and takes no token ids (types.py:111-113); fills omitted fields with top_k 40,
  min_p 0.05, repeat_penalty 1.1 (types.py:39-69); says neither ``stop_reason`` nor ``matched_stop``
  and counts stop-string tokens but not the EOS in ``completion_tokens`` (llama.py:1412-1439,
  1808-1812); reports no cached tokens; runs one request at a time and never cancels one that has
  started (app.py:64-89, 357); text prompts get the GGUF's BOS (llama.py:1243-1248).
- **llama.cpp** ``llama-server`` (``"llamacpp"``): ``n`` up to the slot count, but ``usage`` then covers
  the first choice only (tools/server/server-context.cpp:4266-4273), so one request per sample;
  takes ids as they are (server-common.cpp:950-953); ``verbose: true`` adds ``__verbose`` with
  ``stop_type`` and, with ``return_tokens``, the generated ids (server-task.cpp:342-365, 405-407);
  omitted fields take top_k 40, min_p 0.05 (common/common.h:229-241); slots from ``GET /props``
  (server-context.cpp:4566-4615); a disconnect cancels (server-queue.cpp:581-601).
- **vLLM** (``"vllm"``): honours ``n`` (children seeded seed+j, v1/engine/parallel_sampling.py:69-82);
  takes ids (completion/protocol.py:53-59); ``return_token_ids`` (:172-181), ``stop_reason``
  (:680-687); omitted fields come from the model's generation_config (:367-375); cached tokens only
  with ``--enable-prompt-tokens-details`` (completion/serving.py:668-675); text gets BOS unless
  ``add_special_tokens: false`` (:118-124); logprobs of the raw distribution (config/model.py:291-299);
  a disconnect aborts (serve/utils/api_utils.py:68-103).
- **SGLang /v1** (``"sglang"``): copies one ``sampling_seed`` to all n choices
  (managers/tokenizer_manager.py:2163-2181), so one request per sample; takes ids
  (entrypoints/openai/serving_completions.py:97-103), ``return_token_ids`` (:622-628),
  ``matched_stop`` (:609-620); neutral defaults (entrypoints/openai/protocol.py:375-408); cached tokens
  only with ``--enable-cache-report``; logprobs of the tempered distribution (layers/sampler.py:275-321);
  text gets BOS with no switch (tokenizer_manager.py:1020-1071).
- **openai**: any other server, taken at the OpenAI schema's word: text prompts, ``n`` sent (and
  one request per sample if fewer choices come back), no field beyond the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

NMode = Literal["auto", "request", "split"]
N_MODES: tuple[str, ...] = ("auto", "request", "split")
"""``--server-n``: auto (the server's kind decides; an unknown server is sent n and, if it answers
fewer choices, one request per sample from then on), request (always n in one request), split
(always one request per sample, each with its own seed)."""

# Penalties every kind accepts under these names (OpenAI's own fields), sent so none applies.
_OPENAI_NEUTRAL = {"presence_penalty": 0.0, "frequency_penalty": 0.0}


@dataclass(frozen=True)
class ServerKind:
    """How one server implements /v1/completions (see the module doc for the sources)."""

    name: str
    owned_by: str | None
    takes_token_ids: bool  # prompt: list[int] accepted, and the generated ids can be asked for
    honours_n: bool  # n > 1 in one request gives n choices with their own draws and counts
    neutral: Mapping[str, Any] = field(default_factory=dict)  # sent so no server default applies
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields that make the answer say more
    logprob_extra: Mapping[str, Any] = field(default_factory=dict)  # ... when log-probs are asked for
    counts_eos: bool | None = None  # usage.completion_tokens includes the end-of-sequence token
    cancels_on_disconnect: bool | None = None  # a request whose client hung up stops running
    text_adds_bos: bool = False  # a text prompt gets the tokenizer's BOS in front
    text_switch: Mapping[str, Any] = field(default_factory=dict)  # what turns that off, where it exists
    tempered_logprobs: bool | None = None  # log-probs of logits / T (else of the raw logits)
    min_top_logprobs: int = 0  # the server returns none below this many alternatives
    one_slot: bool = False  # generates one request at a time: keep one in flight
    seeded: bool | None = True  # a request's seed decides its draw


LLAMA_CPP_PYTHON = ServerKind(
    "llama-cpp-python", "me", takes_token_ids=False, honours_n=False,
    neutral={**_OPENAI_NEUTRAL, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "mirostat_mode": 0},
    counts_eos=False, cancels_on_disconnect=False, text_adds_bos=True, tempered_logprobs=False, one_slot=True,
)
LLAMA_CPP = ServerKind(
    "llama.cpp", "llamacpp", takes_token_ids=True, honours_n=False,
    neutral={**_OPENAI_NEUTRAL, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "typical_p": 1.0,
             "xtc_probability": 0.0, "dry_multiplier": 0.0, "mirostat": 0},
    extra={"verbose": True, "return_tokens": True}, counts_eos=True, cancels_on_disconnect=True,
    text_adds_bos=True, tempered_logprobs=False, min_top_logprobs=1,
)
VLLM = ServerKind(
    "vllm", "vllm", takes_token_ids=True, honours_n=True,
    neutral={**_OPENAI_NEUTRAL, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0},
    extra={"return_token_ids": True}, logprob_extra={"return_tokens_as_token_ids": True},
    counts_eos=True, cancels_on_disconnect=True, text_adds_bos=True,
    text_switch={"add_special_tokens": False}, tempered_logprobs=False,
)
SGLANG = ServerKind(
    "sglang", "sglang", takes_token_ids=True, honours_n=False,
    neutral={**_OPENAI_NEUTRAL, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0},
    extra={"return_token_ids": True}, counts_eos=True, cancels_on_disconnect=True, text_adds_bos=True,
    tempered_logprobs=True, seeded=None,  # only with --enable-deterministic-inference (read from /server_info)
)
OPENAI = ServerKind("openai", None, takes_token_ids=False, honours_n=True, neutral=_OPENAI_NEUTRAL, seeded=None)

KINDS = (LLAMA_CPP_PYTHON, LLAMA_CPP, VLLM, SGLANG)


def identify(listing: Any) -> ServerKind:
    """The kind of server that answered ``GET /v1/models`` with ``listing`` (OPENAI when its
    ``owned_by`` names none of the known servers)."""
    models = listing.get("data") if isinstance(listing, dict) else None
    owners = {str(m.get("owned_by")) for m in models or [] if isinstance(m, dict)}
    return next((kind for kind in KINDS if kind.owned_by in owners), OPENAI)


def sends_n(kind: ServerKind, mode: str) -> bool:
    """Whether a request for n samples goes as one request with ``n`` (else one per sample)."""
    if mode not in N_MODES:
        raise ValueError(f"--server-n must be one of {', '.join(N_MODES)} (got {mode!r})")
    return mode == "request" or (mode == "auto" and kind.honours_n)
