"""Generation backends. Heavy imports (torch, transformers, sglang) happen inside the loaders."""

from __future__ import annotations

from typing import Any

from pumsearch.backends.errors import BackendError, BackendUnavailable
from pumsearch.search.protocols import Generator

BACKEND_NAMES = ["transformers", "sglang", "sglang-server", "openai"]
SERVER_BACKENDS = ("sglang-server", "openai")
_SERVER_OPTIONS = ("tokenizer", "max_concurrency", "request_timeout", "retries", "backoff")


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
    """A generator for ``model`` (a path, a hub name, or ``testbed:weak``/``testbed:strong``;
    None means the embedded SmolLM2).

    ``backend``: transformers (default), sglang (in-process Engine; options tokenizer,
    mem_fraction_static, tp_size, dp_size and any other sglang ServerArgs), sglang-server (``url``, or
    ``launch=True`` to start one for ``model``) or openai (``url``). Server options: tokenizer,
    max_concurrency, request_timeout, retries, backoff (and api_key for openai; launch_args and
    launch_timeout for --launch). ``backend="scripted"`` (hidden, for tests and CLI runs without a
    model) gives the ScriptedGenerator with its default counting policy; ``model`` is ignored."""
    if backend == "scripted":
        from pumsearch.backends.scripted import ScriptedGenerator

        return ScriptedGenerator(delay=float(options.get("delay", 0.0)))
    if backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKEND_NAMES)}")
    if backend == "transformers":
        return _load_transformers(
            model,
            device=device,
            dtype=dtype,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
            **options,
        )
    if backend == "sglang":
        if model is None:
            raise ValueError("--backend sglang needs --model (a path or hub name)")
        from pumsearch.backends.sglang_engine import SGLangEngineGenerator

        return SGLangEngineGenerator.load(model, trust_remote_code=trust_remote_code, **options)
    if backend == "sglang-server":
        return _load_sglang_server(
            model, url=url, launch=launch, trust_remote_code=trust_remote_code, **options
        )
    if launch:
        raise ValueError("--launch starts an SGLang server: use it with --backend sglang-server")
    if url is None:
        raise ValueError("--backend openai needs --url (the server's address, e.g. http://127.0.0.1:8000)")
    from pumsearch.backends.openai_compat import OpenAICompatGenerator

    return OpenAICompatGenerator.connect(url, model=model, trust_remote_code=trust_remote_code, **options)


def _load_transformers(
    model: str | None,
    *,
    device: str,
    dtype: str,
    cache_dir: str | None,
    trust_remote_code: bool,
    **options: Any,
) -> Generator:
    from pumsearch.backends.embedded import EMBEDDED_NAME, embedded_model_dir
    from pumsearch.backends.transformers_backend import TransformersGenerator

    options = {k: v for k, v in options.items() if k not in _SERVER_OPTIONS}
    if model is None:
        generator = TransformersGenerator.load(
            str(embedded_model_dir(cache_dir)), device=device, dtype=dtype, **options
        )
        generator.name = EMBEDDED_NAME
        return generator
    if model.startswith("testbed:"):  # a shipped testbed policy, e.g. testbed:weak
        from pumsearch.testbed import resolve_model_name

        generator = TransformersGenerator.load(resolve_model_name(model), device=device, dtype=dtype, **options)
        generator.name = model
        return generator
    return TransformersGenerator.load(
        model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **options
    )


def _load_sglang_server(
    model: str | None,
    *,
    url: str | None,
    launch: bool,
    trust_remote_code: bool,
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


__all__ = ["BACKEND_NAMES", "SERVER_BACKENDS", "BackendError", "BackendUnavailable", "load_generator"]
