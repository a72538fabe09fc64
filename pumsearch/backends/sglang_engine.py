"""The in-process SGLang backend (``--backend sglang``): ``sglang.Engine`` driven with async_generate.

sglang is an optional extra, imported only when this backend is built (``import sglang`` pulls
torch, triton and CUDA kernels). Each backend call is one batched ``async_generate`` with one
entry per sample: token ids (so the radix cache reuses every shared prefix of the tree), one
sampling-params dict each with temperature and top_p set explicitly and a per-sample
``sampling_seed``. The call signatures follow SGLang 0.5.x's
python/sglang/srt/entrypoints/engine.py (``Engine(**server_args)``, ``async_generate(prompt=,
sampling_params=, input_ids=, return_logprob=, ...)``, ``get_all_child_pids``, ``shutdown``).

Seeds and log-probabilities: the Engine starts with ``enable_deterministic_inference=True``
(SGLang ignores ``sampling_seed`` without it, sglang/srt/sampling/sampling_batch_info.py:157-171;
pass ``enable_deterministic_inference=False`` to trade reproducibility for speed) and, unless this
process sets it, ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` in the environment its processes inherit, so
log-probabilities are of the raw distribution as on the other backends. Per sample it asks
``return_logprob`` and ``top_logprobs_num`` as that sample's request wants.

Shutdown: ``Engine.shutdown()`` kills every child process of the caller (it walks the process
tree of ``os.getpid()``), which would also kill pumsearch's grading workers or anything else the
caller started. So ``aclose`` calls it only when the engine's own processes are the caller's only
children; otherwise it stops just the engine's processes (by the pids the engine reports).
Either way the ``atexit`` hook the Engine registers is removed, so it cannot kill at exit.

The Engine path is exercised for real only on a GPU machine (benchmarks/gpu/bench_sglang.py);
tests here drive it through a recording stand-in of the sglang module.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from pumsearch.backends.errors import BackendError, require_sglang
from pumsearch.backends.remote import RAW_LOGPROBS_ENV, TokenizerPrompts, sample_seeds
from pumsearch.backends.sglang_common import (
    completion_from_sglang,
    logprob_fields,
    prompt_counts,
    sglang_sampling_params,
)
from pumsearch.models import load_tokenizer
from pumsearch.search.budget import add_known
from pumsearch.search.protocols import GenerationOutput, GenerationRequest

log = logging.getLogger(__name__)


class SGLangEngineGenerator(TokenizerPrompts):
    """``samples_reproducible``: whether the engine honours seeds (deterministic inference);
    ``logprobs_tempered``: whether its log-probabilities are of logits / T."""

    takes_token_ids = True

    def __init__(self, engine: Any, tokenizer: Any, *, name: str, samples_reproducible: bool | None = None,
                 logprobs_tempered: bool | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = name
        self.samples_reproducible = samples_reproducible
        self.logprobs_tempered = logprobs_tempered
        self._closed = False

    @classmethod
    def load(
        cls,
        model: str,
        *,
        tokenizer: str | None = None,
        mem_fraction_static: float | None = None,
        tp_size: int = 1,
        dp_size: int = 1,
        trust_remote_code: bool = False,
        **engine_args: Any,
    ) -> SGLangEngineGenerator:
        """Start an Engine for ``model``. Call this under ``if __name__ == "__main__":`` in scripts:
        Engine start-up uses the spawn start method, which re-imports the main module."""
        require_sglang()
        import sglang

        args: dict[str, Any] = {
            "model_path": model,
            "tp_size": tp_size,
            "dp_size": dp_size,
            "trust_remote_code": trust_remote_code,
            "enable_deterministic_inference": True,
            **engine_args,
        }
        if mem_fraction_static is not None:
            args["mem_fraction_static"] = mem_fraction_static
        tok = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code)
        os.environ.setdefault(RAW_LOGPROBS_ENV, "1")  # read by the scheduler processes the Engine starts
        try:
            engine = sglang.Engine(**args)
        except Exception as err:
            raise BackendError(f"sglang could not start an engine for {model!r}: {err}") from err
        return cls(engine, tok, name=model, samples_reproducible=bool(args["enable_deterministic_inference"]),
                   logprobs_tempered=os.environ[RAW_LOGPROBS_ENV] != "1")

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        rows = [(i, req, seed) for i, req in enumerate(requests) for seed in sample_seeds(req)]
        outputs = [GenerationOutput([]) for _ in requests]
        by_ids = [r for r in rows if r[1].prompt_ids is not None]
        by_text = [r for r in rows if r[1].prompt_ids is None]
        for group, key in ((by_ids, "input_ids"), (by_text, "prompt")):
            if group:
                await self._run(group, key, outputs)
        return outputs

    async def _run(
        self, rows: list[tuple[int, GenerationRequest, int]], key: str, outputs: list[GenerationOutput]
    ) -> None:
        prompts = [
            list(req.prompt_ids or ()) if key == "input_ids" else self.text_for_bos_adding_server(req.prompt_text)
            for _, req, _ in rows
        ]
        params = [sglang_sampling_params(req.params, seed) for _, req, seed in rows]
        asks = [logprob_fields(req) for _, req, _ in rows]
        try:
            results = await self.engine.async_generate(
                **{key: prompts}, sampling_params=params,
                return_logprob=[bool(a) for a in asks], top_logprobs_num=[a.get("top_logprobs_num", 0) for a in asks],
            )
        except Exception as err:
            raise BackendError(f"the sglang engine failed: {err}") from err
        if isinstance(results, dict):
            results = [results]
        if not isinstance(results, list) or len(results) != len(rows):
            raise BackendError(
                f"the sglang engine returned {len(results) if isinstance(results, list) else 'no'}"
                f" outputs for {len(rows)} samples"
            )
        for (index, req, _), result in zip(rows, results, strict=True):
            outputs[index].completions.append(
                completion_from_sglang(result, req.params.stop, "the sglang engine")
            )
            prompt, cached = prompt_counts(result)
            outputs[index].prompt_tokens += prompt
            outputs[index].cached_tokens = add_known(outputs[index].cached_tokens, cached)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        shutdown_engine(self.engine)


def shutdown_engine(engine: Any) -> None:
    """Stop the engine without killing processes that are not its own (see the module doc)."""
    with contextlib.suppress(ValueError):
        atexit.unregister(engine.shutdown)
    engine_pids = set(engine.get_all_child_pids())
    others = unrelated_children(engine_pids)
    if not others:
        engine.shutdown()
        return
    log.info(
        "stopping only the sglang engine's processes; %d other child processes are left alone", len(others)
    )
    watchdog = getattr(getattr(engine, "tokenizer_manager", None), "_subprocess_watchdog", None)
    if watchdog is not None:  # else it would treat the stopped schedulers as a crash
        watchdog.stop()
    for pid in engine_pids:
        stop_process_tree(pid)


def unrelated_children(engine_pids: set[int]) -> list[int]:
    """Child processes of this process that are neither the engine's nor below them."""
    import psutil

    me = psutil.Process()
    ours: set[int] = set()
    for pid in engine_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            ours.add(pid)
            ours.update(p.pid for p in psutil.Process(pid).children(recursive=True))
    return [p.pid for p in me.children(recursive=False) if p.pid not in ours]


def stop_process_tree(pid: int, timeout: float = 30.0) -> None:
    """Terminate ``pid`` and its descendants (then kill what is left after ``timeout``)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*root.children(recursive=True), root]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
