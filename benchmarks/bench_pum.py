"""PUM training cost and quality: labelling calls and tokens per pair (vs the paper's 6.72M student
calls for ~280K pairs), and held-out pairwise accuracy per epoch.

    nice python benchmarks/bench_pum.py --dataset testbed:ops=3-4,n=200,split=train,seed=1 \
        --policy testbed:strong --students testbed:weak,testbed:strong --base testbed:strong \
        --out benchmarks/results/pum/testbed

Runs label -> pairs -> train with the library functions (labelling resumes if the labels file
exists) and writes <out>/summary.json. torch uses one thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

PAPER_CALLS = 6_720_000
PAPER_PAIRS = 280_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--policy", required=True, help="comma-separated policy models")
    parser.add_argument("--students", required=True, help="comma-separated student models")
    parser.add_argument("--base", required=True, help="base model of the PUM")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--mode", default="lora")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=8, help="problems per labelling engine run")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from pumsearch.pum.cli import _load_generators, _resolve
    from pumsearch.pum.label import LabelSettings, label_to_file, load_problems, read_records
    from pumsearch.pum.pairs import PairSettings, build_pairs, write_pairs
    from pumsearch.pum.train import TrainSettings, train_pum

    args.out.mkdir(parents=True, exist_ok=True)
    labels = args.out / "labels.jsonl"
    settings = LabelSettings(trajectories=args.trajectories, cuts=args.cuts, rollouts=args.rollouts,
                             max_tokens=args.max_tokens)
    started = time.perf_counter()
    policies = _load_generators(args.policy.split(","), "cpu", "float32")
    students = _load_generators(args.students.split(","), "cpu", "float32")
    asyncio.run(label_to_file(load_problems(args.dataset, args.limit), policies, students, settings, labels,
                              chunk=args.chunk))
    label_seconds = time.perf_counter() - started
    records = read_records(labels)
    pairs, pair_summary = build_pairs(records, PairSettings(margin=args.margin))
    write_pairs(pairs, args.out / "pairs.jsonl")
    rollouts = sum(s["rollouts"] for r in records for s in r["cost"]["students"])
    tokens = sum(s["generated_tokens"] for r in records for s in r["cost"]["students"])
    base = _resolve(args.base)
    train_settings = TrainSettings(mode=args.mode, epochs=args.epochs, val_fraction=args.val_fraction, lr=args.lr,
                                   head_lr=args.head_lr, batch_pairs=args.batch_pairs, lora_r=args.lora_r,
                                   lora_alpha=2 * args.lora_r)
    report = train_pum(pairs, base or "", args.out / "model", train_settings, base_name=args.base, log=print)
    summary = {
        "command": "python benchmarks/bench_pum.py " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                  for k, v in vars(args).items() if v is not None),
        "problems": len(records),
        "prefixes": sum(len(r["prefixes"]) for r in records),
        "student_rollouts": rollouts,
        "student_generated_tokens": tokens,
        "policy_samples": sum(r["cost"]["policy_samples"] for r in records),
        "pairs": pair_summary,
        "rollouts_per_pair": rollouts / max(len(pairs), 1),
        "tokens_per_pair": tokens / max(len(pairs), 1),
        "paper_calls_per_pair": PAPER_CALLS / PAPER_PAIRS,
        "label_seconds_this_run": round(label_seconds, 1),
        "train": {"pairs": report.train_pairs, "held_out": report.val_pairs, "history": report.history,
                  "seconds": round(report.seconds, 1)},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "train"}, indent=2, default=str))


if __name__ == "__main__":
    main()
