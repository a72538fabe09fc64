"""The ``confidence`` scorer: a prefix scored by the policy's own token confidence, no extra model
(DeepConf, Fu et al. 2025, "Deep Think with Confidence"; code facebookresearch/deepconf @ 675529d).

Token confidence C_i = -(1/k) * (sum of the k largest log-probabilities at generated token i), of
the model's raw distribution (deepconf/utils.py:41-50; processors.py:29-34). Higher means a more
peaked distribution, a surer token. The search computes C_i while it generates (it asks the backend
for the top-k log-probabilities because this scorer's ``top_logprobs`` is k) and hands them to the
scorer in ``ScoreItem.token_confidences``, one per token of the prefix, every step in order, with
the sampled tokens' log-probabilities in ``ScoreItem.token_logprobs``. A prefix's value is one
measure of them (``measure``):

- ``mean``: the mean of every C_i (utils.py:93-101);
- ``lowest_group``: group confidences are the means of every window of ``window`` consecutive
  tokens (stride 1; a prefix shorter than the window is one group, its mean: utils.py:53-62), and
  the value is the lowest of them (the reference's ``min_conf``, utils.py:290-301);
- ``bottom_group``: the mean of the lowest ``max(1, int(G * bottom))`` of the G group
  confidences, shorter than the window the mean of all (the bottom-10% confidence at
  ``bottom=0.1``, utils.py:116-147);
- ``tail``: the mean of the last ``window`` C_i (the reference's tail of 2048 tokens equals its
  window, utils.py:104-113);
- ``likelihood`` (the default; not DeepConf's): exp of the mean log-probability of the tokens
  the policy sampled, the prefix's per-token probability (its length-normalised likelihood, in
  (0, 1]). Where C_i says how peaked the distribution was, this says how likely the policy found
  what it wrote. On the testbed it was the only measure that helped, and DeepConf's own measures
  made search worse than majority vote (benchmarks/RESULTS.md, "The confidence scorer"), so it is
  the default; ``measure=lowest_group`` is the paper's.

The windows slide across step boundaries, so as a step scorer (beam, DVTS, MCTS) the value of a
prefix is the measure of everything the policy generated so far: with ``lowest_group``, the lowest
group so far. It has no per-step values, so ``--aggregate`` does not change it. An empty prefix
scores 0, as in the reference. Unlike the reference, C_i and group means are not rounded to 3
decimals (the search stores C_i to 6), and the mean is over exactly the top k (vLLM's dict the
reference averages also holds the sampled token when it is outside the top k).

Cost: no forward pass, only arithmetic over numbers the backend returned while generating: the
scorer counts its calls (``scorer_calls``) and no tokens (``scorer_tokens`` stays 0). Values are
``positive``: votes weigh them as they are (the paper's confidence-weighted vote), PUCT normalises
them per problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pumsearch.registry import top_logprob_backends
from pumsearch.scorers.base import ScorerError
from pumsearch.search.protocols import Score, ScoreItem

# DeepConf's defaults: a window of 2048 tokens (deepconf/wrapper.py:80), the top 20 log-probabilities
# (wrapper.py:116, 196), the bottom 10% of groups (utils.py:116). The default measure is not
# DeepConf's (lowest_group): likelihood was the one measured to help (benchmarks/RESULTS.md)
DEFAULT_MEASURE = "likelihood"
DEFAULT_WINDOW = 2048
DEFAULT_K = 20
DEFAULT_BOTTOM = 0.1


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Means of every ``window`` consecutive confidences; shorter than the window: one group."""
    if not confidences:
        return [0.0]
    if len(confidences) < window:
        return [float(np.mean(confidences))]
    sums = np.convolve(np.asarray(confidences, dtype=np.float64), np.ones(window), mode="valid")
    return (sums / window).tolist()


def mean_confidence(confidences: Sequence[float], window: int, bottom: float) -> float:
    return float(np.mean(confidences)) if len(confidences) else 0.0


def lowest_group_confidence(confidences: Sequence[float], window: int, bottom: float) -> float:
    return min(group_confidences(confidences, window))


def bottom_group_confidence(confidences: Sequence[float], window: int, bottom: float) -> float:
    groups = group_confidences(confidences, window)
    lowest = max(1, int(len(groups) * bottom))
    return float(np.mean(sorted(groups)[:lowest]))


def tail_confidence(confidences: Sequence[float], window: int, bottom: float) -> float:
    return mean_confidence(confidences[-window:], window, bottom)


def likelihood(logprobs: Sequence[float]) -> float:
    """exp(mean log-probability of the sampled tokens): the per-token probability; 0 for none."""
    return float(np.exp(np.mean(logprobs))) if len(logprobs) else 0.0


Measure = Callable[[Sequence[float], int, float], float]
MEASURES: dict[str, Measure] = {
    "mean": mean_confidence,
    "lowest_group": lowest_group_confidence,
    "bottom_group": bottom_group_confidence,
    "tail": tail_confidence,
}
LIKELIHOOD = "likelihood"  # read off the sampled tokens' log-probabilities, not the confidences
MEASURE_NAMES = (*MEASURES, LIKELIHOOD)


class ConfidenceScorer:
    """Scores a prefix by a DeepConf measure of its token confidences (see the module docstring)."""

    value_kind = "positive"
    needs_reference = False

    def __init__(self, measure: str = DEFAULT_MEASURE, window: int = DEFAULT_WINDOW, k: int = DEFAULT_K,
                 bottom: float = DEFAULT_BOTTOM) -> None:
        if measure not in MEASURE_NAMES:
            raise ScorerError(f"unknown confidence measure {measure!r} (--scorer-option measure=...): use "
                              f"{', '.join(MEASURE_NAMES)}")
        for name, value in (("window", window), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScorerError(f"--scorer-option {name} must be a whole number of at least 1 (got {value!r})")
        if isinstance(bottom, bool) or not isinstance(bottom, int | float) or not 0 < bottom <= 1:
            raise ScorerError(f"--scorer-option bottom must be a fraction in (0, 1] (got {bottom!r})")
        self.measure = measure
        self.window = window
        self.top_logprobs = k  # the search asks the backend for this many log-probabilities per token
        self.bottom = float(bottom)
        self.identity = f"confidence:{measure}:window={window}:k={k}"
        if measure == "bottom_group":
            self.identity += f":bottom={self.bottom:g}"

    def count_tokens(self, item: ScoreItem) -> int:
        return 0  # no forward pass: the numbers came with the generated tokens

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> Score:
        if item.token_confidences is None or item.token_logprobs is None:
            raise ScorerError("the confidence scorer reads the policy's token log-probabilities from the "
                              "search, and this prefix came without them: score it inside a search (solve, "
                              f"run, sweep) on a backend that returns them: {top_logprob_backends()}")
        if self.measure == LIKELIHOOD:
            value = likelihood(item.token_logprobs)
        else:
            value = MEASURES[self.measure](item.token_confidences, self.window, self.bottom)
        return Score(value, extra={"policy_tokens": len(item.token_confidences)})

    def close(self) -> None:
        pass


def load_confidence(measure: str = DEFAULT_MEASURE, window: int = DEFAULT_WINDOW, k: int = DEFAULT_K,
                    bottom: float = DEFAULT_BOTTOM) -> ConfidenceScorer:
    """``--scorer confidence [--scorer-option measure=lowest_group|bottom_group|tail|mean|likelihood]
    [--scorer-option window=2048] [--scorer-option k=20] [--scorer-option bottom=0.1]``."""
    return ConfidenceScorer(measure=measure, window=window, k=k, bottom=bottom)


__all__ = ["MEASURES", "MEASURE_NAMES", "ConfidenceScorer", "group_confidences", "likelihood", "load_confidence"]
