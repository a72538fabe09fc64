"""The grading worker process: reads ``[prediction, reference]`` JSON lines from stdin and writes
``{"ok": bool}`` or ``{"error": message}`` lines. math-verify runs in this process's main thread,
so its own signal-based timeouts work; the Grader kills a worker that still overruns."""

from __future__ import annotations

import json
import sys

from pumsearch.search.grading import verify_answer


def main() -> None:
    import math_verify  # noqa: F401  (imported before saying ready, so answers are timed alone)

    print("ready", flush=True)
    for line in sys.stdin:
        prediction, reference = json.loads(line)
        try:
            reply = {"ok": verify_answer(prediction, reference)}
        except Exception as err:
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
