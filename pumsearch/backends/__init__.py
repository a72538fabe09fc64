"""Generation backends, registered by name in ``pumsearch.registry.BACKENDS``.

``load_generator(model, backend=NAME, ...)`` calls the registered loader; ``--backend`` lists and
checks the same names, and the flags a backend takes come from its entry. Heavy imports (torch,
transformers, sglang) happen inside the loaders. To add a backend, see docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from pumsearch.backends.errors import BackendError, BackendUnavailable
from pumsearch.models import is_alias, resolve_model_name
from pumsearch.registry import BACKENDS, BackendEntry, register_backend, top_logprob_backends
from pumsearch.search.protocols import Generator

# The backend flags of the command line a server backend takes (load_generator keywords).
SERVER_FLAGS = ("url", "launch", "tokenizer", "max_concurrency", "request_timeout", "retries", "extra_body")
OPENAI_FLAGS = (*SERVER_FLAGS, "server_n")
_SERVER_OPTIONS = ("tokenizer", "max_concurrency", "request_timeout", "retries", "backoff", "extra_body", "server_n")


def load_generator(
    model: str | None = None,
    *,
    backend: str = "transformers",
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    url: str | None = None,
    launch: bool = False,
    **options: Any,
) -> Generator:
    """A generator for ``model`` (a path, a hub name, or an alias such as ``testbed:weak``; None
    means the embedded SmolLM2).

    ``backend``: transformers (default), sglang (in-process Engine; options tokenizer,
    mem_fraction_static, tp_size, dp_size and any other sglang ServerArgs), sglang-server (``url``, or
    ``launch=True`` to start one for ``model``) or openai (``url``), or any registered backend.
    Server options: tokenizer, max_concurrency (None: what the server can take), request_timeout,
    retries, backoff, extra_body (a dict merged into every request body); for openai also server_n
    (auto, request or split) and api_key; launch_args and launch_timeout for --launch.
    ``backend="scripted"`` (hidden, for tests and CLI runs without a model) gives the
    ScriptedGenerator with its default counting policy; ``model`` is ignored."""
    entry = BACKENDS.get(backend)
    if entry.server:
        options.update(url=url, launch=launch)
    loader = entry.resolve()
    return loader(model, device=device, dtype=dtype, cache_dir=cache_dir, trust_remote_code=trust_remote_code,
                  **options)


def backend_entry(name: str) -> BackendEntry:
    """The registered backend ``name`` (ValueError naming the others when there is none)."""
    return BACKENDS.get(name)


def require_top_logprobs(backend: str, who: str) -> None:
    """Refuse, before anything loads, a backend whose completions carry no per-token top
    log-probabilities when ``who`` (a scorer) reads them, naming the backends that do."""
    if backend_entry(backend).top_logprobs:
        return
    raise BackendError(f"{who} reads the policy's per-token log-probabilities, which --backend {backend} does not "
                       f"return: use --backend {top_logprob_backends()}, or name a reward model with --scorer")


def generator_options(backend: str, *, url: str | None = None, launch: bool = False, tokenizer: str | None = None,
                      max_concurrency: int | None = None, request_timeout: float = 600.0, retries: int = 3,
                      kv_cache_mb: int | None = None, delay: float = 0.0, extra_body: dict[str, Any] | None = None,
                      server_n: str = "auto") -> dict[str, Any]:
    """load_generator keywords for ``backend`` and the backend flags of the command line: the flags
    the backend's entry takes, refusing --url and --launch where it is no server backend, and
    --kv-cache-mb, --extra-body and --server-n where the backend does not take them."""
    from pumsearch.backends.openai_servers import N_MODES

    entry = backend_entry(backend)
    if (url or launch) and not entry.server:
        servers = " or ".join(e.name for e in BACKENDS if e.server)
        raise ValueError(f"--url and --launch are for --backend {servers}, not {backend}")
    for flag, value, unset in (("kv_cache_mb", kv_cache_mb, None), ("extra_body", extra_body, None),
                               ("server_n", server_n, "auto")):
        if value != unset and flag not in entry.flags:
            takers = " or ".join(e.name for e in BACKENDS if flag in e.flags)
            raise ValueError(f"--{flag.replace('_', '-')} is for --backend {takers}, not {backend}")
    if (max_concurrency is not None and max_concurrency < 1) or retries < 0 or request_timeout <= 0:
        raise ValueError("--max-concurrency must be >= 1, --retries >= 0 and --request-timeout > 0")
    if kv_cache_mb is not None and kv_cache_mb < 0:
        raise ValueError(f"--kv-cache-mb must be >= 0 (got {kv_cache_mb})")
    if server_n not in N_MODES:
        raise ValueError(f"--server-n must be one of {', '.join(N_MODES)} (got {server_n!r})")
    given = {"url": url, "launch": launch, "tokenizer": tokenizer, "max_concurrency": max_concurrency,
             "request_timeout": request_timeout, "retries": retries, "kv_cache_mb": kv_cache_mb, "delay": delay,
             "extra_body": extra_body, "server_n": server_n}
    return {"backend": backend, **{flag: given[flag] for flag in entry.flags}}


# -- the built-in backends: every loader takes (model, *, device, dtype, cache_dir, trust_remote_code,
# **options) and ignores what it has no use for ----------------------------------------------------
def _load_transformers(model: str | None, *, device: str, dtype: str, cache_dir: str | None,
                       trust_remote_code: bool, **options: Any) -> Generator:
    from pumsearch.backends.embedded import EMBEDDED_NAME, embedded_model_dir
    from pumsearch.backends.transformers_backend import TransformersGenerator

    options = {k: v for k, v in options.items() if k not in _SERVER_OPTIONS}
    if model is None:
        generator = TransformersGenerator.load(
            str(embedded_model_dir(cache_dir)), device=device, dtype=dtype, **options
        )
        generator.name = EMBEDDED_NAME
        return generator
    if is_alias(model):  # a registered alias, e.g. testbed:weak: loaded from its path, named as given
        generator = TransformersGenerator.load(resolve_model_name(model), device=device, dtype=dtype, **options)
        generator.name = model
        return generator
    return TransformersGenerator.load(
        model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **options
    )


def _load_sglang_engine(model: str | None, *, trust_remote_code: bool, device: str, dtype: str,
                        cache_dir: str | None, **options: Any) -> Generator:
    if model is None:
        raise ValueError("--backend sglang needs --model (a path or hub name)")
    from pumsearch.backends.sglang_engine import SGLangEngineGenerator

    return SGLangEngineGenerator.load(model, trust_remote_code=trust_remote_code, **options)


def _load_sglang_server(
    model: str | None,
    *,
    url: str | None,
    launch: bool,
    trust_remote_code: bool,
    device: str,
    dtype: str,
    cache_dir: str | None,
    launch_args: list[str] | None = None,
    launch_timeout: float = 900.0,
    **options: Any,
) -> Generator:
    from pumsearch.backends.sglang_server import SGLangServerGenerator

    launched = None
    if launch:
        if url is not None:
            raise ValueError("give either --url (a running server) or --launch (start one), not both")
        if model is None:
            raise ValueError("--launch needs --model: the model the server should load")
        from pumsearch.backends.remote import launch_sglang_server

        launched = launch_sglang_server(model, extra_args=launch_args, timeout=launch_timeout)
        url = launched.url
    if url is None:
        raise ValueError("--backend sglang-server needs --url (e.g. http://127.0.0.1:30000) or --launch")
    try:
        return SGLangServerGenerator.connect(
            url, model=model, launched=launched, trust_remote_code=trust_remote_code, **options
        )
    except BaseException:
        if launched is not None:
            launched.stop()
        raise


def _load_openai(model: str | None, *, url: str | None, launch: bool, trust_remote_code: bool, device: str,
                 dtype: str, cache_dir: str | None, **options: Any) -> Generator:
    if launch:
        raise ValueError("--launch starts an SGLang server: use it with --backend sglang-server")
    if url is None:
        raise ValueError("--backend openai needs --url (the server's address, e.g. http://127.0.0.1:8000)")
    from pumsearch.backends.openai_compat import OpenAICompatGenerator

    return OpenAICompatGenerator.connect(url, model=model, trust_remote_code=trust_remote_code, **options)


def _load_scripted(model: str | None, *, delay: float = 0.0, **_common: Any) -> Generator:
    from pumsearch.backends.scripted import ScriptedGenerator

    return ScriptedGenerator(delay=float(delay))


register_backend("transformers", _load_transformers, flags=("kv_cache_mb",), uses_dtype=True, top_logprobs=True,
                 help="batched sampling with transformers on CPU or GPU (model None: the embedded SmolLM2)")
register_backend("sglang", _load_sglang_engine, flags=("tokenizer",), top_logprobs=True,
                 help="the in-process sglang.Engine (one GPU, or one node with tensor parallelism)")
register_backend("sglang-server", _load_sglang_server, flags=SERVER_FLAGS, top_logprobs=True,
                 help="SGLang's native POST /generate over HTTP (--url, or --launch to start one)")
register_backend("openai", _load_openai, flags=OPENAI_FLAGS, top_logprobs=True,
                 help="POST /v1/completions of an OpenAI-compatible server (--url): llama.cpp, vLLM, SGLang /v1, ...")
register_backend("scripted", _load_scripted, flags=("delay",), recorded_name="scripted", hidden=True,
                 help="a model-free generator that writes counting steps (tests and runs without a model)")


__all__ = [
    "BackendError",
    "BackendUnavailable",
    "backend_entry",
    "generator_options",
    "load_generator",
    "require_top_logprobs",
]
