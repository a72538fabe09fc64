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
import json
import queue
import re
import select
import subprocess
import sys
import threading
from collections.abc import Sequence

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


def verify_answer(prediction: str, reference: str) -> bool:
    """math-verify's verdict (run it in a process's main thread: its timeouts use signals)."""
    from math_verify import parse, verify

    gold = parse(f"${reference}$")
    pred = parse(f"\\boxed{{{prediction}}}")
    if not gold or not pred:
        raise ValueError("unparsable")
    return bool(verify(gold, pred))


def strings_match(prediction: str | None, reference: str | None) -> bool:
    if prediction is None or reference is None:
        return False
    return normalise_answer(prediction) == normalise_answer(reference)


WORKER_COMMAND = (sys.executable, "-m", "pumsearch.search.grade_worker")
STARTUP_TIMEOUT_S = 120.0


class _GradeWorker:
    """One grading process (``python -m pumsearch.search.grade_worker``): a JSON line in, a JSON
    line out. A plain subprocess rather than multiprocessing, so a user's script needs no
    ``if __name__ == "__main__"`` guard (spawned workers would re-run it)."""

    def __init__(self, command: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.ready = False

    def _read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise BrokenPipeError("grading worker exited")
        return line

    def ask(self, prediction: str, reference: str, timeout: float) -> bool:
        """math-verify's verdict; raises TimeoutError, or ValueError where it cannot decide."""
        assert self.proc.stdin is not None
        if not self.ready:  # importing math-verify is not the answer's time
            self._read_line(STARTUP_TIMEOUT_S)
            self.ready = True
        self.proc.stdin.write(json.dumps([prediction, reference]) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self._read_line(timeout))
        if "error" in reply:
            raise ValueError(reply["error"])
        return bool(reply["ok"])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Grader:
    """Grades predictions against references with math-verify in worker processes, each answer
    under ``timeout`` seconds (a worker that overruns is killed and replaced; the answer counts as
    wrong). Where math-verify cannot parse, a normalised string match decides."""

    def __init__(self, workers: int = 1, timeout: float = GRADE_TIMEOUT_S, string_shortcut: bool = True,
                 worker_command: Sequence[str] = WORKER_COMMAND) -> None:
        self.workers = workers
        self.timeout = timeout
        self.string_shortcut = string_shortcut  # identical normalised strings need no math-verify
        self.worker_command = tuple(worker_command)
        self._idle: queue.SimpleQueue[_GradeWorker] = queue.SimpleQueue()
        self._all: list[_GradeWorker] = []
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start the workers now (importing math-verify takes a second or two), so the first grade
        does not wait; returns at once."""
        with self._lock:
            while len(self._all) < self.workers:
                self._start_worker()

    def _start_worker(self) -> None:
        worker = _GradeWorker(self.worker_command)
        self._all.append(worker)
        self._idle.put(worker)

    def _verify(self, prediction: str, reference: str) -> bool:
        self.warm()
        worker = self._idle.get()
        try:
            verdict = worker.ask(prediction, reference, self.timeout)
        except (TimeoutError, BrokenPipeError, OSError):
            self._replace(worker)  # stuck or dead: it will not answer again
            return False
        except ValueError:
            self._idle.put(worker)
            return strings_match(prediction, reference)
        self._idle.put(worker)
        return verdict

    def _replace(self, worker: _GradeWorker) -> None:
        worker.kill()
        with self._lock:
            self._all.remove(worker)
            self._start_worker()

    def grade(self, prediction: str | None, reference: str | None) -> bool:
        return self.grade_many([(prediction, reference)])[0]

    def grade_many(self, pairs: Sequence[tuple[str | None, str | None]]) -> list[bool]:
        results = [False] * len(pairs)
        todo = []
        for i, (pred, ref) in enumerate(pairs):
            if pred is None or ref is None:
                continue
            if self.string_shortcut and strings_match(pred, ref):
                results[i] = True
            else:
                todo.append(i)
        if todo:
            with concurrent.futures.ThreadPoolExecutor(self.workers) as threads:
                verdicts = threads.map(lambda i: self._verify(*pairs[i]), todo)  # type: ignore[misc]
                for i, ok in zip(todo, verdicts, strict=True):
                    results[i] = ok
        return results

    async def agrade(self, prediction: str | None, reference: str | None) -> bool:
        return await asyncio.to_thread(self.grade, prediction, reference)

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.kill()
            self._all.clear()
            self._idle = queue.SimpleQueue()


_default_grader: Grader | None = None


def default_grader() -> Grader:
    global _default_grader
    if _default_grader is None:
        _default_grader = Grader()
    return _default_grader
