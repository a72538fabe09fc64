"""The records file of a run: one JSON line per finished problem, appended and flushed at once.

A process killed mid-write leaves at most one truncated last line; ``RecordLog.open`` detects it,
cuts it off (that problem is then redone) and appends after the last complete line. Reading keeps
the last line per problem ("last line wins"); a run directory may hold several record files (one
per shard), merged by preferring a finished record, then the later one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pumsearch.search.result import RECORD_FORMAT

RECORDS_GLOB = "records*.jsonl"


class RunError(ValueError):
    """A run directory cannot be used as asked (the message says what to do). ``exit_code``: what
    the command line exits with (README, "Exit codes")."""

    exit_code = 2


class RunLocked(RunError):
    """Another process is writing to the run directory."""

    exit_code = 3


class RunWriteError(RunError):
    """The run directory stopped taking writes mid-run (what finished before is kept)."""

    exit_code = 1


def records_file_name(shard: tuple[int, int] | None) -> str:
    """Shards write their own file, so shards on a shared disk never interleave lines."""
    return "records.jsonl" if shard is None else f"records.shard-{shard[0]}-of-{shard[1]}.jsonl"


def planned_file_name(shard: tuple[int, int] | None) -> str:
    """The problems a records file was asked to hold (one file per shard, as for records)."""
    return "planned.json" if shard is None else f"planned.shard-{shard[0]}-of-{shard[1]}.json"


def parse_records(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """The complete records of a file, and the byte offset where a truncated last line starts
    (None when the file ends cleanly). A bad line before the last is an error naming its line."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    start = 0
    number = 0
    while start < len(data):
        end = data.find(b"\n", start)
        number += 1
        last = end < 0 or data[end + 1 :].strip() == b""
        chunk = data[start:] if end < 0 else data[start:end]
        try:
            record = json.loads(chunk) if chunk.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if last:
                return records, start  # cut short by a crash mid-write: that problem is redone
            raise RunError(
                f"{path}, line {number}: not a valid record ({err}); fix or delete that line, then rerun"
            ) from None
        if end < 0 and record is not None:
            return records, start  # valid JSON but no newline: the write was cut off, so redo it
        if record is not None:
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise RunError(f"{path}, line {number}: not a pumsearch record")
            records.append(record)
        if end < 0:
            break
        start = end + 1
    return records, None


def latest_per_problem(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record per problem id (records in file order)."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        out[record["problem_id"]] = record
    return out


def merge_record_files(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Last line per problem within a file; across files a finished record beats a failed one,
    then the one that finished later."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(paths):
        records, _ = parse_records(path)
        for pid, record in latest_per_problem(records).items():
            old = merged.get(pid)
            if old is None or _rank(record) >= _rank(old):
                merged[pid] = record
    return merged


def _rank(record: dict[str, Any]) -> tuple[bool, float]:
    return record.get("status") == "ok", float((record.get("timings") or {}).get("finished_at") or 0.0)


class RecordLog:
    """Appends records to one file, a flushed and fsynced line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self.repaired = False

    def open(self) -> RecordLog:
        if self.path.exists():
            _, cut = parse_records(self.path)
            if cut is not None:
                with self.path.open("r+b") as f:
                    f.truncate(cut)
                self.repaired = True
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("the record log is not open")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())  # a finished problem survives a crash of the whole machine

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
