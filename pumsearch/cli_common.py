"""What every part of the command line shares: the consoles, the one-line error exit, and which
exceptions count as the user's to fix. Only typer and rich are imported here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


# Exit codes (README.md and docs/evaluation.md, "Exit codes"); a signal ends the process with 128 + its
# number, as the shell reports it (SIGTERM 143, SIGKILL 137), and records already written stay valid.
EXIT_OK = 0
EXIT_PROBLEMS_FAILED = 1  # the command ran, but problems failed or the run stopped part-way
EXIT_USAGE = 2  # bad input or a setup that cannot work: refused before anything is lost
EXIT_BUSY = 3  # the run directory is being written by another process
EXIT_INTERRUPTED = 130  # Ctrl-C


THREADS_HELP = ("CPU threads torch computes with (default: OMP_NUM_THREADS, else every core; waiting "
                "threads sleep, OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise).")


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print one line that says what to fix and exit with ``code`` (no traceback)."""
    # escaped: paths and model text may hold [brackets] that rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def exit_on_user_errors() -> Iterator[None]:
    """Turn an error the user must fix into one line and its exit code: the error's ``exit_code``,
    else 2 (see ``fail``)."""
    try:
        yield
    except user_errors() as err:
        fail(str(err), getattr(err, "exit_code", EXIT_USAGE))


def compact_table(columns: Sequence[str], *, text: Sequence[str] = (), title: str | None = None,
                  caption: str | None = None) -> Table:
    """A table that fits 80 columns and never cuts a cell short: one space between columns, no side
    borders; the ``text`` columns (left-aligned) fold long values onto more lines, the others
    (numbers, right-aligned) never wrap. A header may hold a newline to take two lines. Title and
    caption are plain text (escaped: paths and scorer names may hold [brackets])."""
    table = Table(title=None if title is None else escape(title),
                  caption=None if caption is None else escape(caption), box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 0), title_justify="left", caption_justify="left", title_style="bold",
                  caption_style="")
    for name in columns:
        if name in text:
            table.add_column(name, justify="left", overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    return table


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
