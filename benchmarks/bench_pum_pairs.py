"""Held-out pairwise accuracy of testbed PUMs beside the exact signals and the label ceiling.

On the preference pairs (ties left out) of the held-out problems (the same split by a hash of the
question as ``pumsearch pum train --val-fraction``), for each pair (a preferred to b by its rollout utility):

- ``pum:NAME``: the share the PUM checkpoint scores strictly higher on a;
- ``exact_prm``: the exact "every step so far right" signal (testbed-prm, 1 or 0) strictly higher
  on a (equal values count as a miss, as for the PUM), and ``exact_prm_half`` with ties counted 1/2;
- ``exact_progress``: right so far *and further along* (the count of operations applied while no
  step is wrong, -1 once one is), strictly higher on a: a hand-made utility that knows the chain;
- ``ceiling``: a second, independent draw of the same prefixes' rollouts (``--labels-b``, labelled
  with ``pum label --rollout-seed``) orders the pair the same way (strictly; ``ceiling_half``
  counts its ties 1/2). No scorer can agree with the labels much more often than the labels agree
  with themselves.

Every figure is also broken down by pair kind (vertical, horizontal, complete: both prefixes
finished solutions) and over the ``detour`` pairs: both prefixes right so far and exactly one with
a detour, the pairs the exact PRM ties (its blind spot; in the ``parting`` world a detour costs the
answer). ``detour_free`` there is the share of those pairs whose preferred prefix is the one
without the detour. Writes JSON to --out.

    python benchmarks/bench_pum_pairs.py --labels A.jsonl --labels-b B.jsonl --pum final=pumsearch/testbed/pum \\
        --margin 0.5 --min-confidence 0.9 --val-fraction 0.2 --out benchmarks/results/pum/pairs.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pumsearch.pum.label import read_records
from pumsearch.pum.pairs import Pair, PairSettings, build_pairs
from pumsearch.pum.train import is_held_out
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from pumsearch.testbed.scorers import judge_steps
from pumsearch.testbed.tasks import parse_question

DELIMITER = "\n\n"


def exact_values(question: str, text: str, complete: bool) -> tuple[float, int, bool]:
    """(right so far: 1 or 0, operations applied while right or -1, has a detour) of a prefix of a
    testbed chain."""
    chain = parse_question(question)
    assert chain is not None, question
    labels, state = judge_steps(text.split(DELIMITER) if text else [], chain)
    right = "wrong" not in labels and (state.answered or not complete)
    return float(right), (state.next_op + state.answered if right else -1), "detour" in labels


def completeness(records: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """(problem id, prefix text) -> whether that prefix is a finished solution."""
    return {(str(r["problem"]["id"]), p["text"]): p["complete"] for r in records for p in r["prefixes"]}


def agreement(values: dict[tuple[str, str], float], a: tuple[str, str], b: tuple[str, str]
              ) -> tuple[float, float] | None:
    """Whether a signal ranks the preferred prefix a above b: (strictly, with a tie counted 1/2);
    None when the signal lacks either prefix."""
    if a not in values or b not in values:
        return None
    strict = float(values[a] > values[b])
    return strict, strict + 0.5 * (values[a] == values[b])


def pair_kind(pair: Pair, complete: dict[tuple[str, str], bool]) -> str:
    if complete[(pair.problem_id, pair.a)] and complete[(pair.problem_id, pair.b)]:
        return "complete"
    return pair.kind


def is_detour_pair(a: tuple[float, int, bool], b: tuple[float, int, bool]) -> bool:
    """Both right so far, exactly one with a detour: the exact PRM scores them alike."""
    return a[0] == b[0] == 1.0 and a[2] != b[2]


def utilities(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Mean utility per (problem, prefix text): identical texts share one estimate."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in records:
        for prefix in record["prefixes"]:
            sums[(str(record["problem"]["id"]), prefix["text"])].append(prefix["utility"])
    return {key: sum(v) / len(v) for key, v in sums.items()}


async def pum_scores(path: str, keys: list[tuple[str, str]], questions: dict[str, str],
                     complete: dict[tuple[str, str], bool]) -> dict[tuple[str, str], float]:
    from pumsearch.scorers import load_scorer

    scorer = load_scorer("pum", model=path)
    items = [ScoreItem(Problem(pid, questions[pid]), tuple(text.split(DELIMITER)) if text else (),
                       complete=complete[(pid, text)]) for pid, text in keys]
    values = [float(s.value) for s in await scorer.score(items)]
    await scorer.aclose()
    return dict(zip(keys, values, strict=True))


def share(hits: list[float]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


async def main_async(args: argparse.Namespace) -> None:
    records = read_records(args.labels)
    settings = PairSettings(margin=args.margin, tie_margin=args.tie_margin, min_confidence=args.min_confidence,
                            conflicts=args.conflicts)
    pairs, summary = build_pairs(records, settings)
    held = [p for p in pairs if p.label == 1.0 and is_held_out(p.question, args.val_fraction)]
    questions = {str(r["problem"]["id"]): r["problem"]["question"] for r in records}
    complete = completeness(records)
    keys = sorted({(p.problem_id, t) for p in held for t in (p.a, p.b)})
    signals: dict[str, dict[tuple[str, str], float]] = {}
    exact = {key: exact_values(questions[key[0]], key[1], complete[key]) for key in keys}
    signals["exact_prm"] = {k: v[0] for k, v in exact.items()}
    signals["exact_progress"] = {k: float(v[1]) for k, v in exact.items()}
    signals["detour_free"] = {k: float(not v[2]) for k, v in exact.items()}
    for spec in args.pum:
        name, _, path = spec.rpartition("=")
        signals[f"pum:{name or path}"] = await pum_scores(path, keys, questions, complete)
    if args.labels_b is not None:
        signals["ceiling"] = utilities(read_records(args.labels_b))
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for pair in held:
        kind = pair_kind(pair, complete)
        a, b = (pair.problem_id, pair.a), (pair.problem_id, pair.b)
        groups = ("all", kind, "detour") if is_detour_pair(exact[a], exact[b]) else ("all", kind)
        for name, values in signals.items():
            hit = agreement(values, a, b)
            if hit is None or (name == "detour_free" and "detour" not in groups):
                continue
            strict, half = hit
            for group in ("detour",) if name == "detour_free" else groups:
                table[name][group].append(strict)
                if name in ("exact_prm", "ceiling"):
                    table[f"{name}_half"][group].append(half)
    kinds = ["all", "vertical", "horizontal", "complete", "detour"]
    out = {
        "labels": str(args.labels), "labels_b": str(args.labels_b) if args.labels_b else None,
        "pair_settings": vars(settings), "val_fraction": args.val_fraction, "pairs": summary,
        "held_out_preferences": {k: len(table["exact_prm"][k]) for k in kinds},
        "accuracy": {name: {k: share(groups[k]) for k in kinds} for name, groups in table.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    width = max(len(n) for n in out["accuracy"])
    print(f"{'signal':{width}}  " + "  ".join(f"{k:>10}" for k in kinds))
    print(f"{'pairs':{width}}  " + "  ".join(f"{out['held_out_preferences'][k]:>10}" for k in kinds))
    for name, row in out["accuracy"].items():
        print(f"{name:{width}}  " + "  ".join(f"{row[k] if row[k] is not None else '-':>10}" for k in kinds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--labels-b", type=Path, default=None, help="a second rollout draw of the same prefixes")
    parser.add_argument("--pum", action="append", default=[], help="NAME=CHECKPOINT (repeatable)")
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--tie-margin", type=float, default=0.0)
    parser.add_argument("--min-confidence", type=float, default=0.0)
    parser.add_argument("--conflicts", default="duplicates")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
