"""Answer extraction, grading, and the equivalence classes that votes count.

Extraction finds the final answer in a solution: the last non-empty ``\\boxed{}`` (or
``\\fbox{}``), else "The answer is X", else GSM8K's "#### X"; then reduces it to its final
expression (``3+2 = 5`` -> ``5``, see ``final_expression``). Grading compares with math-verify in
worker processes (pumsearch.search.grade_worker), each answer under a timeout, so a pathological
expression cannot hang a run; identical normalised strings need no math-verify, and where
math-verify cannot parse, a normalised string match decides. Reference answers are wrapped in
``$...$`` before parsing (on MATH-500 that makes all 500 references verify against their own
solutions; parsing them raw agrees on only 392). Votes group answers into equivalence classes the
same way (``Grader.answer_classes``).
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import re
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s*)?$", re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_NUMBER_AND_WORDS = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z][A-Za-z\s'.,]*)")
_MATH_WORDS = {"pi", "sqrt", "root", "roots", "squared", "cubed", "inf", "infinity"}

GRADE_TIMEOUT_S = 10.0


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` with balanced braces, in order."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:i])
                    break
    return found


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` with balanced braces, or None."""
    found = boxed_contents(text)
    return found[-1] if found else None


def extract_answer(text: str) -> str | None:
    """The final answer stated in a solution, reduced to its final expression; None when it
    states none (an empty box states nothing: an earlier non-empty one is the answer, as
    math-verify keeps the rightmost match that parses)."""
    stated = [b.strip() for b in boxed_contents(text) if b.strip()]
    if not stated:
        stated = [h.strip().rstrip(".") for h in _ANSWER_IS.findall(text)]
    if not stated or not stated[-1]:
        stated = [h.strip() for h in _HASHES.findall(text)]
    if not stated or not stated[-1]:
        return None
    return _without_trailing_words(final_expression(stated[-1]))


def _without_trailing_words(answer: str) -> str:
    """``72 clips``, ``4 bolts in total`` -> the number: words after a number are its unit or
    prose (math-verify reads the number after "answer" and needs no suffix, parser.py's
    expression patterns). Kept: anything with a second number (``2 and 3``), a variable (a single
    letter) or a mathematical word (``3 pi``)."""
    match = _NUMBER_AND_WORDS.fullmatch(answer)
    if match is None:
        return answer
    words = re.findall(r"[A-Za-z]+", match.group(2))
    if any(len(w) < 2 or w.lower() in _MATH_WORDS for w in words):
        return answer
    return match.group(1)


_COMPARISON = re.compile(r"[<>]|!=|\\(?:le|ge|leq|geq|lt|gt|ne|neq|approx|equiv|sim|in|subset|subseteq)(?![A-Za-z])")
_LIST = re.compile(r"[;]|\\quad|(?<![A-Za-z])(?:and|or)(?![A-Za-z])|(?<!\d),|,(?!\d{3}(?!\d))")
_NAME = r"(?:[A-Za-z]{1,2}|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?"
_ASSIGNED = re.compile(rf"{_NAME}(?:\([^()=]*\))?")
_TEXT_COMMANDS_AND_WORDS = re.compile(r"\\(?:text|mbox|mathrm|textbf)\{[^{}]*\}|\\[A-Za-z]+|[A-Za-z]{3,}")


def _top_level_parts(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _has_variables(text: str) -> bool:
    """A letter left once text (units), LaTeX commands and words of three or more letters (prose)
    are gone."""
    return re.search(r"[A-Za-z]", _TEXT_COMMANDS_AND_WORDS.sub("", text)) is not None


def final_expression(answer: str) -> str:
    """The right-hand side of a trailing equation whose value is a constant, where the left-hand
    side is arithmetic or prose (``3+2 = 5``, ``that 48 + 49 + 52 = 141``) or names what is
    assigned (``x = 5``, ``k = \\frac{\\pi}{2}``): the graders' conventions (math-verify compares a
    predicted equation with a non-equation reference by its last right-hand side; Qwen2.5-Math's
    ``strip_string`` drops a left-hand side of up to two characters). Kept whole: equations in
    variables (``y = 2x + 3``, ``x^2+y^2=25``), lists of equations, comparisons."""
    parts = _top_level_parts(answer, "=")
    rhs = _without_trailing_words(parts[-1].strip())
    if len(parts) < 2 or not rhs or _COMPARISON.search(answer) or _LIST.search(answer):
        return answer
    lhs = parts[0].strip()
    if _has_variables(rhs) or not (_ASSIGNED.fullmatch(lhs) or not _has_variables(lhs)):
        return answer
    return rhs


def reference_from_gsm8k(answer_field: str) -> str:
    """GSM8K's reference is the text after its final '#### '; thousands separators dropped."""
    hits = _HASHES.findall(answer_field)
    if not hits:
        raise ValueError("GSM8K answer has no '#### N' line")
    return drop_thousands_separators(hits[-1].strip())


_SPACING = re.compile(r"\\[!,;: ]\s*|\{,\}")
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_STRIP = re.compile(r"\\\$|\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$|\s|\\text\{\s*\}|\^\{?\\circ\}?|\\%|%")


def drop_thousands_separators(number: str) -> str:
    """``1,234.5`` -> ``1234.5``; any other comma (``1,2``, ``2, 300``, ``0,111``) is kept, for
    math-verify to read as a list. The pattern is math-verify's (parser.py, number format 1)."""
    tight = _SPACING.sub(lambda m: "," if m.group() == "{,}" else "", number.strip())
    return tight.replace(",", "") if _THOUSANDS.fullmatch(tight) else number


def normalise_answer(answer: str | None) -> str | None:
    """A canonical string for the string-match shortcut and the exact pass of a vote."""
    if answer is None:
        return None
    text = answer.strip()
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\(?:d|t)frac", r"\\frac", text)
    text = drop_thousands_separators(text)
    text = _STRIP.sub("", text).rstrip(".")
    if re.fullmatch(r"-?\d+\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    if re.fullmatch(r"-?\d+", text):
        text = str(int(text))  # 007 is 7: plain integers are told apart by their strings
    return text


def vote_key(answer: str | None) -> str | None:
    """The normalised answer, or None where there is none (missing or empty: no vote)."""
    key = normalise_answer(answer)
    return key or None


def strings_match(prediction: str | None, reference: str | None) -> bool:
    pred, ref = vote_key(prediction), vote_key(reference)
    return pred is not None and pred == ref


def _plain_integer(answer: str) -> bool:
    return re.fullmatch(r"-?\d+", drop_thousands_separators(answer.strip())) is not None


@dataclass(frozen=True)
class AnswerClass:
    """Where one answer stands in a vote. ``group`` numbers the equivalence classes in the order
    their first answer appears (None: no answer, so no vote); ``parsed`` says math-verify read the
    answer (False: it cannot, or it timed out, and the answer votes as its own string)."""

    group: int | None
    parsed: bool


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

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The worker's reply; raises TimeoutError, or ValueError where math-verify cannot decide."""
        assert self.proc.stdin is not None
        if not self.ready:  # importing math-verify is not the answer's time
            self._read_line(STARTUP_TIMEOUT_S)
            self.ready = True
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self._read_line(timeout))
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Grader:
    """Grades predictions against references with math-verify in worker processes, each answer
    under ``timeout`` seconds (a worker that overruns is killed and replaced; the answer counts as
    wrong). Where math-verify cannot parse, a normalised string match decides. ``answer_classes``
    groups a vote's answers by the same equivalence."""

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

    def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """One request to an idle worker: the reply, None when the worker timed out or died (it
        is replaced); raises ValueError when math-verify failed on the input."""
        self.warm()
        worker = self._idle.get()
        try:
            reply = worker.ask(request, self.timeout)
        except (TimeoutError, BrokenPipeError, OSError):
            self._replace(worker)  # stuck or dead: it will not answer again
            return None
        except ValueError:
            self._idle.put(worker)
            raise
        self._idle.put(worker)
        return reply

    def _verify(self, prediction: str, reference: str) -> bool:
        try:
            reply = self._ask({"grade": [prediction, reference]})
        except ValueError:
            return strings_match(prediction, reference)
        return bool(reply and reply["ok"])

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
            if vote_key(pred) is None or ref is None:  # no answer is a wrong answer
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

    def answer_classes(self, answers: Sequence[str | None]) -> list[AnswerClass]:
        """Equivalence classes for a vote, built online in answer order: an answer joins the class
        of an earlier one with the same normalised string, else the first class whose first answer
        math-verify grades equal to it (either one taken as the reference), else starts its own.
        So the classes of a prefix are those of the whole list cut to it (a read-off budget votes
        as a run at that budget). Plain integers are told apart without math-verify; an answer it cannot
        read, or times out on, is compared by its string alone."""
        firsts: dict[str, str] = {}  # normalised string -> its first raw answer
        for answer in answers:
            key = vote_key(answer)
            if key is not None and answer is not None:
                firsts.setdefault(key, answer.strip())
        group_of: dict[str, int] = {}
        parsed_of: dict[str, bool] = {}
        readable: list[tuple[str, int]] = []  # the first answer of each class math-verify reads
        classes = 0
        for key, answer in firsts.items():
            against = [(first, group) for first, group in readable
                       if not (_plain_integer(answer) and _plain_integer(first))]
            parsed_of[key], index = self._match(answer, [first for first, _ in against])
            if index is not None:
                group_of[key] = against[index][1]
                continue
            group_of[key], classes = classes, classes + 1
            if parsed_of[key]:
                readable.append((answer, group_of[key]))
        keys = [vote_key(a) for a in answers]
        return [AnswerClass(None, False) if k is None else AnswerClass(group_of[k], parsed_of[k]) for k in keys]

    def _match(self, answer: str, firsts: list[str]) -> tuple[bool, int | None]:
        """(math-verify reads ``answer``, the index of the first of ``firsts`` it equals)."""
        if _plain_integer(answer) and not firsts:
            return True, None
        try:
            reply = self._ask({"match": answer, "against": firsts, "seconds": self.timeout / 2})
        except ValueError:
            return False, None
        if reply is None or reply["timed_out"]:
            return False, None
        return bool(reply["parsed"]), reply["index"]

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
