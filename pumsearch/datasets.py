"""Problem sets: the bundled MATH-500 and GSM8K test sets, any JSON-lines file, a Hugging Face
dataset (when online, with the optional ``datasets`` package), and prefixes other modules register.

    load_problems("math500")                         # bundled, ids are MATH's unique_id
    load_problems("gsm8k", limit=20)                 # bundled, ids "gsm8k:<line>"
    load_problems("data/aime24.jsonl")               # any JSON-lines file
    load_problems("mine.jsonl", question_field="q", answer_field="a")
    load_problems("hf:HuggingFaceH4/MATH-500:test")  # hub name[:split]
    register_dataset_prefix("testbed", loader)       # then "testbed:<config>"

Reference answers: a GSM8K-style "#### N" answer becomes N; a row with no answer field but a
solution with a \\boxed{} answer gets the last boxed expression. Problems without an id get
``<dataset>:<line>`` (1-based line number in the file).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pumsearch.registry import Entry, Registry
from pumsearch.search.grading import last_boxed, reference_from_gsm8k
from pumsearch.search.problem import Problem

BUNDLED = {"math500": "math500.jsonl", "gsm8k": "gsm8k_test.jsonl"}
QUESTION_FIELDS = ("problem", "question")
ANSWER_FIELDS = ("answer",)
SOLUTION_FIELDS = ("solution",)
ID_FIELDS = ("unique_id", "id")
# Small scalar fields kept as metadata (MATH's level and subject give the report's breakdowns).
METADATA_SKIP = {"problem", "question", "answer", "solution"}

DatasetLoader = Callable[[str], list[Problem]]
DATASET_PREFIXES: Registry[Entry] = Registry("dataset prefix")  # the testbed registers testbed:


class DatasetError(ValueError):
    """A dataset cannot be read (the message names the file, line and what to fix)."""


def register_dataset_prefix(prefix: str, loader: DatasetLoader, *, help: str = "problems from a registered loader",
                            replace: bool = True) -> None:
    """Make ``<prefix>:<rest>`` load through ``loader(rest)`` (e.g. a synthetic testbed). A loader's
    ValueError becomes a DatasetError naming the data set."""
    if not prefix or ":" in prefix:
        raise ValueError(f"a dataset prefix must be a non-empty name without ':' (got {prefix!r})")
    DATASET_PREFIXES.add(Entry(prefix, help, loader), replace=replace)


def dataset_names() -> list[str]:
    return [*BUNDLED, *(f"{p}:..." for p in sorted(DATASET_PREFIXES.names())), "hf:NAME[:SPLIT]", "PATH.jsonl"]


def load_problems(
    spec: str,
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    ids: Sequence[str] | None = None,
) -> list[Problem]:
    """The problems of a dataset, selected by --offset/--limit or --ids (ids keep their order)."""
    problems = _load_all(spec, question_field=question_field, answer_field=answer_field, id_field=id_field)
    if not problems:
        raise DatasetError(f"dataset {spec!r} has no problems")
    check_unique_ids(problems, spec)
    return select_problems(problems, spec, limit=limit, offset=offset, ids=ids)


def select_problems(
    problems: list[Problem], spec: str, *, limit: int | None, offset: int, ids: Sequence[str] | None
) -> list[Problem]:
    if offset < 0:
        raise DatasetError(f"--offset must be >= 0 (got {offset})")
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be >= 1 (got {limit})")
    if ids:
        by_id = {p.id: p for p in problems}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DatasetError(
                f"dataset {spec!r} has no problem with id {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        problems = [by_id[i] for i in ids]
    problems = problems[offset:]
    if limit is not None:
        problems = problems[:limit]
    if not problems:
        raise DatasetError(f"no problems left in {spec!r} after --offset {offset}")
    return problems


def check_unique_ids(problems: Iterable[Problem], spec: str) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise DatasetError(f"dataset {spec!r} has two problems with id {p.id!r}: ids must be unique")
        seen.add(p.id)


def _load_all(spec: str, **fields: str | None) -> list[Problem]:
    if spec in BUNDLED:
        resource = importlib.resources.files("pumsearch.data").joinpath(BUNDLED[spec])
        return parse_jsonl_lines(
            resource.read_text(encoding="utf-8").splitlines(), source=spec, name=spec, **fields
        )
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in DATASET_PREFIXES:
        return _load_registered(prefix, rest)
    if sep and prefix == "hf":
        return load_hub_dataset(rest, **fields)
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DatasetError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        return parse_jsonl_lines(lines, source=str(path), name=path.stem, **fields)
    if path.suffix or "/" in spec:
        raise DatasetError(f"dataset file {spec} does not exist")
    raise DatasetError(f"unknown dataset {spec!r}: use one of {', '.join(dataset_names())}")


def _load_registered(prefix: str, rest: str) -> list[Problem]:
    try:
        return list(DATASET_PREFIXES.get(prefix).resolve()(rest))
    except DatasetError:
        raise
    except ValueError as err:
        raise DatasetError(f"dataset {prefix}:{rest}: {err}") from None


def parse_jsonl_lines(
    lines: Sequence[str],
    *,
    source: str,
    name: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> list[Problem]:
    problems = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{source}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{source}, line {number}: expected a JSON object, got {type(row).__name__}")
        problems.append(
            problem_from_row(
                row,
                where=f"{source}, line {number}",
                default_id=f"{name}:{number}",
                question_field=question_field,
                answer_field=answer_field,
                id_field=id_field,
            )
        )
    return problems


def _pick(row: dict[str, Any], explicit: str | None, candidates: Sequence[str]) -> str | None:
    if explicit is not None:
        return explicit
    return next((f for f in candidates if f in row), None)


def problem_from_row(
    row: dict[str, Any],
    *,
    where: str,
    default_id: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> Problem:
    """One Problem from one dataset row, with the reference answer extracted."""
    q_field = _pick(row, question_field, QUESTION_FIELDS)
    if q_field is None or q_field not in row:
        wanted = question_field or " or ".join(QUESTION_FIELDS)
        raise DatasetError(
            f"{where}: no question field {wanted!r} (fields: {', '.join(sorted(row))}); "
            "name it with --question-field"
        )
    question = row[q_field]
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: the question field {q_field!r} is empty or not text")
    if answer_field is not None and answer_field not in row:
        raise DatasetError(f"{where}: no answer field {answer_field!r} (fields: {', '.join(sorted(row))})")
    answer = reference_answer(row, _pick(row, answer_field, ANSWER_FIELDS), where)
    i_field = _pick(row, id_field, ID_FIELDS)
    if id_field is not None and id_field not in row:
        raise DatasetError(f"{where}: no id field {id_field!r}")
    problem_id = str(row[i_field]) if i_field is not None and row.get(i_field) is not None else default_id
    metadata = {
        k: v
        for k, v in row.items()
        if k not in METADATA_SKIP
        and k not in (q_field, i_field)
        and isinstance(v, str | int | float | bool)
        and not (isinstance(v, str) and len(v) > 200)
    }
    return Problem(problem_id, question, answer, metadata)


def reference_answer(row: dict[str, Any], field: str | None, where: str) -> str | None:
    """GSM8K's "#### N" becomes N; a row with only a solution gets its last \\boxed{} answer."""
    if field is not None and row.get(field) is not None:
        value = row[field]
        text = str(value).strip() if not isinstance(value, str) else value.strip()
        if "####" in text:
            try:
                return reference_from_gsm8k(text)
            except ValueError:
                raise DatasetError(f"{where}: the answer has '####' but no value after it") from None
        boxed = last_boxed(text)
        return boxed.strip() if boxed is not None and text.startswith("\\boxed") else text
    for solution_field in SOLUTION_FIELDS:
        solution = row.get(solution_field)
        if isinstance(solution, str) and (boxed := last_boxed(solution)) is not None:
            return boxed.strip()
    return None


def load_hub_dataset(name_split: str, **fields: str | None) -> list[Problem]:
    """A Hugging Face dataset ``name[:split]`` (needs ``pip install datasets`` and the network)."""
    name, _, split = name_split.partition(":")
    if not name:
        raise DatasetError("give a hub dataset name after 'hf:', e.g. hf:HuggingFaceH4/MATH-500:test")
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "loading a hub dataset needs the 'datasets' package: pip install 'pumsearch[datasets]'"
        ) from None
    try:
        data = datasets.load_dataset(name, split=split or "test")
    except Exception as err:  # the hub raises many types; the message is what the user needs
        raise DatasetError(
            f"could not load hub dataset {name!r} (split {split or 'test'!r}): {err}"
        ) from None
    short = name.rsplit("/", 1)[-1]
    return [
        problem_from_row(dict(row), where=f"{name} row {i + 1}", default_id=f"{short}:{i + 1}", **fields)
        for i, row in enumerate(data)
    ]


__all__ = ["DatasetError", "dataset_names", "load_problems", "problem_from_row", "register_dataset_prefix"]
