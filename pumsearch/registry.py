"""Named plug-ins: one registry per kind, every entry with a one-line help text.

A layer registers what it provides (``pumsearch.backends`` its backends, ``pumsearch.scorers`` its
scorers, ``pumsearch.testbed`` its scorer, models and data set) and the others look entries up by
name, so no layer imports another to find a name, and help texts and error messages list exactly
what is registered. The registries that more than one layer reads live here: ``SCORERS`` (read by
strategies for their messages) and ``BACKENDS`` (read by the rollout scorer to load its students).
Registries private to one layer sit beside it (PRM formats in ``pumsearch.scorers.prm``, model
prefixes in ``pumsearch.models``, data-set prefixes in ``pumsearch.datasets``).

An entry's ``target`` is the object itself or a ``"package.module:attribute"`` reference imported
on first use, so registering a plug-in never imports torch or its heavy modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Entry:
    """One registered plug-in: its name, a one-line help text, and what it is (or where it lives)."""

    name: str
    help: str
    target: Any  # the object, or "package.module:attribute"
    hidden: bool = False  # left out of help texts and name lists (test doubles)

    def resolve(self) -> Any:
        """The target, importing its module where it was registered by reference."""
        return resolve_reference(self.target)


def resolve_reference(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, sep, attribute = target.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"a plug-in reference is 'package.module:attribute', not {target!r}")
    return getattr(importlib.import_module(module), attribute)


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Entries of one kind by name, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # as messages name it: "scorer", "backend", "--prm-format"
        self._entries: dict[str, E] = {}

    def add(self, entry: E, *, replace: bool = False) -> E:
        if not entry.name or entry.name != entry.name.strip():
            raise ValueError(f"a {self.kind} needs a name without surrounding spaces (got {entry.name!r})")
        if not entry.help.strip() or "\n" in entry.help:
            raise ValueError(f"{self.kind} {entry.name!r}: the help text must be one non-empty line")
        if entry.name in self._entries and not replace:
            raise ValueError(f"{self.kind} {entry.name!r} is registered already")
        self._entries[entry.name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, *, error: Callable[[str], Exception] = ValueError) -> E:
        """The entry called ``name``; ``error(message)`` is raised for a name nobody registered."""
        entry = self._entries.get(name)
        if entry is None:
            raise error(f"unknown {self.kind} {name!r}: use one of {', '.join(self.names())}")
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self.entries())

    def entries(self, *, hidden: bool = False) -> list[E]:
        return [e for e in self._entries.values() if hidden or not e.hidden]

    def names(self, *, hidden: bool = False) -> list[str]:
        return [e.name for e in self.entries(hidden=hidden)]

    def choices(self, conjunction: str = "or") -> str:
        """The names for a help text: ``a, b or c``."""
        names = self.names()
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line help) of every listed entry, for help screens and docs."""
        return [(e.name, e.help) for e in self.entries()]


# -- the registries several layers read ------------------------------------------------------------
@dataclass(frozen=True)
class ScorerEntry(Entry):
    """A scorer: ``target`` builds it (``load_scorer`` passes the options it takes). ``served``, where
    set, builds it from a model behind a server URL instead (``--scorer-url``)."""

    served: Any = None

    def resolve_served(self) -> Any:
        return resolve_reference(self.served)


@dataclass(frozen=True)
class BackendEntry(Entry):
    """A generation backend: ``target(model, *, device, dtype, cache_dir, trust_remote_code, **options)``
    returns a Generator. ``flags``: the backend options of the command line it takes (``url`` marks a
    server backend, which also receives ``url`` and ``launch``). ``uses_dtype``: records name the
    dtype. ``recorded_name``: the name records give the policy whatever the model (a test double).
    ``top_logprobs``: its completions carry each token's most likely log-probabilities when asked
    (what the confidence scorer reads)."""

    flags: tuple[str, ...] = ()
    uses_dtype: bool = False
    recorded_name: str | None = None
    top_logprobs: bool = False

    @property
    def server(self) -> bool:
        return "url" in self.flags


SCORERS: Registry[ScorerEntry] = Registry("scorer")
BACKENDS: Registry[BackendEntry] = Registry("backend")


def register_scorer(name: str, target: Any, *, help: str, served: Any = None, hidden: bool = False,
                    replace: bool = False) -> ScorerEntry:
    """Make ``load_scorer(name, ...)`` and ``--scorer NAME`` build ``target`` (a function or class,
    or ``"module:attribute"``), listed with ``help`` wherever scorers are named."""
    return SCORERS.add(ScorerEntry(name, help, target, hidden, served), replace=replace)


def register_backend(name: str, target: Any, *, help: str, flags: tuple[str, ...] = (), uses_dtype: bool = False,
                     recorded_name: str | None = None, hidden: bool = False, replace: bool = False,
                     top_logprobs: bool = False) -> BackendEntry:
    """Make ``load_generator(model, backend=name)`` and ``--backend NAME`` call ``target``."""
    entry = BackendEntry(name, help, target, hidden, tuple(flags), uses_dtype, recorded_name, top_logprobs)
    return BACKENDS.add(entry, replace=replace)


def top_logprob_backends() -> str:
    """The registered backends whose completions carry per-token top log-probabilities, as a list
    to print (the confidence scorer's messages and the default-scorer rule read it)."""
    return ", ".join(e.name for e in BACKENDS if e.top_logprobs)


__all__ = [
    "BACKENDS",
    "SCORERS",
    "BackendEntry",
    "Entry",
    "Registry",
    "ScorerEntry",
    "register_backend",
    "register_scorer",
    "resolve_reference",
    "top_logprob_backends",
]
