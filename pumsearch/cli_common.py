"""What every part of the command line shares: the consoles, the one-line error exit, and which
exceptions count as the user's to fix. Only typer and rich are imported here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def fail(message: str) -> None:
    """Print one line that says what to fix and exit with code 2 (no traceback)."""
    # escaped: paths and model text may hold [brackets] that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def exit_on_user_errors() -> Iterator[None]:
    """Turn an error the user must fix into one line and exit code 2 (see ``fail``)."""
    try:
        yield
    except user_errors() as err:
        fail(str(err))


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user must change something (never shown as a traceback)."""
    from pumsearch.backends.errors import BackendError
    from pumsearch.datasets import DatasetError
    from pumsearch.models import ModelLoadError
    from pumsearch.runs.records import RunError
    from pumsearch.scorers.base import ScorerError
    from pumsearch.strategies.base import StrategyError

    return (UsageError, ModelLoadError, ScorerError, StrategyError, BackendError, DatasetError, RunError,
            ValueError, FileNotFoundError)


def quiet_transformers() -> None:
    """The CLI shows its own progress; transformers' per-load bars would only add noise."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes meant for developers
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
