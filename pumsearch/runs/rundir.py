"""A run directory: the resolved configuration, the records, the trees and a summary.

    <dir>/config.json        what defines the run (its key is a hash of it) plus the environment
    <dir>/records.jsonl      one record per finished problem (records.shard-I-of-N.jsonl per shard)
    <dir>/planned.json       the problems the run was asked for, so a report counts the missing ones
    <dir>/records.jsonl.lock held (an OS file lock) by the process writing records.jsonl
    <dir>/trees/             one tree file per problem
    <dir>/summary.json       totals over the records, rewritten at the end (and on Ctrl-C)

The key covers everything that changes a problem's result: search settings, dataset and field
mapping, model, backend, dtype and scorer. It leaves out what only selects problems (--limit,
--offset, --ids, --shard) and how they are scheduled (--concurrency, --batch-tokens, --device),
so a run can be extended to more problems or split across machines. A directory made by a
different configuration is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from pumsearch.runs.records import (
    RECORDS_GLOB,
    RecordLog,
    RunError,
    RunLocked,
    merge_record_files,
    planned_file_name,
    records_file_name,
)
from pumsearch.search.config import SearchConfig
from pumsearch.search.result import tree_file_name

RUN_FORMAT = "pumsearch-run"
RUN_VERSION = 1
PLANNED_FORMAT = "pumsearch-planned"
PLANNED_GLOB = "planned*.json"
TREES_DIR = "trees"
PACKAGES = ("pumsearch", "torch", "transformers", "math-verify", "sglang", "numpy")

# The strategy settings that were SearchConfig fields when run keys were first made. Every serialized
# configuration keeps them, flat, with these values (the defaults then) unless the run's own strategy
# sets them, so run directories made before strategies owned their settings keep their keys. A
# built-in strategy's default must stay equal to its value here (tests/test_strategy_settings.py).
# Options of a strategy that are not named here are serialized under "extra".
FLAT_STRATEGY_SETTINGS: dict[str, Any] = {
    "beam_width": 4, "lookahead": 0, "filter_duplicates": False, "c_puct": 1.0, "expansions": 2,
    "mcts_steps_per_solution": 8, "terminal_reward": "scorer", "mcts_parallel": 4,
}
_CORE_FIELDS = tuple(f.name for f in fields(SearchConfig) if f.name != "strategy_options")


def search_to_dict(config: SearchConfig) -> dict[str, Any]:
    """The search settings as config.json (and the run key) holds them: the shared settings, the
    flat strategy settings and the strategy's other options under "extra"."""
    options = config.strategy_options
    return {
        **{name: getattr(config, name) for name in _CORE_FIELDS},
        **FLAT_STRATEGY_SETTINGS,
        **{k: v for k, v in options.items() if k in FLAT_STRATEGY_SETTINGS},
        "extra": {k: v for k, v in sorted(options.items()) if k not in FLAT_STRATEGY_SETTINGS},
    }


def search_from_dict(data: dict[str, Any]) -> SearchConfig:
    """The inverse of search_to_dict (flat settings at their placeholder values are left unset)."""
    data = dict(data)
    options = dict(data.pop("extra", None) or {})
    for name, placeholder in FLAT_STRATEGY_SETTINGS.items():
        if name in data and (value := data.pop(name)) != placeholder:
            options[name] = value
    unknown = set(data) - set(_CORE_FIELDS)
    if unknown:
        raise RunError(f"unknown search settings: {', '.join(sorted(unknown))}")
    return SearchConfig(**data, strategy_options=options)


@dataclass
class RunSpec:
    """Everything that defines one configuration (and so its key)."""

    search: SearchConfig
    dataset: dict[str, Any]  # spec and field mapping
    model: dict[str, Any]  # backend, model identity, dtype
    scorer: dict[str, Any] | None = None  # spec, name, format, path
    subsample_budgets: list[int] | None = None  # budgets read off this run's trees (bon, dvts)
    subsample: dict[str, Any] | None = None  # unit and budget per group, for subsampled strategies

    def identity(self) -> dict[str, Any]:
        """What the key covers. The budgets read off a subsampled run are not in it: a sweep may
        add budgets below the largest N without redoing that run."""
        return {
            "search": search_to_dict(self.search),
            "dataset": self.dataset,
            "model": self.model,
            "scorer": self.scorer,
            "subsample": self.subsample,
        }

    @property
    def key(self) -> str:
        return config_hash(self.identity())

    @property
    def family(self) -> str:
        """The key with seed and budget left out: runs that differ only in those share a curve."""
        ident = self.identity()
        ident["search"] = {k: v for k, v in ident["search"].items() if k not in ("seed", "budget")}
        return config_hash(ident)

    @property
    def scorer_label(self) -> str:
        return self.scorer["spec"] if self.scorer else "none"


def config_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def spec_from_config(data: dict[str, Any]) -> RunSpec:
    return RunSpec(
        search=search_from_dict(data["search"]),
        dataset=data["dataset"],
        model=data["model"],
        scorer=data.get("scorer"),
        subsample_budgets=data.get("subsample_budgets"),
        subsample=data.get("subsample"),
    )


def environment() -> dict[str, Any]:
    """Package versions, git revision and platform, recorded with the configuration."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_revision": git_revision(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if data else {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def describe_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    a, b = _flatten(old), _flatten(new)
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


@dataclass
class RunDir:
    path: Path
    spec: RunSpec
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def records_glob(self) -> list[Path]:
        return sorted(self.path.glob(RECORDS_GLOB))

    def tree_file(self, problem_id: str) -> str:
        """Where a problem's tree goes, relative to the directory (as its record names it)."""
        return f"{TREES_DIR}/{tree_file_name(problem_id)}"

    def records(self) -> dict[str, dict[str, Any]]:
        return merge_record_files(self.records_glob)

    def log(self, shard: tuple[int, int] | None) -> RecordLog:
        return RecordLog(self.path / records_file_name(shard))

    def lock(self, shard: tuple[int, int] | None) -> contextlib.AbstractContextManager[None]:
        """Hold the lock of the records file ``shard`` writes (see ``hold_lock``)."""
        return hold_lock(self.path / (records_file_name(shard) + ".lock"))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", summary)

    def planned(self) -> dict[str, bool]:
        """Every problem any session was asked to run (all shards): id -> has a reference answer.
        Empty for a directory made before planned files were written: its records are all it
        planned."""
        planned: dict[str, bool] = {}
        for path in sorted(self.path.glob(PLANNED_GLOB)):
            planned.update(_read_json(path).get("problems") or {})
        return planned

    def add_planned(self, problems: Sequence[Any], shard: tuple[int, int] | None) -> None:
        """Add ``problems`` to what the records file of ``shard`` is asked to hold."""
        path = self.path / planned_file_name(shard)
        known = _read_json(path).get("problems") or {} if path.exists() else {}
        wanted = {**known, **{p.id: p.answer is not None for p in problems}}
        if wanted != known:
            write_json_atomic(path, {"format": PLANNED_FORMAT, "version": 1, "problems": wanted})


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        tmp.replace(path)
    except OSError as err:
        raise RunError(f"cannot write {path} ({err.strerror or err}): make {path.parent} writable, or use "
                       "another --out") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err}); delete it and rerun") from None
    return data if isinstance(data, dict) else {}


# -- one writer per records file --------------------------------------------------------------------
_held: dict[Path, tuple[IO[str], int]] = {}  # lock file -> (its open file, holders in this process)


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """An exclusive OS file lock (flock) on ``path`` for as long as the block runs. The OS drops it
    when the process ends, however it ends (kill -9 included), so a stale lock cannot stay behind.
    Re-entrant within one process (the command line takes it before loading the model, the run
    again). Another process holding it: RunLocked, naming its pid."""
    key = path.resolve()
    if key in _held:
        handle, count = _held[key]
        _held[key] = (handle, count + 1)
    else:
        _held[key] = (_acquire(path), 1)
    try:
        yield
    finally:
        handle, count = _held.pop(key)
        if count > 1:
            _held[key] = (handle, count - 1)
        else:
            handle.close()  # closing the file releases the lock


def _acquire(path: Path) -> IO[str]:
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as err:
        raise RunError(f"cannot write {path} ({err.strerror or err}): make {path.parent} writable, or use "
                       "another --out") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunLocked(f"{path.parent} is being written by another pumsearch process (pid {holder}); wait "
                        "for it to finish or stop it, or use another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is not a pumsearch run directory (no config.json)") from None
    except json.JSONDecodeError as err:
        raise RunError(
            f"{path / 'config.json'} is not valid JSON ({err}); restore it or use a new --out"
        ) from None
    if data.get("format") != RUN_FORMAT:
        raise RunError(f"{path / 'config.json'} is not a pumsearch run configuration")
    return data


def open_run_dir(path: Path, spec: RunSpec, extra: dict[str, Any] | None = None) -> RunDir:
    """Create the run directory, or reopen it to resume. A directory of another configuration
    is refused before anything in it is touched."""
    if (path / "config.json").exists():
        existing = read_config(path)
        if existing.get("key") != spec.key:
            old = {k: existing.get(k) for k in spec.identity()}
            raise RunError(
                f"{path} holds a run of a different configuration "
                f"({describe_difference(old, spec.identity())}); "
                "use another --out directory, or delete that one to start over"
            )
        known = existing.get("subsample_budgets") or []
        wanted = sorted(set(known) | set(spec.subsample_budgets or []))
        if spec.subsample_budgets and wanted != known:
            existing["subsample_budgets"] = wanted  # a sweep asked for more budgets off the same run
            write_json_atomic(path / "config.json", existing)
        spec.subsample_budgets = wanted or None
        return RunDir(path, spec, existing)
    if path.exists() and any(path.glob(RECORDS_GLOB)):
        raise RunError(f"{path} has records but no config.json; use another --out directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create {path} ({err.strerror or err}): choose an --out you can write to") from None
    config = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "key": spec.key,
        "family": spec.family,
        **spec.identity(),
        "subsample_budgets": spec.subsample_budgets,
        **(extra or {}),
        "environment": environment(),
    }
    write_json_atomic(path / "config.json", config)
    return RunDir(path, spec, config)


def load_run_dir(path: Path) -> RunDir:
    config = read_config(path)
    return RunDir(path, spec_from_config(config), config)


def find_run_dirs(root: Path) -> list[Path]:
    """A run directory itself, or the run directories below a sweep directory."""
    if not root.exists():
        raise RunError(f"{root} does not exist")
    if (root / "config.json").exists():
        return [root]
    found = sorted(p.parent for p in root.glob("*/config.json")) + sorted(
        p.parent for p in root.glob("*/*/config.json")
    )
    if not found:
        raise RunError(f"{root} holds no pumsearch runs (no config.json in it or its subfolders)")
    return found
