"""Real loopback HTTP servers for the server backends' tests, with fault injection.

``InferenceServer(model_dir, mode=...)`` is a stdlib ThreadingHTTPServer on 127.0.0.1 that
generates with a tiny, randomly initialised real Llama (tests/tiny_models.py ``build_step_llama``,
fixture ``step_llama_dir``) through pumsearch's transformers backend, and answers the way one real
server does. Each mode is written from that server's source, cited as file:line at the versions
docs/backends.md names (llama-cpp-python 0.3.36 ``llama_cpp/``, llama.cpp as vendored in it
``tools/server/``, vLLM 0.33.0 ``vllm/``, SGLang 0.5.23 ``sglang/srt/``):

- ``sglang`` (the default): native ``POST /generate`` (sampling_params checked against the keys
  sglang/api/v1/api_types.py:180-207 accepts; ``return_logprob`` with ``top_logprobs_num`` gives
  ``[logprob, id, None]`` triples, tokenizer_manager.py:2840-2973, 3098-3108), ``POST /classify``
  (``text`` or ``input_ids``, one item or a batch, managers/io_struct.py:1316-1336), ``/health``,
  ``/model_info``, ``/server_info`` (``enable_deterministic_inference``), and its ``/v1/completions``
  (``matched_stop`` a str or the EOS id, entrypoints/openai/serving_completions.py:609-628;
  ``token_ids`` with ``return_token_ids``; ``prompt_tokens_details`` only with ``cache_report``,
  entrypoints/openai/usage_processor.py:38-44; legacy log-probs with text_offset -1,
  entrypoints/openai/utils.py:144-151). Seeds count only with ``deterministic`` (a missing one is
  42), and then all n choices of one request share it (sampling/sampling_batch_info.py:157-171,
  managers/tokenizer_manager.py:2163-2181). Log-probabilities are of logits / T
  (layers/sampler.py:275-321). Text gets the tokenizer's BOS (tokenizer_manager.py:1020-1071).
- ``vllm``: ``prompt`` text or ids, ``add_special_tokens`` (default true,
  entrypoints/openai/completion/protocol.py:53-59, 118-124); omitted sampling fields from a
  ``generation_config`` dict, then the OpenAI defaults (:313-321, 367-375); ``n`` honoured with child
  seeds seed+j (v1/engine/parallel_sampling.py:69-82); ``stop_reason`` None for EOS, the string for
  a stop string (:675-687); ``completion_tokens`` counts EOS and stop tokens
  (completion/serving.py:657-666); ``prompt_tokens_details`` only with ``cache_report``
  (:668-675); ``logprobs`` > 20 is a 400 (sampling_params.py:922-936), raw values, ``token_id:N``
  with ``return_tokens_as_token_ids``; a wrong ``model`` is a 404 (serve/engine/serving.py:74-91).
- ``llamacpp-python``: ``python -m llama_cpp.server``. ``n`` ignored, one choice (server/types.py:141-143,
  server/app.py:317-324); a list of ids is a 422 (types.py:111-113); omitted fields take
  temperature .8, top_p .95, min_p .05, top_k 40, repeat_penalty 1.1, max_tokens 16
  (types.py:15-69, 118-120); unknown fields ignored; no seed means the same derived seed every
  time (llama.py:1387-1390); ``finish_reason`` "stop" for EOS and stop string alike, no stop field,
  ``completion_tokens`` with the stop-string tokens and without the EOS (llama.py:1412-1439,
  1795-1813); no cached tokens; legacy log-probs over those tokens, raw (llama.py:1728-1793); one
  request at a time (app.py:64-89): one whose client left before its turn is a 400 and never runs
  (app.py:348-355), one that started runs to the end (app.py:357); no ``/health``.
- ``llamacpp``: ``llama-server``. ``prompt`` text (BOS added) or ids as they are
  (server-common.cpp:833-990); ``n`` up to ``slots`` else 400 (server-schema.cpp:62-65), child seeds
  seed+j, ``usage`` of the first choice only (server-context.cpp:4266-4273); omitted fields take
  temp .8, top_k 40, top_p .95, min_p .05, repeat_penalty 1.0 (common/common.h:229-241);
  ``verbose`` adds ``__verbose`` with ``stop_type``, ``stopping_word``, ``tokens_cached`` and, with
  ``return_tokens``, ``tokens`` (server-task.cpp:342-365, 405-407); ``logprobs`` is ``{"content":
  [...]}`` with ids, stop-word entries dropped and the EOS kept (server-task.cpp:284-306,
  server-context.cpp:2064-2078); ``cached_tokens`` always; ``/props`` ``total_slots``; ``/health``.
- ``openai``: the OpenAI schema and nothing more (the control): text prompts, ``n`` honoured, an
  unknown field is a 400, no stop field, no cached tokens, legacy log-probs.

Each exchange records the request, the response, the ids the model saw (``prompt_ids``) and the
sampling settings in effect after the server's defaults (``effective``). The generator applies
temperature, top_p, the token cap, stops and seeds; the other settings (top_k, min_p, penalties)
are recorded, not applied.

Concurrency and disconnects: ``faults.delay`` is time spent generating. Modes whose server stops
a request when its client hangs up (vllm, sglang, llamacpp) watch the connection during it and
drop the request (``state.cancelled``); ``llamacpp-python`` runs one request at a time and
finishes what it started (``state.finished_after_client_left``).

Faults: ``fail_next`` (answer 500 that many times), ``delay``, ``malformed`` (a 200 whose body is
not JSON), ``reject`` (answer 400 with this message), ``die_after`` (stop listening after that many
answered POSTs: later requests find the port closed). A stopped server's port refuses connections.
"""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("sglang", "vllm", "llamacpp-python", "llamacpp", "openai")
OWNERS = {"sglang": "sglang", "vllm": "vllm", "llamacpp-python": "me", "llamacpp": "llamacpp", "openai": "system"}
CANCELS_ON_DISCONNECT = {"sglang", "vllm", "llamacpp"}


@dataclass
class Faults:
    fail_next: int = 0
    delay: float = 0.0
    malformed: bool = False
    reject: str | None = None
    die_after: int | None = None


@dataclass
class Exchange:
    path: str
    request: dict[str, Any]
    response: Any
    prompt_ids: list[list[int]] = field(default_factory=list)  # what the model saw, per prompt
    effective: dict[str, Any] = field(default_factory=dict)  # sampling after the server's defaults
    samples: list[Any] = field(default_factory=list)  # what the model generated, per choice (never sent)

    @property
    def finishes(self) -> list[str]:
        """How each choice really ended: step, eos or length."""
        return [c.finish_reason for c in self.samples]


class _QuietHTTPServer(ThreadingHTTPServer):
    """Client disconnects (the fault tests cause them on purpose) are not printed: a traceback on
    stderr from this server thread would land in whatever CLI output a later test captures."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class ServerState:
    log: list[Exchange] = field(default_factory=list)
    seen: list[list[int]] = field(default_factory=list)  # prompt + output ids, for cached_tokens
    answered: int = 0
    posts: int = 0  # every POST received, answered or not
    in_flight: int = 0
    peak_in_flight: int = 0
    cancelled: int = 0  # stopped because the client hung up (servers that abort on disconnect)
    finished_after_client_left: int = 0  # ran to the end for a client that had gone
    refused_client_gone: int = 0  # never started: the client left while it waited (llama-cpp-python)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.log.clear()
        self.posts = self.peak_in_flight = self.cancelled = 0
        self.finished_after_client_left = self.refused_client_gone = 0


class InferenceServer:
    """``mode``: which server to behave like (module doc). ``owned_by`` overrides what /v1/models
    says (a proxy that hides the server). ``slots``: requests generated at once (llamacpp; 1 for
    llamacpp-python). ``deterministic``: SGLang's --enable-deterministic-inference.
    ``cache_report``: SGLang's --enable-cache-report / vLLM's --enable-prompt-tokens-details.
    ``generation_config``: vLLM's defaults from the model (--generation-config auto)."""

    def __init__(self, model_dir: Path, *, served_name: str | None = None, reward: bool = False,
                 mode: str = "sglang", owned_by: str | None = None, slots: int = 4, deterministic: bool = True,
                 cache_report: bool = False, generation_config: dict[str, Any] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.model_dir = model_dir
        self.served_name = served_name or str(model_dir)
        self.reward = reward
        self.mode = mode
        self.owned_by = owned_by or OWNERS[mode]
        self.slots = 1 if mode == "llamacpp-python" else slots
        self.deterministic = deterministic
        self.cache_report = cache_report
        self.generation_config = dict(generation_config or {})
        self.server_seed = 0xFFFFFFFF  # llama-cpp-python's --seed default (settings.py:66-68)
        self.faults = Faults()
        self.state = ServerState()
        self._slot_gate = threading.Semaphore(self.slots)
        self._generator: Any = None
        self._reward_model: Any = None
        self._tokenizer: Any = None
        self._httpd: ThreadingHTTPServer | None = None
        self.dying = threading.Event()  # die_after reached: no further request is answered
        self.closed = threading.Event()  # the port is closed
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, port: int = 0) -> InferenceServer:
        self.dying.clear()
        self.closed.clear()
        if self.reward:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self._reward_model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
        elif self._generator is None:
            from pumsearch.backends.transformers_backend import TransformersGenerator

            self._generator = TransformersGenerator.load(str(self.model_dir))
            self._tokenizer = self._generator.tokenizer
        self._httpd = _QuietHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self.closed.set()

    def generate_log(self) -> list[Exchange]:
        return [e for e in self.state.log if e.path == "/generate"]

    def completions_log(self) -> list[Exchange]:
        return [e for e in self.state.log if e.path == "/v1/completions"]

    # -- what every mode shares -----------------------------------------------------------------
    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Text as the server tokenises it: with the tokenizer's special tokens (a BOS where its
        post-processor adds one, as SGLang, vLLM and a Llama-3 GGUF do), unless ``special`` is off."""
        return list(self._tokenizer(text, add_special_tokens=special)["input_ids"])

    def token_text(self, token: int) -> str:
        return self._tokenizer.decode([token], skip_special_tokens=False)

    def sample(self, ids: list[int], *, temperature: float, top_p: float, max_tokens: int, stop: Any,
               seed: int | None, top_logprobs: int | None = None) -> Any:
        """One continuation of ``ids`` (a pumsearch Completion: ``token_ids`` hold the stop tokens
        and the EOS, ``text`` neither)."""
        from pumsearch.search.protocols import GenerationRequest, SamplingParams

        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stops,
                                want_logprobs=top_logprobs is not None, top_logprobs=top_logprobs or 0)
        request = GenerationRequest(prompt_text="", prompt_ids=tuple(ids), n=1, params=params, seed=seed)
        (out,) = self._generator.generate_sync([request])
        return out.completions[0]

    def is_eos(self, token: int) -> bool:
        return token in self._generator.eos_ids

    def cached_prefix(self, prompt: list[int], output: list[int]) -> int:
        """The longest prefix ``prompt`` shares with an earlier prompt + output (at most all but
        its last token), as a prefix cache reuses."""
        with self.state.lock:
            best = 0
            for seq in self.state.seen:
                n = 0
                for a, b in zip(seq, prompt, strict=False):
                    if a != b:
                        break
                    n += 1
                best = max(best, n)
            self.state.seen.append(prompt + output)
        return min(best, len(prompt) - 1)

    def tempered_logprobs(self, prompt: list[int], output: list[int], temperature: float,
                          k: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
        """log_softmax(logits / T) at each generated token and its k most likely tokens, as SGLang's
        sampler returns them (layers/sampler.py:275-321)."""
        import torch

        model = self._generator.model
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + output])).logits[0]
        start = len(prompt) - 1
        logp = torch.log_softmax(logits[start : start + len(output)].float() / max(temperature, 1e-6), dim=-1)
        values = [float(logp[i, t]) for i, t in enumerate(output)]
        tops = []
        for i in range(len(output)):
            if k:
                best = torch.topk(logp[i], k)
                tops.append([(int(t), float(v)) for v, t in zip(best.values, best.indices, strict=True)])
            else:
                tops.append([])
        return values, tops

    def model_card(self) -> dict[str, Any]:
        """One ``data`` entry of GET /v1/models as this mode's server writes it."""
        now = int(time.time())
        if self.mode == "llamacpp-python":  # llama_cpp/server/app.py:529-549
            return {"id": self.served_name, "object": "model", "owned_by": self.owned_by, "permissions": []}
        if self.mode == "llamacpp":  # tools/server/server-context.cpp:5121-5140
            return {"id": self.served_name, "aliases": [], "tags": [], "object": "model", "created": now,
                    "owned_by": self.owned_by, "meta": {"n_vocab": len(self._tokenizer), "n_ctx": 512}}
        card = {"id": self.served_name, "object": "model", "created": now, "owned_by": self.owned_by}
        if self.mode in ("vllm", "sglang"):  # vllm serve/engine/protocol.py:105-114; sglang protocol.py:87-97
            card.update(root=self.served_name, parent=None, max_model_len=512)
        if self.mode == "vllm":
            card["permission"] = []
        return card

    # -- the endpoints --------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body or None for an empty 200) of a GET."""
        mode = self.mode
        if path == "/v1/models":
            return 200, {"object": "list", "data": [self.model_card()]}
        if path == "/health" and mode in ("sglang", "vllm"):
            return 200, None
        if path == "/health" and mode == "llamacpp":
            return 200, {"status": "ok"}
        if path in ("/model_info", "/get_model_info") and mode == "sglang":
            return 200, {"model_path": self.served_name, "tokenizer_path": self.served_name,
                         "is_generation": not self.reward, "preferred_sampling_params": None}
        if path in ("/server_info", "/get_server_info") and mode == "sglang":
            return 200, {"model_path": self.served_name, "enable_deterministic_inference": self.deterministic,
                         "enable_cache_report": self.cache_report, "version": "0.5.23"}
        if path == "/props" and mode == "llamacpp":
            return 200, {"total_slots": self.slots, "model_path": self.served_name,
                         "default_generation_settings": {"params": dict(LLAMACPP_DEFAULTS), "n_ctx": 512},
                         "bos_token": self._tokenizer.bos_token or "", "eos_token": self._tokenizer.eos_token}
        return 404, {"detail": "Not Found"}

    def post(self, path: str, body: dict[str, Any]) -> Exchange:
        routes: dict[str, dict[str, Any]] = {
            "sglang": {"/generate": self.native_generate, "/classify": self.classify,
                       "/v1/completions": self.sglang_completions},
            "vllm": {"/v1/completions": self.vllm_completions},
            "llamacpp-python": {"/v1/completions": self.llamacpp_python_completions},
            "llamacpp": {"/v1/completions": self.llamacpp_completions},
            "openai": {"/v1/completions": self.openai_completions},
        }
        handler = routes[self.mode].get(path)
        if handler is None:
            raise _Reject("Not Found", status=404)
        exchange = Exchange(path, body, None)
        exchange.response = handler(body, exchange)
        return exchange

    # -- SGLang ---------------------------------------------------------------------------------
    def sglang_seed(self, seed: int | None) -> int | None:
        """The seed SGLang's sampler uses: the request's (42 if none) under deterministic
        inference, else none at all (a random draw)."""
        if self.deterministic:
            return 42 if seed is None else int(seed)
        return random.getrandbits(31)

    def native_generate(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        sp = body.get("sampling_params") or {}
        unknown = set(sp) - SGLANG_SAMPLING_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise _Reject(f"unknown field `{key}`, expected one of {', '.join(sorted(SGLANG_SAMPLING_KEYS))}")
        ids = body.get("input_ids")
        text = body.get("text")
        if ids is None and text is None:
            raise _Reject("either text or input_ids should be provided")
        ids = list(ids) if ids is not None else self.encode(text)
        effective = {**SGLANG_DEFAULTS, "max_new_tokens": 128, **{k: v for k, v in sp.items() if v is not None}}
        exchange.prompt_ids, exchange.effective = [ids], effective
        started = time.perf_counter()
        top_k = int(body.get("top_logprobs_num") or 0)
        comp = self.sample(ids, temperature=effective["temperature"], top_p=effective["top_p"],
                           max_tokens=effective["max_new_tokens"], stop=effective.get("stop"),
                           seed=self.sglang_seed(sp.get("sampling_seed")))
        exchange.samples.append(comp)
        meta: dict[str, Any] = {
            "id": body.get("rid") or uuid.uuid4().hex,
            "finish_reason": self._sglang_finish(comp, effective["max_new_tokens"]),
            "prompt_tokens": len(ids),
            "completion_tokens": comp.num_tokens,
            "cached_tokens": self.cached_prefix(ids, comp.token_ids or []),
            "e2e_latency": time.perf_counter() - started,
        }
        if body.get("return_logprob"):
            values, tops = self.tempered_logprobs(ids, comp.token_ids, effective["temperature"], top_k)
            meta["output_token_logprobs"] = [[v, t, None] for v, t in zip(values, comp.token_ids, strict=True)]
            meta["output_token_logprobs_length"] = len(values)
            if top_k:
                meta["output_top_logprobs"] = [[[v, t, None] for t, v in top] for top in tops]
        return {"text": comp.text, "output_ids": comp.token_ids, "meta_info": meta}

    @staticmethod
    def _sglang_finish(comp: Any, max_tokens: int) -> dict[str, Any]:
        """managers/schedule_batch.py:284-345: the stop string, or the EOS id, as ``matched``."""
        if comp.finish_reason == "step":
            return {"type": "stop", "matched": comp.matched_stop}
        if comp.finish_reason == "eos":
            return {"type": "stop", "matched": comp.token_ids[-1]}
        return {"type": "length", "length": max_tokens}

    def sglang_completions(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        prompt = body.get("prompt")
        ids = list(prompt) if _is_ids(prompt) else self.encode(_one_text(prompt))
        effective = {**SGLANG_DEFAULTS, "max_tokens": 16,
                     **{k: body[k] for k in SGLANG_V1_FIELDS if body.get(k) is not None}}
        exchange.prompt_ids, exchange.effective = [ids], effective
        n = int(body.get("n") or 1)
        seed = self.sglang_seed(body.get("seed"))  # one sampling_seed copied to every choice
        k = body.get("logprobs")
        choices, generated = [], 0
        for index in range(n):
            comp = self.sample(ids, temperature=effective["temperature"], top_p=effective["top_p"],
                               max_tokens=effective["max_tokens"], stop=effective.get("stop"), seed=seed)
            exchange.samples.append(comp)
            generated += comp.num_tokens
            finish = self._sglang_finish(comp, effective["max_tokens"])
            choice: dict[str, Any] = {"index": index, "text": comp.text, "logprobs": None,
                                      "finish_reason": finish["type"], "matched_stop": finish.get("matched")}
            if k is not None:
                values, tops = self.tempered_logprobs(ids, comp.token_ids, effective["temperature"], int(k))
                choice["logprobs"] = {
                    "text_offset": [-1] * len(values), "token_logprobs": values,
                    "tokens": [self.token_text(t) for t in comp.token_ids],
                    "top_logprobs": [{self.token_text(t): v for t, v in top} for top in tops],
                }
            if body.get("return_token_ids"):
                choice["token_ids"] = comp.token_ids
                choice["prompt_token_ids"] = ids
            choices.append(choice)
        cached = self.cached_prefix(ids, [])
        usage: dict[str, Any] = {"prompt_tokens": len(ids), "completion_tokens": generated,
                                 "total_tokens": len(ids) + generated, "prompt_tokens_details": None}
        if self.cache_report:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return {"id": uuid.uuid4().hex, "object": "text_completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices, "usage": usage}

    def classify(self, body: dict[str, Any], exchange: Exchange) -> Any:
        import torch

        if body.get("text") is not None and body.get("input_ids") is not None:
            raise _Reject("text and input_ids cannot be provided at the same time")
        if body.get("input_ids") is not None:
            single = _is_ids(body["input_ids"])
            batch = [body["input_ids"]] if single else body["input_ids"]
        else:
            single = isinstance(body.get("text"), str)
            batch = [self.encode(t) for t in ([body["text"]] if single else body["text"])]
        exchange.prompt_ids = [list(ids) for ids in batch]
        results = []
        for ids in batch:
            with torch.inference_mode():
                reward = float(self._reward_model(input_ids=torch.tensor([list(ids)])).logits[0, 0])
            results.append({"embedding": [reward], "meta_info": {"id": uuid.uuid4().hex, "prompt_tokens": len(ids)}})
        return results[0] if single else results

    # -- vLLM -----------------------------------------------------------------------------------
    def vllm_completions(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        model = body.get("model")
        if model and model != self.served_name:
            raise _Reject(f"The model `{model}` does not exist. Valid aliases: {self.served_name}.", status=404,
                          kind="NotFoundError")
        k = body.get("logprobs")
        if k is not None and int(k) > 20:
            raise _Reject(f"Requested sample logprobs of {k}, which is greater than max allowed: 20")
        prompt = body.get("prompt")
        add_special = body.get("add_special_tokens", True)
        ids = list(prompt) if _is_ids(prompt) else self.encode(_one_text(prompt), special=add_special)
        sent = {key: body[key] for key in VLLM_DEFAULTS if body.get(key) is not None}
        effective = {**VLLM_DEFAULTS, **self.generation_config, "max_tokens": 16, **sent}
        if body.get("max_tokens") is not None:
            effective["max_tokens"] = body["max_tokens"]
        exchange.prompt_ids, exchange.effective = [ids], effective
        seed = body.get("seed")
        choices, generated = [], 0
        for index in range(int(body.get("n") or 1)):
            child_seed = None if seed is None else int(seed) + index
            comp = self.sample(ids, temperature=effective["temperature"], top_p=effective["top_p"],
                               max_tokens=effective["max_tokens"], stop=body.get("stop"), seed=child_seed,
                               top_logprobs=None if k is None else int(k))
            exchange.samples.append(comp)
            generated += len(comp.token_ids)
            choice: dict[str, Any] = {
                "index": index, "text": comp.text,
                "logprobs": None if k is None else self._legacy_logprobs(
                    comp.token_ids, comp, int(k), as_ids=bool(body.get("return_tokens_as_token_ids"))),
                "finish_reason": "length" if comp.finish_reason == "length" else "stop",
                "stop_reason": comp.matched_stop if comp.finish_reason == "step" else None,
                "token_ids": comp.token_ids if body.get("return_token_ids") else None,
                "prompt_logprobs": None,
                "prompt_token_ids": ids if body.get("return_token_ids") else None,
            }
            choices.append(choice)
        cached = self.cached_prefix(ids, [])
        usage = {"prompt_tokens": len(ids), "total_tokens": len(ids) + generated, "completion_tokens": generated,
                 "prompt_tokens_details": {"cached_tokens": cached} if self.cache_report else None}
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.served_name, "choices": choices, "usage": usage}

    def _legacy_logprobs(self, tokens: list[int], comp: Any, k: int, *, as_ids: bool = False) -> dict[str, Any]:
        """``{tokens, text_offset, token_logprobs, top_logprobs}`` over ``tokens`` (the first
        len(tokens) generated ones); each top dict holds the k most likely and the sampled token."""
        def name(t: int) -> str:
            return f"token_id:{t}" if as_ids else self.token_text(t)

        tops = []
        for i, token in enumerate(tokens):
            top = {name(t): v for t, v in (comp.top_logprobs[i] if comp.top_logprobs else [])[:k]}
            top[name(token)] = comp.token_logprobs[i]
            tops.append(top)
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(self.token_text(token))
        return {"tokens": [name(t) for t in tokens], "text_offset": offsets,
                "token_logprobs": comp.token_logprobs[: len(tokens)], "top_logprobs": tops}

    # -- llama-cpp-python -----------------------------------------------------------------------
    def llamacpp_python_completions(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        prompt = body.get("prompt", "")
        if _is_ids(prompt):
            raise _Reject("Input should be a valid string", status=422)
        if isinstance(prompt, list):
            if len(prompt) > 1:
                raise _Reject("Internal Server Error", status=500)  # app.py:307-309: an assert
            prompt = prompt[0] if prompt else ""
        effective = {**LLAMACPP_PYTHON_DEFAULTS, **{k: body[k] for k in LLAMACPP_PYTHON_DEFAULTS if k in body}}
        seed = body.get("seed")
        if seed is None:  # a fresh Random(--seed) each time: the same seed for every request
            seed = random.Random(self.server_seed).randint(0, 2**32)
        ids = self.encode(prompt)  # [BOS] + tokens when the GGUF says add_bos_token (llama.py:1243-1279)
        max_tokens = effective["max_tokens"] or 512 - len(ids)
        exchange.prompt_ids, exchange.effective = [ids], effective
        k = body.get("logprobs")
        comp = self.sample(ids, temperature=effective["temperature"], top_p=effective["top_p"], max_tokens=max_tokens,
                           stop=body.get("stop"), seed=int(seed), top_logprobs=None if k is None else int(k))
        exchange.samples.append(comp)
        generated = comp.token_ids[:-1] if comp.finish_reason == "eos" else comp.token_ids  # EOS: not appended
        choice = {"text": comp.text, "index": 0,
                  "logprobs": None if k is None else self._legacy_logprobs(generated, comp, int(k)),
                  "finish_reason": "length" if comp.finish_reason == "length" else "stop"}
        return {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model") or self.served_name, "choices": [choice],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(generated),
                          "total_tokens": len(ids) + len(generated)}}

    # -- llama.cpp ------------------------------------------------------------------------------
    def llamacpp_completions(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        n = int(body.get("n_cmpl", body.get("n")) or 1)
        if not 1 <= n <= self.slots:
            raise _Reject(f"n_cmpl: Value must be between 1 <= value <= {self.slots}")
        prompt = body.get("prompt")
        ids = list(prompt) if _is_ids(prompt) else self.encode(_one_text(prompt))
        effective = {**LLAMACPP_DEFAULTS, **{k: body[k] for k in LLAMACPP_DEFAULTS if body.get(k) is not None}}
        max_tokens = body.get("max_tokens", body.get("n_predict", -1))
        max_tokens = 512 - len(ids) if max_tokens in (None, -1) else int(max_tokens)
        exchange.prompt_ids, exchange.effective = [ids], effective
        seed = body.get("seed")
        seed = random.getrandbits(31) if seed in (None, -1) else int(seed)
        k = int(body.get("n_probs", body.get("logprobs")) or 0)
        results = []
        for index in range(n):  # the children: seed + index (server-task.h:238-241)
            comp = self.sample(ids, temperature=effective["temperature"], top_p=effective["top_p"],
                               max_tokens=max_tokens, stop=body.get("stop"), seed=seed + index,
                               top_logprobs=k if k > 0 else None)
            exchange.samples.append(comp)
            results.append((index, comp, self.cached_prefix(ids, [])))
        first_index, first, cached = results[0]
        response: dict[str, Any] = {
            "choices": [self._llamacpp_choice(i, comp, k) for i, comp, _ in results],
            "created": int(time.time()), "model": self.served_name, "system_fingerprint": "b0-loopback",
            "object": "text_completion", "id": f"chatcmpl-{uuid.uuid4().hex}",
            "usage": {"completion_tokens": len(first.token_ids), "prompt_tokens": len(ids),
                      "total_tokens": len(first.token_ids) + len(ids),
                      "prompt_tokens_details": {"cached_tokens": cached}},
            "timings": {"cache_n": cached, "prompt_n": len(ids) - cached, "predicted_n": len(first.token_ids)},
        }
        if body.get("verbose"):
            stop_type = {"eos": "eos", "step": "word", "length": "limit"}[first.finish_reason]
            response["__verbose"] = {
                "index": first_index, "content": first.text,
                "tokens": first.token_ids if body.get("return_tokens") else [],
                "stop": True, "stop_type": stop_type, "stopping_word": first.matched_stop or "",
                "tokens_cached": cached + len(first.token_ids), "tokens_predicted": len(first.token_ids),
                "tokens_evaluated": len(ids),
            }
        return response

    def _llamacpp_choice(self, index: int, comp: Any, k: int) -> dict[str, Any]:
        logprobs = None
        if k > 0:
            kept = list(comp.token_ids)
            if comp.finish_reason == "step":  # the stop word's tokens are cut (server-context.cpp:2064-2078)
                kept = kept[: max(len(kept) - len(self.encode(comp.matched_stop, special=False)), 0)]
            logprobs = {"content": [
                {"id": t, "token": self.token_text(t), "bytes": list(self.token_text(t).encode()),
                 "logprob": comp.token_logprobs[i],
                 "top_logprobs": [{"id": a, "token": self.token_text(a), "bytes": list(self.token_text(a).encode()),
                                   "logprob": v} for a, v in comp.top_logprobs[i][:k]]}
                for i, t in enumerate(kept)
            ]}
        return {"text": comp.text, "index": index, "logprobs": logprobs,
                "finish_reason": "length" if comp.finish_reason == "length" else "stop"}

    # -- the OpenAI schema alone ----------------------------------------------------------------
    def openai_completions(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        unknown = set(body) - OPENAI_FIELDS
        if unknown:
            raise _Reject(f"Unrecognized request argument supplied: {sorted(unknown)[0]}")
        if body.get("model") != self.served_name:
            raise _Reject(f"The model `{body.get('model')}` does not exist.", status=404)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise _Reject("prompt must be a string")
        ids = self.encode(prompt)
        temperature, top_p = body.get("temperature", 1.0), body.get("top_p", 1.0)
        exchange.prompt_ids = [ids]
        exchange.effective = {"temperature": temperature, "top_p": top_p, "max_tokens": body.get("max_tokens", 16)}
        k = body.get("logprobs")
        seed = body.get("seed")
        choices, generated = [], 0
        for index in range(int(body.get("n") or 1)):
            comp = self.sample(ids, temperature=temperature, top_p=top_p, max_tokens=body.get("max_tokens", 16),
                               stop=body.get("stop"), seed=None if seed is None else int(seed) + index,
                               top_logprobs=None if k is None else int(k))
            exchange.samples.append(comp)
            generated += len(comp.token_ids)
            choices.append({"text": comp.text, "index": index,
                            "logprobs": None if k is None else self._legacy_logprobs(comp.token_ids, comp, int(k)),
                            "finish_reason": "length" if comp.finish_reason == "length" else "stop"})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.served_name, "choices": choices,
                "usage": {"prompt_tokens": len(ids), "completion_tokens": generated,
                          "total_tokens": len(ids) + generated}}


# Defaults and field names, each from the server's source.
SGLANG_SAMPLING_KEYS = {  # sglang/api/v1/api_types.py:180-207
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema", "regex",
    "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
    "stream_interval", "logit_bias", "sampling_seed", "custom_params", "beam_width", "watermark", "choice",
}
SGLANG_DEFAULTS = {  # sampling/sampling_params.py:149-181; entrypoints/openai/protocol.py:375-408
    "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0,
}
SGLANG_V1_FIELDS = (*SGLANG_DEFAULTS, "max_tokens", "stop")
VLLM_DEFAULTS = {  # entrypoints/openai/completion/protocol.py:313-321
    "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "temperature": 1.0,
    "top_p": 1.0, "top_k": 0, "min_p": 0.0,
}
LLAMACPP_PYTHON_DEFAULTS = {  # llama_cpp/server/types.py:15-90, 118-120
    "temperature": 0.8, "top_p": 0.95, "min_p": 0.05, "top_k": 40, "repeat_penalty": 1.1,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "mirostat_mode": 0, "max_tokens": 16,
}
LLAMACPP_DEFAULTS = {  # common/common.h:223-251
    "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0, "repeat_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "xtc_probability": 0.0, "dry_multiplier": 0.0, "mirostat": 0,
}
OPENAI_FIELDS = {  # the OpenAI completion fields (the list vLLM keeps, completion/protocol.py:50-74)
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
}


def _is_ids(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(t, int) for t in prompt)


def _one_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _Reject("this double serves one prompt per request")
        return prompt[0]
    if not isinstance(prompt, str):
        raise _Reject("prompt must be a string or a list of token ids")
    return prompt


class _Reject(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _client_gone(connection: socket.socket) -> bool:
    """Whether the client closed its end (readable with nothing to read: it sent its whole request
    and waits for the answer, so readable means hung up)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _handler_for(server: InferenceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
            self._answered()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            status, payload = server.get(self.path)
            self._send(status, payload)

        def do_POST(self) -> None:
            state, faults = server.state, server.faults
            if server.dying.is_set():  # dead already: hang up once the port is closed, never answer
                server.closed.wait(10)
                self.close_connection = True
                return
            with state.lock:
                state.posts += 1
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
            self.in_flight = True
            try:
                self._post(state, faults)
            finally:
                self._answered()

        def _answered(self) -> None:
            """A POST stops counting as in flight before its answer goes out: the client may send
            its next request as soon as it reads the answer, before this thread runs on."""
            if getattr(self, "in_flight", False):
                self.in_flight = False
                with server.state.lock:
                    server.state.in_flight -= 1

        def _post(self, state: ServerState, faults: Faults) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with state.lock:
                fail = faults.fail_next > 0
                faults.fail_next -= int(fail)
            if fail:
                self._send(500, {"error": {"message": "injected failure", "code": 500}})
                return
            if faults.reject is not None:
                self._send(400, {"error": {"message": faults.reject, "code": 400}})
                return
            with server._slot_gate:  # generation slots; the rest wait their turn
                if not self._generate_time(state, faults):
                    return
                self._answer(state, faults, body)

        def _generate_time(self, state: ServerState, faults: Faults) -> bool:
            """Spend ``faults.delay`` generating. False when the request is dropped: a server that
            aborts on disconnect stops it, and llama-cpp-python refuses one whose client left
            before its turn (and otherwise runs it to the end)."""
            if server.mode not in CANCELS_ON_DISCONNECT:
                if _client_gone(self.connection):
                    with state.lock:
                        state.refused_client_gone += 1
                    self._send(400, {"detail": "Client closed request"})
                    return False
                time.sleep(faults.delay)
                if _client_gone(self.connection):
                    with state.lock:
                        state.finished_after_client_left += 1
                return True
            deadline = time.monotonic() + faults.delay
            while time.monotonic() < deadline:
                if _client_gone(self.connection):
                    with state.lock:
                        state.cancelled += 1
                    self.close_connection = True
                    return False
                time.sleep(0.01)
            return True

        def _answer(self, state: ServerState, faults: Faults, body: dict[str, Any]) -> None:
            if faults.malformed:
                self._send(200, None, raw=b'{"text": "cut off')
                return
            try:
                exchange = server.post(self.path, body)
            except _Reject as err:
                self._send(err.status, {"error": {"message": str(err), "type": err.kind, "code": err.status}})
                return
            with state.lock:
                state.log.append(exchange)
                state.answered += 1
                dying = faults.die_after is not None and state.answered >= faults.die_after
            if dying:
                server.dying.set()  # before answering, so no later request is served
            self._send(200, exchange.response)
            if dying:
                threading.Thread(target=server.stop, daemon=True).start()

    return Handler


def closed_port_url() -> str:
    """The address of a port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- a Llama-3-style tokenizer: its post-processor puts BOS in front of every encoding ------------
BOS = "<|begin_of_text|>"


def bos_step_tokenizer() -> Any:
    """The step policy's words with a BOS that encoding adds (a TemplateProcessing post-processor,
    as Llama 3's tokenizer.json has) and a chat template that writes it too, so templated text
    encoded with the defaults starts with two."""
    from tokenizers import processors

    from tests.tiny_models import CHATML, STEP_CORPUS, STEP_SPLIT, word_tokenizer

    tokenizer = word_tokenizer(STEP_CORPUS, special=["<|im_start|>", "<|im_end|>"], bos=BOS, eos="<|im_end|>",
                               pad="<pad>", chat_template="{{ bos_token }}" + CHATML, split=STEP_SPLIT)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.convert_tokens_to_ids(BOS))]
    )
    return tokenizer


def build_bos_step_llama(directory: str | Path, *, seed: int = 0) -> Path:
    """The step policy with ``bos_step_tokenizer``."""
    return save_random_llama(bos_step_tokenizer(), directory, seed=seed)


def save_random_llama(tokenizer: Any, directory: str | Path, *, seed: int) -> Path:
    """A random LlamaForCausalLM over ``tokenizer``, saved with a generation_config.json."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tests.tiny_models import save_checkpoint, tiny_config

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(LlamaConfig, tokenizer)).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return save_checkpoint(model, tokenizer, Path(directory))


def build_bos_reward(directory: str | Path, *, seed: int = 1) -> Path:
    """A one-label LlamaForSequenceClassification with ``bos_step_tokenizer`` (a Llama-3-style ORM)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tests.tiny_models import save_checkpoint, tiny_config

    tokenizer = bos_step_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_config(LlamaConfig, tokenizer, num_labels=1))
    return save_checkpoint(model, tokenizer, Path(directory))


# -- a character-level tokenizer: every text tokenises one way, and "\n\n" is a token of its own -----
def char_tokenizer() -> Any:
    """One token per character of the step policy's words, and one for a blank line: what the
    model generates re-tokenises to as many tokens (as a byte-level BPE mostly does, unlike the
    step tokenizer's word pieces, which swallow neighbours such as ",\n\n")."""
    from tests.tiny_models import CHATML, STEP_CORPUS, word_tokenizer

    return word_tokenizer(STEP_CORPUS, special=["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>",
                          pad="<pad>", chat_template=CHATML, split=r"\n\n|[\s\S]")


def build_char_llama(directory: str | Path, *, seed: int = 0) -> Path:
    """A random LlamaForCausalLM over ``char_tokenizer``."""
    return save_random_llama(char_tokenizer(), directory, seed=seed)
