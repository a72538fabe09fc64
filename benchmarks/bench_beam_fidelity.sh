#!/usr/bin/env bash
# Beam search and DVTS before and after they took search-and-learn's semantics (issue 13 item 4),
# on the arithmetic testbed: the weak policy, the exact PRM, 100 test chains, seeds 0-2, N = 4, 16,
# 64 (DVTS, sort_completed and the early stop: seed 0 only). "old" runs the code of $OLD_REV (the
# beam loop before the change, unpacked with git archive); every other configuration runs this
# checkout. OLD_REV must sample as this checkout does: the figures in benchmarks/RESULTS.md ran at
# b57bf34 with OLD_REV=9f2f088; since issue 17's sampler (merged at 7ab9930) use 2610851.
# "testbed" reruns the testbed sweeps of benchmarks/bench_testbed_sweeps.sh that the change moves
# (200 chains, seed 0: beam at every N, Best-of-N, DVTS), "testbed-old" the beam of $OLD_REV and
# "boxed" beam with --no-stop-at-boxed at the same settings; "votes" recounts the Best-of-N
# majority under the vote rule before issue 13. Results: benchmarks/RESULTS.md ("Beam search and
# DVTS against search-and-learn") and benchmarks/results/testbed/issue13-*. Run from the
# repository root; runs go to $RUNS.
#
#   bash benchmarks/bench_beam_fidelity.sh [STEP]...   (STEP: old new dedup sorted early boxed depth
#        testbed testbed-old votes report compare; all of them in that order by default)
set -euo pipefail
RUNS=${RUNS:-/tmp/beam-fidelity}
OLD_REV=${OLD_REV:-2610851}
export OMP_NUM_THREADS=1
COMMON=(--dataset testbed:standard,n=100 --model testbed:weak --temperature 0.8 --max-tokens 96
        --max-step-tokens 24 --concurrency 64 --scorers testbed-prm)
GRID=(--seeds 0,1,2 --budgets 4,16,64)

sweep() {  # sweep CODE_DIR OUT_NAME ARGS...: one sweep with the pumsearch of CODE_DIR
  local code=$1 out=$2
  shift 2
  # from CODE_DIR: `python -m` puts the working directory first on the import path
  (cd "$code" && nice -n 10 python -m pumsearch.cli sweep "${COMMON[@]}" "$@" --out "$RUNS/$out")
}
grid() { local code=$1 out=$2; shift 2; sweep "$code" "$out" "${GRID[@]}" "$@"; }

unpack_old() {
  rm -rf "$RUNS/code-old" && mkdir -p "$RUNS/code-old"
  git archive "$OLD_REV" | tar -x -C "$RUNS/code-old"
}
old() {
  unpack_old
  grid "$RUNS/code-old" old --strategies beam
  sweep "$RUNS/code-old" old --strategies dvts --seeds 0 --budgets 4,16,64
}
new() {
  grid "$PWD" new --strategies beam
  sweep "$PWD" new --strategies dvts --seeds 0 --budgets 4,16,64
}
dedup() { grid "$PWD" dedup --strategies beam --filter-duplicates; }
# seed 0 only (the machine is shared): the returned set differs, or only the compute does
sorted() {
  sweep "$PWD" sorted --seeds 0 --budgets 4,16,64 --strategies beam --strategy-option sort_completed=true
}
early() {
  sweep "$PWD" early --seeds 0 --budgets 4,16,64 --strategies beam --strategy-option stop_when_n_finished=true
}
# the settings of benchmarks/bench_testbed_sweeps.sh main: 200 chains, seed 0
TESTBED=(--dataset testbed:standard --model testbed:weak --temperature 0.8 --max-tokens 96 --max-step-tokens 24
         --seeds 0 --concurrency 64 --scorers testbed-prm)
testbed() {
  local run=(nice -n 10 python -m pumsearch.cli sweep "${TESTBED[@]}")
  "${run[@]}" --strategies beam --budgets 4,8,16,32,64 --out "$RUNS/testbed-beam"
  "${run[@]}" --strategies bon --budgets 1,2,4,8,16,32,64 --out "$RUNS/testbed-bon"  # one N=64 run, read off
  "${run[@]}" --strategies dvts --budgets 4,8,16,32,64 --out "$RUNS/testbed-dvts"   # one N=64 run, read off
}
boxed() {  # search-and-learn's rule for beams (a \boxed{} answer does not end one), testbed settings
  nice -n 10 python -m pumsearch.cli sweep "${TESTBED[@]}" --strategies beam --budgets 4,8,16,64 --no-stop-at-boxed \
      --out "$RUNS/testbed-beam-boxed"
}
testbed_old() {
  unpack_old
  (cd "$RUNS/code-old" && nice -n 10 python -m pumsearch.cli sweep "${TESTBED[@]}" --strategies beam \
      --budgets 4,8,16,64 --out "$RUNS/testbed-beam-old")
}
depth() {  # where the depth cap binds: 4 steps, with and without the last round's roll-out
  local d=(--max-depth 4 --budgets 16 --seeds 0)
  sweep "$PWD" depth-to-end --strategies beam,dvts "${d[@]}"
  sweep "$PWD" depth-capped --strategies beam,dvts "${d[@]}" --strategy-option last_round_to_end=false
}
compare() {  # compare A B: per-problem paired differences of beam runs (accuracy, tokens) at each N
  python - "$RUNS/$1" "$RUNS/$2" <<'PY'
import json, math, pathlib, sys

def records(sweep):
    out = {}
    for path in pathlib.Path(sweep).glob("beam-*/records.jsonl"):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            out[(r["budget"], r["seed"], r["problem_id"])] = r
    return out

a, b = records(sys.argv[1]), records(sys.argv[2])
for budget in sorted({k[0] for k in a} & {k[0] for k in b}):
    keys = sorted(k for k in a.keys() & b.keys() if k[0] == budget)
    diff = [float(b[k]["correct"]) - float(a[k]["correct"]) for k in keys]
    mean = sum(diff) / len(diff)
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff))
    tokens = [sum(r[k]["counters"]["generated_tokens"] for k in keys) / len(keys) for r in (a, b)]
    same = sum(a[k]["prediction"] == b[k]["prediction"] for k in keys)
    print(f"N={budget:3d} n={len(keys)} acc {mean:+.3f} +- {se:.3f} (paired)  "
          f"tokens {tokens[0]:.0f} -> {tokens[1]:.0f} ({tokens[1] / tokens[0]:.2f}x)  same prediction {same}")
PY
}
votes() {  # majority of the testbed Best-of-N records by vote class (now) and by exact string with
  # empty answers voting (the rule before issue 13 items 1-2), first n samples, ties to the first seen
  python - "$RUNS/testbed-bon" <<'PY'
import collections, json, pathlib, sys

records = [json.loads(line) for path in pathlib.Path(sys.argv[1]).glob("bon-*/records.jsonl")
           for line in path.read_text().splitlines()]

def majority(candidates, key):
    count, first = collections.Counter(), {}
    for i, c in enumerate(candidates):
        if key(c) is not None:
            count[key(c)] += 1
            first.setdefault(key(c), (i, c))
    return first[max(count, key=lambda k: (count[k], -first[k][0]))][1] if count else None

rules = {"classes, no empty vote": lambda c: None if c["answer"] is None else c["vote_class"],
         "strings, empty votes": lambda c: (c["answer"] or "").strip()}
for n in (1, 2, 4, 8, 16, 32, 64):
    cands = [[c for g in r["subsample"]["groups"][:n] for c in g["candidates"]] for r in records]
    acc = {name: sum(bool(w and w["answer"] and w["correct"]) for w in (majority(c, key) for c in cands))
           / len(records) for name, key in rules.items()}
    print(f"N={n:2d} " + "  ".join(f"{name} {a:.3f}" for name, a in acc.items()))
PY
}
report() {
  for name in old new dedup sorted early depth-to-end depth-capped testbed-beam testbed-bon \
      testbed-dvts testbed-beam-old testbed-beam-boxed; do
    if [ -d "$RUNS/$name" ]; then
      COLUMNS=170 python -m pumsearch.cli report "$RUNS/$name" --no-plots --json "$RUNS/$name/report.json" \
          > "$RUNS/$name/report.txt"
    fi
  done
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(old new dedup sorted early boxed depth testbed testbed-old votes report compare)
for step in "${steps[@]}"; do
  case $step in
    old|new|dedup|sorted|early|boxed|depth|testbed|votes|report) "$step" ;;
    testbed-old) testbed_old ;;
    compare) compare old new; compare new dedup; compare new sorted; compare new early
             compare testbed-beam-old testbed-beam; compare testbed-beam testbed-beam-boxed ;;
    *) echo "unknown step $step: use old, new, dedup, sorted, early, boxed, depth, testbed, testbed-old," \
            "votes, report or compare" >&2
       exit 2 ;;
  esac
done
