"""What the SGLang backends share: sampling parameters and the reading of SGLang's outputs.

SGLang's /generate and ``Engine.async_generate`` return, per request, ``text`` (stop string
trimmed), ``output_ids`` and ``meta_info`` with ``prompt_tokens``, ``completion_tokens``,
``cached_tokens`` and ``finish_reason``. ``finish_reason`` is the ``to_json()`` of SGLang's finish
classes (python/sglang/srt/managers/schedule_batch.py): ``{"type": "stop", "matched": <str>}`` for
a stop string, ``{"type": "stop", "matched": <int>}`` for a stop token (end of sequence),
``{"type": "length", "length": n}`` for the token cap, ``{"type": "abort", "message": ...}``.
"""

from __future__ import annotations

from typing import Any

from pumsearch.backends.errors import BackendError
from pumsearch.models import hash_seed
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


def sample_seeds(request: GenerationRequest) -> list[int]:
    """One seed per sample, the same ones the transformers backend derives."""
    return [hash_seed(request.seed, j) % (2**31) for j in range(request.n)]


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
        logprob=_sum_logprobs(meta.get("output_token_logprobs")),
    )


def prompt_counts(output: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) from an output's meta_info (0 where absent)."""
    meta = output["meta_info"]
    return int(meta.get("prompt_tokens") or 0), int(meta.get("cached_tokens") or 0)


def _sum_logprobs(entries: Any) -> float | None:
    """meta_info.output_token_logprobs is a list of (logprob, token_id, text-or-None)."""
    if not isinstance(entries, list) or not entries:
        return None
    return float(sum(e[0] for e in entries if e and e[0] is not None))


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
