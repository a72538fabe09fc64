"""The grading worker process: one JSON request a line on stdin, one JSON reply a line on stdout.

- ``{"grade": [prediction, reference]}`` -> ``{"ok": bool}``: math-verify's verdict, with its own
  timeouts (``{"error": message}`` where it cannot parse either side);
- ``{"match": answer, "against": [first answers], "seconds": s}`` -> ``{"parsed": bool, "index":
  int | null, "timed_out": bool}``: whether math-verify reads ``answer``, and the first of
  ``against`` it grades equal to ``answer``, either taken as the reference (math-verify is not
  symmetric: ``m+n=17`` against the reference 17 is right, 17 against ``m+n=17`` is not,
  grader.py "We follow what the gold format is"). The whole request runs
  under one deadline of ``s`` seconds; a new answer is first compared with 0, so one that makes
  sympy evaluate for ever is caught once, on its own, and then votes as its string.

math-verify runs in this process's main thread, so signal-based timeouts work; the Grader kills a
worker that still overruns.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


def verify_answer(prediction: str, reference: str) -> bool:
    """math-verify's verdict on a prediction against a reference."""
    from math_verify import parse, verify

    gold = parse(f"${reference}$")
    pred = parse(f"\\boxed{{{prediction}}}")
    if not gold or not pred:
        raise ValueError("unparsable")
    return bool(verify(gold, pred))


class DeadlinePassed(BaseException):
    """Raised by the alarm; a BaseException, so math-verify's ``except Exception`` lets it through."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise DeadlinePassed

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=4096)
def parsed_answer(answer: str) -> tuple[Any, ...]:
    """math-verify's reading of an answer (its own timeouts off: the request's deadline rules)."""
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=None))  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def checked(answer: str) -> bool:
    """Compared with 0 once: a new answer that makes sympy evaluate for ever shows it here."""
    from math_verify import parse, verify

    verify(parse("$0$"), list(parsed_answer(answer)), timeout_seconds=None)
    return True


def match_answer(answer: str, against: list[str], seconds: float) -> dict[str, Any]:
    from math_verify import verify
    from sympy import Basic, MatrixBase

    reply: dict[str, Any] = {"parsed": False, "index": None, "timed_out": False}
    try:
        with deadline(seconds):
            pred = list(parsed_answer(answer))
            reply["parsed"] = any(isinstance(p, (Basic, MatrixBase)) for p in pred)
            if not reply["parsed"]:
                return reply
            checked(answer)
            for i, first in enumerate(against):
                gold = list(parsed_answer(first))
                if verify(gold, pred, timeout_seconds=None) or verify(pred, gold, timeout_seconds=None):
                    reply["index"] = i
                    break
    except DeadlinePassed:
        reply["timed_out"] = True
    return reply


def handle(request: dict[str, Any]) -> dict[str, Any]:
    if "grade" in request:
        return {"ok": verify_answer(*request["grade"])}
    if "match" in request:
        return match_answer(request["match"], list(request["against"]), float(request["seconds"]))
    raise ValueError(f"unknown request {sorted(request)}")


def main() -> None:
    import math_verify  # noqa: F401  (imported before saying ready, so answers are timed alone)

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except Exception as err:
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
