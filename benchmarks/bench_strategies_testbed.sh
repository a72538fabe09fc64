#!/usr/bin/env bash
# Particle filtering, REBASE and adaptive Best-of-N against beam search and Best-of-N on the arithmetic
# testbed (weak policy, 200 test chains of testbed:standard, T = 0.8, at most 96 tokens per solution
# and 24 per step), at equal generated tokens. Results: benchmarks/results/strategies/ (see
# benchmarks/RESULTS.md). Run from the repository root; runs go to $RUNS (not in git: the trees are
# large); rerunning resumes.
#
#   bash benchmarks/bench_strategies_testbed.sh [main|variants|report]...
#
# main: for each seed (0, 1, 2), particles, REBASE and beam with the exact PRM at N = 4..64 (one
# run per N: none of them can be read off a larger run), Best-of-N with the exact PRM (one run at
# 64; majority, best and weighted read off for every N) and adaptive Best-of-N without a scorer (one
# run at cap 64, smaller caps read off). variants: the options of particle filtering and REBASE, and
# the other stop rules, at N = 16 and 64, seed 0 (VARIANT_SEEDS and VARIANT_BUDGETS change that;
# RESULTS.md adds seed 1 at N = 16); beam with --filter-duplicates is bench_beam_fidelity.sh's.
# report: one `pumsearch report` over everything, the summary and the analysis of where the step
# searches spend their expansions.
set -euo pipefail
RUNS=${RUNS:-/tmp/strategies-testbed}
RESULTS=${RESULTS:-benchmarks/results/strategies}
SEEDS=${SEEDS:-0,1,2}
VARIANT_SEEDS=${VARIANT_SEEDS:-0}
VARIANT_BUDGETS=${VARIANT_BUDGETS:-16,64}
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's pumsearch, also for benchmarks/*.py
COMMON=(--dataset testbed:standard --model testbed:weak --temperature 0.8 --max-tokens 96
        --max-step-tokens 24 --concurrency 64)
PYTHON=${PYTHON:-python}  # the interpreter that has pumsearch's dependencies
PUMSEARCH=(nice -n 10 "$PYTHON" -m pumsearch.cli)

main() {
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$SEEDS" --strategies particles,rebase \
      --budgets 4,8,16,32,64 --scorers testbed-prm --out "$RUNS/main"
  # beam with search-and-learn's loop (the default since issue 13; RESULTS.md also keeps the rows
  # of the loop before it, run by this script's earlier version into $RUNS/main)
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$SEEDS" --strategies beam \
      --budgets 4,8,16,32,64 --scorers testbed-prm --out "$RUNS/beam"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$SEEDS" --strategies bon --budgets 4,8,16,32,64 \
      --scorers testbed-prm --out "$RUNS/main"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$SEEDS" --strategies bon --adaptive --budgets 4,8,16,32,64 \
      --scorers none --out "$RUNS/adaptive-beta"
}

variants() {
  local v=(--seeds "$VARIANT_SEEDS" --budgets "$VARIANT_BUDGETS" --scorers testbed-prm)
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies particles --resampling systematic \
      --out "$RUNS/particles-systematic"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies particles --resample-finished \
      --out "$RUNS/particles-resample-finished"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies particles --ess-threshold 0.5 \
      --out "$RUNS/particles-ess"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies particles --particle-iterations 2 \
      --out "$RUNS/particles-gibbs"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies particles --tempering-start 4 \
      --tempering-steps 4 --out "$RUNS/particles-tempered"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies rebase --select weighted \
      --out "$RUNS/rebase-weighted"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" "${v[@]}" --strategies rebase --rebase-temperature 1.0 \
      --out "$RUNS/rebase-t1"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$VARIANT_SEEDS" --budgets 4,8,16,32,64 --scorers none --strategies bon \
      --adaptive --stop-rule supermajority --out "$RUNS/adaptive-supermajority"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "$VARIANT_SEEDS" --budgets 4,8,16,32,64 --scorers testbed-prm \
      --strategies bon --adaptive --stop-rule consensus --out "$RUNS/adaptive-consensus-prm"
}

report() {
  mkdir -p "$RESULTS/before-issue13"
  # runs of beam's loop before issue 13 (kept from this script's earlier version, which ran beam into
  # $RUNS/main; moved to $RUNS/beam-before-issue13) share their configuration key with today's beam
  # runs, so they get a report of their own instead of pooling with them
  local current=()
  for dir in "$RUNS"/*/; do
    case $dir in */beam-before-issue13/|*/beam-filter-duplicates/) ;; *) current+=("$dir") ;; esac
  done
  COLUMNS=200 "$PYTHON" -m pumsearch.cli report "${current[@]}" --csv "$RESULTS/report.csv" \
      --json "$RESULTS/report.json" --plots "$RESULTS" > "$RESULTS/report.txt"
  COLUMNS=200 "$PYTHON" -m pumsearch.cli report "$RUNS/beam-before-issue13" "$RUNS/beam-filter-duplicates" \
      --json "$RESULTS/before-issue13/report.json" --no-plots > "$RESULTS/before-issue13/report.txt"
  "$PYTHON" benchmarks/bench_strategies_summary.py "$RUNS" "$RESULTS"
  "$PYTHON" benchmarks/bench_strategies_analysis.py "$RUNS" "$RESULTS" > /dev/null
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(main variants report)
for step in "${steps[@]}"; do
  case $step in
    main) main ;;
    variants) variants ;;
    report) report ;;
    *) echo "unknown step $step: use main, variants or report" >&2; exit 2 ;;
  esac
done
