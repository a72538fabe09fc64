"""Learning curve of a testbed PUM: held-out pairwise accuracy against the number of labelled train
problems (and, with --beam, beam-search accuracy at one N on test chains).

The held-out problems are fixed: the ``--val-fraction`` side of the question-hash split over every
labelled problem (the split ``pumsearch pum train`` uses), so each point is measured on the same
pairs. A point trains on the pairs of the first P train-side problems (label-file order), with
the same pair and training settings at every point, then is scored on all held-out pairs.
Extra pair files (``--extra``, e.g. complete-trajectory-only labels) join every point's training
pairs in proportion (the first P/len(train problems) share of their train-side problems), never
its held-out pairs. With ``--labels-b`` (a second rollout draw of the same prefixes) the exact
"every step so far right" signal and the label ceiling are measured on the same held-out
preferences (bench_pum_pairs.py's definitions) and drawn as lines.

The parting world's horizontal PUM (benchmarks/RESULTS.md):

    python benchmarks/bench_pum_curve.py --labels labels_a.jsonl --labels-b labels_b.jsonl \\
        --no-vertical --no-ties --batch-order random --points 100,200,400,800,all \\
        --beam 16 --beam-spec parting,n=100 --beam-max-tokens 28 --out /tmp/curve-parting

    python benchmarks/bench_pum_curve.py --labels labels.jsonl --points 150,500,1000 \\
        --base testbed:strong --mode full --out /tmp/curve

Writes <out>/curve.json (one entry per point) and, per point, the checkpoint <out>/P/; with
``--plot``, the curve as a PNG. Listed points are (re)trained, the others in curve.json kept, so
``--points "" --plot curve.png`` only draws.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from bench_pum_pairs import agreement, completeness, exact_values, utilities

from pumsearch.pum.label import read_records
from pumsearch.pum.pairs import Pair, PairSettings, build_pairs, read_pairs
from pumsearch.pum.train import TrainSettings, is_held_out, train_pum


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train_side_order(pairs: list[Pair], fraction: float) -> list[str]:
    """Train-side questions in the order their problems first appear."""
    return list(dict.fromkeys(p.question for p in pairs if not is_held_out(p.question, fraction)))


def point_pairs(pairs: list[Pair], questions: set[str], fraction: float) -> list[Pair]:
    """The pairs of ``questions`` on the train side, and every held-out pair."""
    return [p for p in pairs if p.question in questions or is_held_out(p.question, fraction)]


async def beam_accuracy(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Beam search with the PUM on the test chains: accuracy per seed and pooled (± one SE)."""
    from pumsearch.api import asearch, resolve_scorer
    from pumsearch.backends import load_generator
    from pumsearch.strategies import search_config
    from pumsearch.testbed import testbed_problems

    problems = testbed_problems(args.beam_spec)
    generator = load_generator("testbed:weak")
    outcomes: list[float] = []
    per_seed = {}
    for seed in args.beam_seeds:
        config = search_config(strategy="beam", budget=args.beam, beam_width=4, temperature=0.8,
                               max_tokens=args.beam_max_tokens,
                               max_step_tokens=24, max_depth=40, seed=seed)
        scorer = resolve_scorer("pum", config, model=str(checkpoint))
        results = await asearch(problems, generator=generator, scorer=scorer, config=config)
        await scorer.aclose()
        correct = [float(bool(getattr(r, "correct", False))) for r in results]
        per_seed[seed] = sum(correct) / len(correct)
        outcomes += correct
    mean = sum(outcomes) / len(outcomes)
    se = (sum((x - mean) ** 2 for x in outcomes) / (len(outcomes) - 1) / len(outcomes)) ** 0.5
    return {"n": args.beam, "spec": args.beam_spec, "per_seed": per_seed, "accuracy": round(mean, 4),
            "se": round(se, 4)}


def reference_accuracy(pairs: list[Pair], records: list[dict[str, Any]], labels_b: Path | None,
                       fraction: float) -> dict[str, Any]:
    """The exact PRM (strict; ties half) and the label ceiling on the held-out preferences."""
    held = [p for p in pairs if p.label == 1.0 and is_held_out(p.question, fraction)]
    complete = completeness(records)
    exact = {}
    for pair in held:
        for text in (pair.a, pair.b):
            exact[(pair.problem_id, text)] = exact_values(pair.question, text, complete[(pair.problem_id, text)])[0]
    signals = {"exact_prm": exact}
    if labels_b is not None:
        signals["ceiling"] = utilities(read_records(labels_b))
    hits: dict[str, list[float]] = {"exact_prm": [], "exact_prm_half": [], "ceiling": []}
    for pair in held:
        a, b = (pair.problem_id, pair.a), (pair.problem_id, pair.b)
        for name, values in signals.items():
            hit = agreement(values, a, b)
            if hit is not None:
                hits[name].append(hit[0])
                if name == "exact_prm":
                    hits["exact_prm_half"].append(hit[1])
    return {"held_out_preferences": len(held),
            "accuracy": {name: {"all": round(sum(v) / len(v), 4)} for name, v in hits.items() if v}}


def plot_curve(curve: dict[str, Any], path: Path, reference: dict[str, Any] | None,
               beam_lines: dict[str, float]) -> None:
    """Held-out pairwise accuracy (left) and beam accuracy (right) against labelled train problems;
    ``reference`` (bench_pum_pairs.py's JSON) adds the exact PRM's pairwise accuracy and the label
    ceiling, ``beam_lines`` other methods' accuracy at the same N (measured elsewhere)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(curve["points"].values(), key=lambda e: e["train_problems"])
    xs = [e["train_problems"] for e in points]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(xs, [e["held_out_accuracy"] for e in points], marker="o", label="PUM")
    if reference is not None:
        for name, style in (("exact_prm", ":"), ("exact_prm_half", "-."), ("ceiling", "--")):
            value = reference["accuracy"].get(name, {}).get("all")
            if value is not None:
                axes[0].axhline(value, linestyle=style, color="grey", label=name)
    axes[0].set_ylabel("held-out pairwise accuracy")
    beams = [e for e in points if "beam" in e]
    if beams:
        axes[1].errorbar([e["train_problems"] for e in beams], [e["beam"]["accuracy"] for e in beams],
                         yerr=[e["beam"]["se"] for e in beams], marker="o", capsize=3, label="beam with the PUM")
        axes[1].set_ylabel(f"beam accuracy, N = {beams[0]['beam']['n']}")
    for (name, value), style in zip(beam_lines.items(), itertools.cycle((":", "-.", "--")), strict=False):
        axes[1].axhline(value, linestyle=style, color="grey", label=name)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("labelled train problems")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--labels-b", type=Path, default=None, help="a second rollout draw of the same prefixes "
                        "(the label ceiling)")
    parser.add_argument("--held-out-from", type=Path, default=None, help="a label file (default: --labels): only "
                        "its held-out problems are scored, so a point trained on a longer label file is measured "
                        "on the same pairs as the points before it")
    parser.add_argument("--extra", type=Path, action="append", default=[], help="extra pairs file (repeatable)")
    parser.add_argument("--points", required=True, help="train problems per point, e.g. 150,500,all")
    parser.add_argument("--base", default="testbed:strong")
    parser.add_argument("--mode", default="full")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--batch-pairs", type=int, default=32)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--min-confidence", type=float, default=0.9)
    parser.add_argument("--no-vertical", action="store_true", help="as pum pairs --no-vertical")
    parser.add_argument("--no-ties", action="store_true", help="as pum pairs --no-ties")
    parser.add_argument("--batch-order", default="problem", help="as pum train --batch-order")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--keep", default="last", help="last, or best (picks the epoch on the held-out pairs "
                        "it then reports: optimistic)")
    parser.add_argument("--beam", type=int, default=0, help="beam N on test chains per point (0: none)")
    parser.add_argument("--beam-spec", default="standard")
    parser.add_argument("--beam-seeds", type=ints, default=[0, 1, 2])
    parser.add_argument("--beam-max-tokens", type=int, default=96, help="token cap per solution (parting: 28)")
    parser.add_argument("--reference", type=Path, default=None, help="bench_pum_pairs.py JSON for the plot's lines")
    parser.add_argument("--plot", type=Path, default=None, help="write the curve plot here (PNG)")
    parser.add_argument("--beam-line", action="append", default=[], help="NAME=ACCURACY: a reference line "
                        "on the beam panel (e.g. the exact PRM's beam accuracy at the same N)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    pair_settings = PairSettings(margin=args.margin, min_confidence=args.min_confidence,
                                 vertical=not args.no_vertical, ties=not args.no_ties)
    records = read_records(args.labels)
    pairs, _ = build_pairs(records, pair_settings)
    if args.held_out_from is not None:
        scored = {r["problem"]["question"] for r in read_records(args.held_out_from)}
        pairs = [p for p in pairs if p.question in scored or not is_held_out(p.question, args.val_fraction)]
    extra = [p for path in args.extra for p in read_pairs(path)]
    order, extra_order = train_side_order(pairs, args.val_fraction), train_side_order(extra, args.val_fraction)
    settings = TrainSettings(mode=args.mode, epochs=args.epochs, lr=args.lr, head_lr=args.head_lr,
                             batch_pairs=args.batch_pairs, schedule=args.schedule, keep=args.keep,
                             batch_order=args.batch_order, val_fraction=args.val_fraction)
    store = args.out / "curve.json"
    curve = json.loads(store.read_text()) if store.exists() else {"points": {}}
    curve["settings"] = {"labels": str(args.labels), "extra": [str(p) for p in args.extra],
                         "train_problems_available": len(order), "pairs": vars(pair_settings),
                         "train": {k: v for k, v in vars(settings).items()}, "base": args.base}
    points = [len(order) if v.strip() == "all" else int(v) for v in args.points.split(",") if v.strip()]
    if args.labels_b is not None or ("reference" not in curve and points):  # stored with the next point trained
        curve["reference"] = reference_accuracy(pairs, records, args.labels_b, args.val_fraction)
        print("reference on the held-out preferences:", json.dumps(curve["reference"]))
    for point in points:
        if point > len(order):
            print(f"skipping {point}: only {len(order)} train-side problems are labelled")
            continue
        share = point / len(order)
        chosen = set(order[:point]) | set(extra_order[: round(share * len(extra_order))])
        selected = point_pairs(pairs, chosen, args.val_fraction) + [p for p in extra if p.question in chosen]
        started = time.perf_counter()
        from pumsearch.pum.cli import _resolve

        report = train_pum(selected, _resolve(args.base) or args.base, args.out / str(point), settings,
                           base_name=args.base, log=print)
        entry: dict[str, Any] = {"train_problems": point, "train_pairs": report.train_pairs,
                                 "held_out_pairs": report.val_pairs, "kept_epoch": report.kept_epoch,
                                 "held_out_accuracy": report.history[report.kept_epoch - 1]["val_accuracy"],
                                 "history": report.history, "train_seconds": round(time.perf_counter() - started)}
        if args.beam:
            entry["beam"] = asyncio.run(beam_accuracy(args.out / str(point), args))
        curve["points"][str(point)] = entry
        store.write_text(json.dumps(curve, indent=2) + "\n")
        print(json.dumps({k: v for k, v in entry.items() if k != "history"}))
    if args.plot is not None:
        reference = json.loads(args.reference.read_text()) if args.reference else curve.get("reference")
        lines = {name: float(value) for name, _, value in (line.rpartition("=") for line in args.beam_line)}
        plot_curve(curve, args.plot, reference, lines)


if __name__ == "__main__":
    main()
