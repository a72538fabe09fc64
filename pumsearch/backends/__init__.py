"""Generation backends. Heavy imports (torch, transformers, sglang) happen inside the loaders."""

from __future__ import annotations

from typing import Any

from pumsearch.search.protocols import Generator

BACKEND_NAMES = ["transformers"]


def load_generator(
    model: str | None = None,
    *,
    backend: str = "transformers",
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> Generator:
    """A generator for ``model`` (a path, a hub name, or ``testbed:weak``/``testbed:strong``; None means
    the embedded SmolLM2)."""
    if backend != "transformers":
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKEND_NAMES)}")
    from pumsearch.backends.embedded import EMBEDDED_NAME, embedded_model_dir
    from pumsearch.backends.transformers_backend import TransformersGenerator

    if model is None:
        generator = TransformersGenerator.load(str(embedded_model_dir(cache_dir)), device=device, dtype=dtype,
                                               **options)
        generator.name = EMBEDDED_NAME
        return generator
    if model.startswith("testbed:"):  # a shipped testbed policy, e.g. testbed:weak
        from pumsearch.testbed import resolve_model_name

        generator = TransformersGenerator.load(resolve_model_name(model), device=device, dtype=dtype,
                                               **options)
        generator.name = model
        return generator
    return TransformersGenerator.load(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                      **options)


__all__ = ["BACKEND_NAMES", "load_generator"]
