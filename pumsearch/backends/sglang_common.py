"""What the SGLang backends share: sampling parameters and the reading of SGLang's outputs.

SGLang's /generate and ``Engine.async_generate`` return, per request, ``text`` (stop string
trimmed), ``output_ids`` and ``meta_info`` with ``prompt_tokens``, ``completion_tokens``,
``cached_tokens`` and ``finish_reason``. ``finish_reason`` is the ``to_json()`` of SGLang's finish
classes (python/sglang/srt/managers/schedule_batch.py): ``{"type": "stop", "matched": <str>}`` for
a stop string, ``{"type": "stop", "matched": <int>}`` for a stop token (end of sequence),
``{"type": "length", "length": n}`` for the token cap, ``{"type": "abort", "message": ...}``.

With ``return_logprob`` (and ``top_logprobs_num=k``) ``meta_info`` carries
``output_token_logprobs``, one ``[logprob, token_id, text-or-None]`` per generated token, and
``output_top_logprobs``, per token a list of k such triples
(sglang/srt/managers/tokenizer_manager.py:2840-2870, 2961-2973). They are of the tempered
distribution, log_softmax(logits / T), unless the server runs with
``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (sglang/srt/layers/sampler.py:275-322); ``--launch`` and the
in-process Engine set it, so their values are raw like the other backends'.
"""

from __future__ import annotations

from typing import Any

from pumsearch.backends.errors import BackendError
from pumsearch.http_common import get_json_sync
from pumsearch.search.protocols import Completion, GenerationRequest, SamplingParams


def sglang_sampling_params(params: SamplingParams, seed: int | None) -> dict[str, Any]:
    """SGLang sampling_params for one sample. Temperature and top_p are always set, since SGLang's
    defaults come from the model's generation_config; stop strings are trimmed from the text (the
    token ids keep them, so prefixes are extended by ids)."""
    out: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_tokens,
        "skip_special_tokens": True,
        "no_stop_trim": False,
    }
    if params.stop:
        out["stop"] = list(params.stop)
    if seed is not None:
        out["sampling_seed"] = seed
    return out


def logprob_fields(request: GenerationRequest) -> dict[str, Any]:
    """The request fields (of /generate, and keywords of Engine.async_generate) that ask for
    log-probabilities of the generated tokens and the top ``top_logprobs`` alternatives."""
    params = request.params
    if not (params.want_logprobs or params.top_logprobs):
        return {}
    return {"return_logprob": True, "top_logprobs_num": params.top_logprobs}


def completion_from_sglang(output: Any, stops: tuple[str, ...], source: str) -> Completion:
    """One SGLang output dict as a Completion (finish reasons mapped as described above)."""
    if not isinstance(output, dict) or not isinstance(output.get("meta_info"), dict) or "text" not in output:
        raise BackendError(
            f"malformed response from {source}: expected text and meta_info, got {_preview(output)}"
        )
    meta = output["meta_info"]
    finish = meta.get("finish_reason") or {}
    kind = finish.get("type") if isinstance(finish, dict) else finish
    if kind == "abort":
        raise BackendError(f"{source} aborted the request: {finish.get('message', 'no reason given')}")
    matched = finish.get("matched") if isinstance(finish, dict) else None
    if kind == "length":
        reason, matched_stop = "length", None
    elif kind == "stop" and isinstance(matched, str) and matched in stops:
        reason, matched_stop = "step", matched
    elif kind == "stop":  # a stop token (end of sequence) or a stop string of the model's own
        reason, matched_stop = "eos", None
    else:
        raise BackendError(f"malformed response from {source}: unknown finish_reason {_preview(finish)}")
    ids = output.get("output_ids")
    token_ids = [int(t) for t in ids] if isinstance(ids, list) else None
    try:
        num_tokens = int(meta["completion_tokens"])
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"malformed response from {source}: meta_info has no completion_tokens") from None
    return Completion(
        text=str(output["text"]),
        token_ids=token_ids,
        num_tokens=num_tokens,
        finish_reason=reason,
        matched_stop=matched_stop,  # type: ignore[arg-type]
        **_logprobs(meta),
    )


def prompt_counts(output: dict[str, Any]) -> tuple[int, int | None]:
    """(prompt tokens, cached prompt tokens) from an output's meta_info (0, and None, where absent)."""
    meta = output["meta_info"]
    cached = meta.get("cached_tokens")
    return int(meta.get("prompt_tokens") or 0), int(cached) if isinstance(cached, int) else None


def _logprobs(meta: dict[str, Any]) -> dict[str, Any]:
    """Completion's log-probability fields from meta_info's triples (see the module doc)."""
    entries = meta.get("output_token_logprobs")
    if not isinstance(entries, list) or not entries:
        return {}
    values = [float(e[0]) for e in entries if e and e[0] is not None]
    fields: dict[str, Any] = {"logprob": float(sum(values)), "token_logprobs": values}
    tops = meta.get("output_top_logprobs")
    if isinstance(tops, list) and any(tops):
        fields["top_logprobs"] = [
            sorted(((int(t[1]), float(t[0])) for t in top or [] if t and t[0] is not None),
                   key=lambda pair: pair[1], reverse=True)
            for top in tops
        ]
    return fields


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sglang_seeds_honoured(url: str, checks: dict[str, Any]) -> bool | None:
    """``enable_deterministic_inference`` from an SGLang server's /server_info (/get_server_info on
    older ones; sglang/srt/entrypoints/http_server.py:853-885); None where neither says."""
    for path in ("/server_info", "/get_server_info"):
        info = get_json_sync(f"{url}{path}", accept_404=True, **checks)
        if isinstance(info, dict) and isinstance(info.get("enable_deterministic_inference"), bool):
            return info["enable_deterministic_inference"]
    return None
