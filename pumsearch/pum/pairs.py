"""Preference pairs from labelled prefixes (the PUM's training data).

Within one problem: a *vertical* pair is two prefixes of one trajectory (two cut lengths, or a cut
and the complete trajectory); a *horizontal* pair is two trajectories cut at the same length (two
complete trajectories count as horizontal at the length "end"). Horizontal pairs are *across
policies* when the trajectories come from different policy models.

Labels: a utility difference of at least ``margin`` makes a preference (the higher utility is ``a``,
label 1); a difference of at most ``tie_margin`` makes a tie (label 0.5), kept when ``ties`` is on;
anything between is too uncertain and dropped. Conflicts are filtered: ``duplicates`` drops pairs
whose two texts are identical, and groups of pairs over the same two texts whose labels disagree
(agreeing duplicates are kept once); ``students`` drops a preference that some student's own gain
contradicts; ``all`` does both; ``none`` neither.

Confidence (``min_confidence`` > 0): a preference is kept only when the rollouts make it likely.
Each prefix's rollouts are pooled over the students (x successes of n = students x k); a
complete prefix's rate is exact (its own graded answer). The confidence that ``a`` is better is
Phi(z) of a two-proportion z statistic with the Agresti-Caffo adjustment (one success and one
failure added to each open prefix, so 0/16 against 3/16 is not certain), and exact when both
prefixes are complete. The utility decides the label; the confidence only filters.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAIRS_FORMAT = "pumsearch-pum-pairs"
CONFLICT_MODES = ("duplicates", "students", "all", "none")


class PairError(ValueError):
    """Bad pair-building input (the message says what to fix)."""


@dataclass(frozen=True)
class PairSettings:
    margin: float = 0.5
    tie_margin: float = 0.0
    ties: bool = True
    vertical: bool = True
    horizontal: bool = True
    across_policies: bool = True
    conflicts: str = "duplicates"
    min_confidence: float = 0.0  # keep a preference only when Phi(z) of its rollouts reaches this

    def __post_init__(self) -> None:
        if self.conflicts not in CONFLICT_MODES:
            raise PairError(f"unknown --conflicts {self.conflicts!r}: use one of {', '.join(CONFLICT_MODES)}")
        if self.margin < 0 or self.tie_margin < 0:
            raise PairError("--margin and --tie-margin must be >= 0")
        if not 0 <= self.min_confidence < 1:
            raise PairError(f"--min-confidence is a probability in [0, 1) (got {self.min_confidence})")
        if self.ties and self.tie_margin >= self.margin and self.margin > 0:
            raise PairError(f"--tie-margin ({self.tie_margin}) must be below --margin ({self.margin})")


@dataclass
class Pair:
    problem_id: str
    question: str
    a: str  # the preferred prefix (for a tie, just the first)
    b: str
    label: float  # 1.0: a is better; 0.5: a tie
    kind: str  # vertical | horizontal
    across_policies: bool
    utility_a: float
    utility_b: float
    gains_a: list[float]
    gains_b: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"format": PAIRS_FORMAT, **asdict(self)}


def candidate_pairs(record: dict[str, Any], settings: PairSettings) -> Iterable[tuple[dict, dict, str, bool]]:
    """(prefix, prefix, kind, across) for every vertical and horizontal combination of a record."""
    prefixes = record["prefixes"]
    policy_of = [t["policy"] for t in record["trajectories"]]
    for p, q in itertools.combinations(prefixes, 2):
        if p["trajectory"] == q["trajectory"]:
            if settings.vertical:
                yield p, q, "vertical", False
            continue
        same_length = (p["complete"] and q["complete"]) or (
            not p["complete"] and not q["complete"] and p["length"] == q["length"])
        across = policy_of[p["trajectory"]] != policy_of[q["trajectory"]]
        if same_length and settings.horizontal and (settings.across_policies or not across):
            yield p, q, "horizontal", across


def label_pair(p: dict, q: dict, settings: PairSettings) -> float | None:
    """1.0 when p is better by at least the margin, 0.0 when q is, 0.5 for a tie, None when the
    difference is too uncertain (or a tie and ties are off)."""
    diff = p["utility"] - q["utility"]
    if abs(diff) <= settings.tie_margin:
        return 0.5 if settings.ties else None
    if abs(diff) >= settings.margin:
        return 1.0 if diff > 0 else 0.0
    return None


def rollouts_per_prefix(record: dict[str, Any]) -> list[int]:
    """k of each student: its rollouts spread over the open prefixes and the empty one."""
    open_prefixes = sum(not p["complete"] for p in record["prefixes"])
    return [round(s["rollouts"] / (open_prefixes + 1)) for s in record["cost"]["students"]]


def pooled_rate(prefix: dict, k: Sequence[int]) -> tuple[float, float]:
    """(rate, variance) of a prefix's solve rate pooled over the students: exact (variance 0) for a
    complete prefix, else Agresti-Caffo adjusted (x + 1) / (n + 2)."""
    if prefix["complete"]:
        return prefix["solve_rates"][0], 0.0
    successes = sum(rate * n for rate, n in zip(prefix["solve_rates"], k, strict=True))
    n = sum(k)
    rate = (successes + 1) / (n + 2)
    return rate, rate * (1 - rate) / (n + 2)


def preference_confidence(better: dict, worse: dict, k: Sequence[int]) -> float:
    """Phi(z) that ``better`` has the higher pooled solve rate (1 or 0 when both are exact)."""
    (rate_b, var_b), (rate_w, var_w) = pooled_rate(better, k), pooled_rate(worse, k)
    if var_b + var_w == 0:
        return 1.0 if rate_b > rate_w else 0.0
    z = (rate_b - rate_w) / math.sqrt(var_b + var_w)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def students_disagree(better: dict, worse: dict) -> bool:
    """Some student's own gain says the other prefix is better."""
    return any(gb < gw for gb, gw in zip(better["gains"], worse["gains"], strict=True))


def build_pairs(records: Sequence[dict[str, Any]], settings: PairSettings) -> tuple[list[Pair], dict[str, Any]]:
    """All pairs of all records, filtered, with counts per kind and per reason for dropping."""
    counts: Counter[str] = Counter()
    kept: list[Pair] = []
    for record in records:
        problem = record["problem"]
        k = rollouts_per_prefix(record) if settings.min_confidence > 0 else []
        groups: dict[tuple[str, str], list[Pair]] = {}
        for p, q, kind, across in candidate_pairs(record, settings):
            counts["candidates"] += 1
            label = label_pair(p, q, settings)
            if label is None:
                counts["dropped_margin"] += 1
                continue
            better, worse = (q, p) if label == 0.0 else (p, q)
            if label != 0.5 and settings.conflicts in ("students", "all") and students_disagree(better, worse):
                counts["dropped_student_conflict"] += 1
                continue
            if label != 0.5 and settings.min_confidence > 0 and \
                    preference_confidence(better, worse, k) < settings.min_confidence:
                counts["dropped_confidence"] += 1
                continue
            pair = Pair(str(problem["id"]), problem["question"], better["text"], worse["text"],
                        0.5 if label == 0.5 else 1.0, kind, across, better["utility"], worse["utility"],
                        list(better["gains"]), list(worse["gains"]))
            groups.setdefault(tuple(sorted((pair.a, pair.b))), []).append(pair)  # type: ignore[arg-type]
        for (text_a, text_b), group in groups.items():
            kept.extend(_resolve_group(text_a == text_b, group, settings, counts))
    return kept, summarise(kept, counts)


def _resolve_group(identical: bool, group: list[Pair], settings: PairSettings, counts: Counter[str]) -> list[Pair]:
    if settings.conflicts not in ("duplicates", "all"):
        return group
    if identical:  # the same text cannot be better than itself, and a tie with itself teaches nothing
        counts["dropped_identical"] += len(group)
        return []
    verdicts = {(p.a, p.label) if p.label != 0.5 else ("tie", 0.5) for p in group}
    if len(verdicts) > 1:
        counts["dropped_conflict"] += len(group)
        return []
    counts["dropped_duplicate"] += len(group) - 1
    return group[:1]


def summarise(pairs: Sequence[Pair], counts: Counter[str]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    for pair in pairs:
        name = f"{pair.kind}_across" if pair.across_policies else f"{pair.kind}_within"
        entry = by_kind.setdefault(name, {"preferences": 0, "ties": 0})
        entry["ties" if pair.label == 0.5 else "preferences"] += 1
    return {"pairs": len(pairs), "ties": sum(p.label == 0.5 for p in pairs), "by_kind": by_kind, **dict(counts)}


def write_pairs(pairs: Sequence[Pair], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_pairs(path: Path) -> list[Pair]:
    if not path.is_file():
        raise PairError(f"pairs file {path} does not exist: run `pumsearch pum pairs` first")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row.pop("format", None)
            pairs.append(Pair(**row))
        except (json.JSONDecodeError, TypeError) as err:
            raise PairError(f"{path}:{number} is not a pair line ({err})") from None
    return pairs
