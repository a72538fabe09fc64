"""Answer extraction and grading.

Extraction finds the final answer in a solution: the last ``\\boxed{}`` (or ``\\fbox{}``), else
"The answer is X", else GSM8K's "#### X". Grading compares with math-verify in worker processes,
each answer under a timeout, so a pathological expression cannot hang a run; where math-verify
fails or times out it falls back to a normalised string match. Reference answers are wrapped in
``$...$`` before parsing (on MATH-500 that makes all 500 references verify against their own
solutions; parsing them raw agrees on only 392).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import re
import threading

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*([^\n]+)")

GRADE_TIMEOUT_S = 10.0


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` with balanced braces, or None."""
    result = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    result = text[start:i]
                    break
    return result


def extract_answer(text: str) -> str | None:
    """The final answer stated in a solution, or None when it states none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    hits = _ANSWER_IS.findall(text)
    if hits:
        return hits[-1].strip().rstrip(".")
    hits = _HASHES.findall(text)
    if hits:
        return hits[-1].strip()
    return None


def reference_from_gsm8k(answer_field: str) -> str:
    """GSM8K's reference is the text after its final '#### '; thousands separators dropped."""
    hits = _HASHES.findall(answer_field)
    if not hits:
        raise ValueError("GSM8K answer has no '#### N' line")
    return hits[-1].strip().replace(",", "")


_STRIP = re.compile(r"\\\$|\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$|\s|\\text\{\s*\}|\^\{?\\circ\}?|\\%|%")


def normalise_answer(answer: str | None) -> str | None:
    """A canonical string for votes and the string-match fallback."""
    if answer is None:
        return None
    text = answer.strip()
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\(?:d|t)frac", r"\\frac", text)
    text = _STRIP.sub("", text).rstrip(".")
    if re.fullmatch(r"-?[\d,]+(\.\d+)?", text):
        text = text.replace(",", "")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return text


def _verify_in_worker(prediction: str, reference: str) -> bool:
    from math_verify import parse, verify  # imported in the worker, where its signal timeouts work

    gold = parse(f"${reference}$")
    pred = parse(f"\\boxed{{{prediction}}}")
    if not gold or not pred:
        raise ValueError("unparsable")
    return bool(verify(gold, pred))


def _import_math_verify() -> None:
    import math_verify  # noqa: F401


def strings_match(prediction: str | None, reference: str | None) -> bool:
    if prediction is None or reference is None:
        return False
    return normalise_answer(prediction) == normalise_answer(reference)


class Grader:
    """Grades predictions against references with math-verify in a small process pool."""

    def __init__(self, workers: int = 1, timeout: float = GRADE_TIMEOUT_S, string_shortcut: bool = True) -> None:
        self.workers = workers
        self.timeout = timeout
        self.string_shortcut = string_shortcut  # identical normalised strings need no math-verify
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: forking a process that holds torch threads can deadlock the child
                ctx = multiprocessing.get_context("spawn")
                self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=ctx)
            return self._pool

    def _restart_pool(self) -> None:
        with self._lock:
            if self._pool is not None:
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    proc.kill()  # a worker stuck past its timeout will not return
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def warm(self) -> None:
        """Start the workers now (spawning them and importing math-verify takes a second or two),
        so the first grade does not wait; returns at once."""
        self._get_pool().submit(_import_math_verify)

    def grade(self, prediction: str | None, reference: str | None) -> bool:
        if prediction is None or reference is None:
            return False
        if self.string_shortcut and strings_match(prediction, reference):
            return True
        future = self._get_pool().submit(_verify_in_worker, prediction, reference)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._restart_pool()
            return False
        except Exception:
            return strings_match(prediction, reference)

    def grade_many(self, pairs: list[tuple[str | None, str | None]]) -> list[bool]:
        results: list[bool | None] = [None] * len(pairs)
        futures = {}
        for i, (pred, ref) in enumerate(pairs):
            if pred is None or ref is None:
                results[i] = False
            elif self.string_shortcut and strings_match(pred, ref):
                results[i] = True
            else:
                futures[i] = self._get_pool().submit(_verify_in_worker, pred, ref)
        for i, future in futures.items():
            try:
                results[i] = future.result(timeout=self.timeout)
            except concurrent.futures.TimeoutError:
                results[i] = False
                self._restart_pool()
            except Exception:
                results[i] = strings_match(*pairs[i])
        return [bool(r) for r in results]

    async def agrade(self, prediction: str | None, reference: str | None) -> bool:
        return await asyncio.to_thread(self.grade, prediction, reference)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


_default_grader: Grader | None = None


def default_grader() -> Grader:
    global _default_grader
    if _default_grader is None:
        _default_grader = Grader()
    return _default_grader
