#!/usr/bin/env bash
# Run the same sweeps with two builds of pumsearch and compare what they wrote (records, run
# configurations and keys, summaries, sweep.json, trees; wall times and timestamps left out), e.g.
# before and after a refactoring that must not change behaviour:
#
#   bash scripts/compare_builds.sh /path/to/old/venv/bin/pumsearch /path/to/new/venv/bin/pumsearch /tmp/cmp
#
# The sweeps: every built-in strategy at two budgets on the scripted backend (with and without a
# scorer) and on the CPU arithmetic testbed (policy testbed:weak, its exact PRM), and the tree-search
# flags of beam/DVTS and of MCTS (with the verifier as terminal reward, from a --config file).
set -euo pipefail
OLD=$1 NEW=$2 OUT=$3
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TESTBED=(--dataset testbed:small --model testbed:weak --limit 10 --max-tokens 96 --max-step-tokens 24
         --concurrency 16)
SWEEPS=(
  "scripted|sweep --backend scripted --dataset gsm8k --limit 10 --strategies bon,beam,dvts,mcts --budgets 4,8 --scorers verifier,none --max-tokens 64"
  "testbed|sweep ${TESTBED[*]} --strategies bon,beam,dvts,mcts --budgets 4,8 --scorers testbed-prm"
  "testbed-beam-flags|sweep ${TESTBED[*]} --strategies beam,dvts --budgets 4 --scorers testbed-prm --beam-width 2 --lookahead 1"
  "testbed-mcts-flags|sweep ${TESTBED[*]} --strategies mcts --budgets 4 --scorers testbed-prm --c-puct 1.5 --expansions 3 --mcts-parallel 2 --config $HERE/benchmarks/testbed/mcts_verifier_terminal.toml"
  "scripted-run|run --backend scripted --dataset gsm8k --limit 5 --strategy beam --scorer verifier --budget 4 --beam-width 2 --filter-duplicates --max-tokens 64"
)
status=0
for entry in "${SWEEPS[@]}"; do
  name=${entry%%|*} args=${entry#*|}
  for build in old new; do
    bin=$OLD; [ "$build" = new ] && bin=$NEW
    rm -rf "$OUT/$build/$name"
    # shellcheck disable=SC2086
    nice -n 10 "$bin" $args --out "$OUT/$build/$name" > "$OUT/$name.$build.log" 2>&1
  done
  echo "== $name"
  python "$HERE/scripts/compare_runs.py" "$OUT/old/$name" "$OUT/new/$name" --tree-attrs-dropped visits,value_sum \
    || status=1
done
exit $status
