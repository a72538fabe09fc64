#!/usr/bin/env bash
# Beam search and DVTS before and after they took search-and-learn's semantics (issue 13 item 4),
# on the arithmetic testbed: the weak policy, the exact PRM, 100 test chains, seeds 0-2, N = 4, 16,
# 64 (DVTS, sort_completed and the early stop: seed 0 only). "old" runs the code of $OLD_REV (the
# commit before the change, unpacked with git archive); every other configuration runs this
# checkout. "headline" reruns the README's beam row (200 chains, seed 0). Results:
# benchmarks/RESULTS.md ("Beam search and DVTS against search-and-learn"). Run from the repository
# root; runs go to $RUNS.
#
#   bash benchmarks/bench_beam_fidelity.sh [old|new|dedup|sorted|early|boxed|depth|headline|report|compare]...
set -euo pipefail
RUNS=${RUNS:-/tmp/beam-fidelity}
OLD_REV=${OLD_REV:-9f2f088}
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

old() {
  rm -rf "$RUNS/code-old" && mkdir -p "$RUNS/code-old"
  git archive "$OLD_REV" | tar -x -C "$RUNS/code-old"
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
boxed() { grid "$PWD" boxed --strategies beam --no-stop-at-boxed; }  # search-and-learn's rule for beams
headline() {  # the README row: 200 chains, seed 0, as benchmarks/bench_testbed_sweeps.sh runs them
  nice -n 10 python -m pumsearch.cli sweep --dataset testbed:standard --model testbed:weak --temperature 0.8 \
      --max-tokens 96 --max-step-tokens 24 --seeds 0 --concurrency 64 --scorers testbed-prm \
      --strategies beam --budgets 4,16,64 --out "$RUNS/headline"
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
report() {
  for name in old new dedup sorted early boxed depth-to-end depth-capped headline; do
    if [ -d "$RUNS/$name" ]; then
      COLUMNS=170 python -m pumsearch.cli report "$RUNS/$name" --no-plots --json "$RUNS/$name/report.json" \
          > "$RUNS/$name/report.txt"
    fi
  done
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(old new dedup sorted early boxed depth headline report compare)
for step in "${steps[@]}"; do
  case $step in
    old|new|dedup|sorted|early|boxed|depth|headline|report) "$step" ;;
    compare) compare old new; compare new dedup; compare new sorted; compare new early; compare new boxed ;;
    *) echo "unknown step $step: use old, new, dedup, sorted, early, boxed, depth, headline, report or compare" >&2
       exit 2 ;;
  esac
done
