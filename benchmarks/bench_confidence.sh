#!/usr/bin/env bash
# The confidence scorer (DeepConf token confidence, no reward model) against majority vote and the
# exact PRM at equal tokens on the arithmetic testbed, and MCTS with log-probability priors against
# uniform ones: the weak policy, 200 test chains (testbed:standard), T = 0.8, at most 96 tokens per
# solution and 24 per step, seeds 0 and 1 (the flags of bench_testbed_sweeps.sh). Runs go to $RUNS
# (not in git); rerunning resumes. Results: benchmarks/results/confidence/ and benchmarks/RESULTS.md.
#
#   bash benchmarks/bench_confidence.sh [bon|beam|tree|search|mcts|gsm8k|report]...
set -euo pipefail
RUNS=${RUNS:-/tmp/confidence-sweeps}
RESULTS=${RESULTS:-benchmarks/results/confidence}
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
COMMON=(--dataset testbed:standard --model testbed:weak --temperature 0.8 --max-tokens 96
        --max-step-tokens 24 --seeds 0,1 --concurrency 64)
PUMSEARCH=(nice -n 10 python -m pumsearch.cli)

bon() {
  # One Best-of-64 run per seed with the confidence scorer: the trees keep every token's confidence,
  # so bench_confidence_analysis.py reads off every measure, filter and vote (and plain majority) at
  # N = 4..64 from them without new samples.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies bon --budgets 4,8,16,32,64 --scorers confidence \
      --out "$RUNS/bon"
}

beam() {
  # Beam search (M = 4) with the exact PRM, with DeepConf's lowest group confidence (its 2048-token
  # window is longer than any testbed solution, so it is the mean token confidence), and with the
  # confidence scorer's default, measure=likelihood (the sampled tokens' per-token probability).
  # The committed lowest-group rows were run when lowest_group was the default, as `--scorers
  # testbed-prm,confidence --out $RUNS/beam` (same seeds, same samples; another run key).
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies beam --budgets 4,8,16,32,64 \
      --scorers testbed-prm --out "$RUNS/beam"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies beam --budgets 4,8,16,32,64 \
      --scorers confidence --scorer-option measure=lowest_group --out "$RUNS/beam-lowest-group"
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies beam --budgets 4,8,16,32,64 \
      --scorers confidence --scorer-option measure=likelihood --out "$RUNS/beam-likelihood"
}

tree() {
  # DVTS and MCTS with the confidence scorer's default (likelihood), one seed, N = 4 and 16.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds 0 --strategies dvts,mcts --budgets 4,16 \
      --scorers confidence --scorer-option measure=likelihood --out "$RUNS/tree-likelihood"
}

search() {
  # Particle filtering and REBASE with the confidence scorer's default (likelihood): one run per N
  # (neither can be read off a larger run). Compared with the bon step's majority vote at equal tokens.
  "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "${SEARCH_SEEDS:-0,1}" --strategies particles,rebase \
      --budgets "${SEARCH_BUDGETS:-4,8,16,32,64}" --scorers confidence --scorer-option measure=likelihood \
      --out "$RUNS/search-likelihood"
  # particle filtering at lower weighting temperatures (the likelihood's values span 0.72-0.99, so
  # T = 1 resamples nearly uniformly)
  for t in 0.2 0.05; do
    "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --seeds "${SEARCH_SEEDS:-0,1}" --strategies particles \
        --particle-temperature "$t" --budgets "${SEARCH_BUDGETS:-4,8,16,32,64}" --scorers confidence \
        --scorer-option measure=likelihood --out "$RUNS/particles-likelihood-t$t"
  done
}

mcts() {
  # MCTS with the exact PRM, priors from the steps' log-probabilities against uniform priors.
  for priors in logprob uniform; do
    "${PUMSEARCH[@]}" sweep "${COMMON[@]}" --strategies mcts --budgets 2,4,8,16,32,64 --scorers testbed-prm \
        --priors "$priors" --out "$RUNS/mcts-$priors"
  done
}

gsm8k() {
  # The embedded SmolLM2-135M on the first 5 GSM8K test problems, Best-of-4 and beam search (N = 4)
  # with the confidence scorer: the pipeline end to end on the real model (one seed, 128 tokens: the CPU).
  "${PUMSEARCH[@]}" sweep --dataset gsm8k --limit 5 --strategies bon,beam --budgets 4 --scorers confidence \
      --seeds 0 --max-tokens 128 --concurrency 5 --out "$RUNS/gsm8k"
}

report() {
  mkdir -p "$RESULTS"
  for name in bon beam beam-lowest-group beam-likelihood tree-likelihood search-likelihood particles-likelihood-t0.2 \
              particles-likelihood-t0.05 mcts-logprob mcts-uniform gsm8k; do
    [ -d "$RUNS/$name" ] || continue
    mkdir -p "$RESULTS/$name"
    COLUMNS=170 python -m pumsearch.cli report "$RUNS/$name" --csv "$RESULTS/$name/report.csv" \
        --json "$RESULTS/$name/report.json" --plots "$RESULTS/$name" > "$RESULTS/$name/report.txt"
  done
  python benchmarks/bench_confidence_analysis.py "$RUNS" --out "$RESULTS"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(bon beam tree search mcts gsm8k report)
for step in "${steps[@]}"; do
  case $step in
    bon) bon ;;
    beam) beam ;;
    tree) tree ;;
    search) search ;;
    mcts) mcts ;;
    gsm8k) gsm8k ;;
    report) report ;;
    *) echo "unknown step $step: use bon, beam, tree, search, mcts, gsm8k or report" >&2; exit 2 ;;
  esac
done
