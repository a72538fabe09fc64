"""Errors raised by generation backends (the CLI prints them as one line and exits 2)."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend cannot serve requests: server down or failing, bad response, missing package, model
    mismatch. The message says what went wrong and, where it can, what to fix."""


class BackendUnavailable(BackendError):
    """The server could not be reached (or kept failing) after every retry."""


SGLANG_INSTALL_HINT = "pip install 'pumsearch[sglang]' (needs a CUDA GPU)"


def require_sglang() -> None:
    """Fail clearly where sglang is not installed; never imports it (that pulls torch and triton)."""
    import importlib.util

    if importlib.util.find_spec("sglang") is None:
        raise BackendError(f"sglang is not installed: {SGLANG_INSTALL_HINT}")
