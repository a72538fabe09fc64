"""Regenerate the shipped testbed policies' cards from `pumsearch testbed evaluate`, so no number on a
card (or in docs/testbed.md's table of them) is ever written by hand.

    python scripts/testbed_cards.py            # both policies: DATA_CARD.md, evaluation.json, docs table
    python scripts/testbed_cards.py --check    # exit 1 if a card differs from what the command measures

For each policy this runs `pumsearch testbed evaluate testbed:NAME --spec standard --spec easy
--spec hard --card NAME --threads 1` (one thread: the numbers do not depend on the machine's
cores), which writes the card and evaluation.json beside the policy, then rewrites the table of
docs/testbed.md between its markers from those evaluation.json files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "pumsearch" / "testbed" / "policies"
DOCS = REPO / "docs" / "testbed.md"
NAMES = ("weak", "strong")
SPECS = ("standard", "easy", "hard")
BEGIN = "<!-- the table below is written by scripts/testbed_cards.py -->"
END = "<!-- end of the table written by scripts/testbed_cards.py -->"
HEADER = ["| policy | training | greedy | sample acc (T=0.8) | pass@8 | majority@8 |", "|---|---|---|---|---|---|"]


def evaluate(name: str) -> None:
    specs = [arg for spec in SPECS for arg in ("--spec", spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "pumsearch.cli", "testbed", "evaluate", f"testbed:{name}", *specs,
                    "--card", name, "--threads", "1"], cwd=REPO, env=env, check=True)


def docs_rows() -> list[str]:
    """One row per policy on the `standard` chains, from its training.json and evaluation.json."""
    rows = []
    for name in NAMES:
        training = json.loads((POLICIES / name / "training.json").read_text())
        standard = next(r for r in json.loads((POLICIES / name / "evaluation.json").read_text())
                        if r["spec"] == "standard")
        k = standard["samples"]
        rows.append(f"| {name} | {training['steps']:,} steps ({training['seconds']:.0f} s) | "
                    f"{standard['greedy_accuracy']:.3f} | {standard['sample_accuracy']:.3f} | "
                    f"{standard[f'pass@{k}']:.3f} | {standard[f'majority@{k}']:.3f} |")
    return rows


def rewrite_docs() -> None:
    text = DOCS.read_text()
    head, found, rest = text.partition(BEGIN + "\n")
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{DOCS} lacks the markers {BEGIN!r} and {END!r}")
    DOCS.write_text(head + BEGIN + "\n" + "\n".join([*HEADER, *docs_rows()]) + "\n" + END + tail)


def snapshot() -> dict[str, str]:
    paths = [POLICIES / n / f for n in NAMES for f in ("DATA_CARD.md", "evaluation.json")] + [DOCS]
    return {str(p): p.read_text() for p in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Measure, restore the files, exit 1 on a difference.")
    args = parser.parse_args()
    before = snapshot()
    for name in NAMES:
        evaluate(name)
    rewrite_docs()
    if args.check:
        after = snapshot()
        changed = [path for path in before if before[path] != after[path]]
        for path, text in before.items():
            Path(path).write_text(text)
        if changed:
            raise SystemExit(f"out of date (rerun without --check): {', '.join(changed)}")
    print("cards and docs/testbed.md match `pumsearch testbed evaluate`")


if __name__ == "__main__":
    main()
