#!/usr/bin/env bash
# Accuracy versus budget on the arithmetic testbed: the weak policy, 200 test chains
# (testbed:standard), T = 0.8, at most 96 tokens per solution; results in benchmarks/results/testbed/
# (see benchmarks/RESULTS.md). Run from the repository root. Runs go to $RUNS (not in git: the trees
# are large); rerunning resumes. On the shared 2-core CPU the sweeps took about 40 minutes.
#
#   bash benchmarks/bench_testbed_sweeps.sh [main|mcts-verifier|rollout|report]...
set -euo pipefail
RUNS=${RUNS:-/tmp/testbed-sweeps}
RESULTS=${RESULTS:-benchmarks/results/testbed}
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's pumsearch, also for benchmarks/*.py
COMMON=(--dataset testbed:standard --model testbed:weak --temperature 0.8 --max-tokens 96
        --max-step-tokens 24 --seeds 0 --concurrency 64)
PUMSEARCH=(nice python -m pumsearch.cli)

main() {
  # Best-of-N (one run at N = 64; smaller N read off it) and MCTS at every N, both with the exact PRM.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies bon,mcts --budgets 1,2,4,8,16,32,64 \
      --scorers testbed-prm --out "$RUNS/main"
  # Beam search and DVTS need N to be a multiple of the beam width (4): the same sweep directory grows.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies beam,dvts --budgets 4,8,16,32,64 \
      --scorers testbed-prm --out "$RUNS/main"
}

mcts_verifier() {
  # MCTS with the exact PRM valuing open prefixes and the outcome verifier valuing finished ones.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies mcts --budgets 1,2,4,8,16,32,64 \
      --scorers testbed-prm --config benchmarks/testbed/mcts_verifier_terminal.toml \
      --out "$RUNS/mcts-verifier-terminal"
}

rollout() {
  # The Monte-Carlo rollout gain (students: the weak and the strong policy, k = 4 rollouts each per
  # prefix) as the beam-search scorer. Expensive (8 rollouts of up to 96 tokens per scored prefix), so
  # N <= 16 only. `pumsearch sweep --scorers` cannot pass two students or k, hence the script.
  nice python benchmarks/bench_testbed_rollout.py --strategies beam --budgets 4,8,16 --k 4 \
      --concurrency 64 --out "$RUNS/rollout"
}

report() {
  for name in main mcts-verifier-terminal rollout; do
    mkdir -p "$RESULTS/$name"
    COLUMNS=170 python -m pumsearch.cli report "$RUNS/$name" --csv "$RESULTS/$name/report.csv" \
        --json "$RESULTS/$name/report.json" --plots "$RESULTS/$name" > "$RESULTS/$name/report.txt"
  done
  python benchmarks/bench_testbed_summary.py "$RESULTS"
  python benchmarks/bench_testbed_analysis.py "$RUNS" --out "$RESULTS"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(main mcts-verifier rollout report)
for step in "${steps[@]}"; do
  case $step in
    main) main ;;
    mcts-verifier) mcts_verifier ;;
    rollout) rollout ;;
    report) report ;;
    *) echo "unknown step $step: use main, mcts-verifier, rollout or report" >&2; exit 2 ;;
  esac
done
