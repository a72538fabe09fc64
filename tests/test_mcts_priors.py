"""MCTS priors from the steps' log-probabilities (issue 13 item 5), on the shipped testbed policy (a
real trained LlamaForCausalLM): the search asks the backend for them, each step node records its
log-probability (checked against a plain forward pass), and the priors over siblings are the
softmax of the per-token log-probabilities, not uniform."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from pumsearch.api import asearch
from pumsearch.backends import load_generator
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.scorers import load_scorer
from pumsearch.search.problem import Problem
from pumsearch.search.tree import ROOT
from pumsearch.strategies import make_strategy, search_config
from pumsearch.strategies.mcts import step_priors
from pumsearch.testbed import testbed_problems
from tests.helpers_search import scripted_scorer


@pytest.fixture(scope="module")
def policy():
    return load_generator("testbed:weak")


def _mcts(generator, priors: str, problem: Problem, scorer=None):
    config = search_config(strategy="mcts", budget=2, expansions=4, mcts_parallel=1, temperature=1.0,
                           max_tokens=48, max_step_tokens=12, priors=priors)
    strategy = make_strategy(config, True)
    (result,) = asyncio.run(asearch([problem], generator=generator, scorer=scorer or load_scorer("testbed-prm"),
                                    strategy=strategy))
    return result, strategy


def _step_logprob(generator, prompt: tuple[int, ...], before: list[int], step: list[int]) -> float:
    """The sum of the step's token log-probabilities under a plain forward over prompt + prefix + step."""
    ids = list(prompt) + before + step
    with torch.inference_mode():
        logprobs = torch.log_softmax(generator.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    start = len(prompt) + len(before)
    return float(sum(logprobs[start + i - 1, t] for i, t in enumerate(step)))


def test_priors_come_from_the_step_log_probabilities_and_are_not_uniform(policy) -> None:
    problem = testbed_problems("standard,n=1")[0]
    result, strategy = _mcts(policy, "logprob", problem)
    tree = result.tree
    prompt = policy.chat_prompt(problem.question, strategy.config.system_prompt)[1]
    for node in tree.children(ROOT)[:2] + tree.children(tree.children(ROOT)[0])[:2]:
        before = [t for n in tree.path(node)[:-1] for t in tree[n]["token_ids"]]
        expected = _step_logprob(policy, prompt, before, tree[node]["token_ids"])
        assert tree[node]["logprob"] == pytest.approx(expected, abs=1e-3)
    spread = []
    for parent in [ROOT, *(n for n, _ in tree.iter_nodes())]:
        children = tree.children(parent)
        if len(children) < 2:
            continue
        priors = step_priors(tree, children, "logprob")
        per_token = [tree[c]["logprob"] / tree[c]["num_tokens"] for c in children]
        softmax = [math.exp(v) / sum(math.exp(w) for w in per_token) for v in per_token]
        assert priors == pytest.approx(softmax) and sum(priors) == pytest.approx(1.0)
        assert step_priors(tree, children, "uniform") == [1 / len(children)] * len(children)
        if len({tree[c]["text"] for c in children}) > 1:  # siblings that differ get different priors
            spread.append(max(priors) - min(priors))
    assert spread and min(spread) > 1e-4 and max(spread) > 0.05, spread


def test_uniform_priors_ask_for_nothing(policy) -> None:
    result, _ = _mcts(policy, "uniform", testbed_problems("standard,n=1")[0])
    assert all(attrs["logprob"] is None for n, attrs in result.tree.iter_nodes())


def test_a_backend_without_log_probabilities_falls_back_to_uniform_priors() -> None:
    """The scripted test backend returns none: the priors are uniform, as documented."""
    generator = ScriptedGenerator()
    result, _ = _mcts(generator, "logprob", Problem("p", "q"), scorer=scripted_scorer())
    assert all(r.params.want_logprobs for call in generator.calls for r in call)
    children = result.tree.children(ROOT)
    assert step_priors(result.tree, children, "logprob") == [1 / len(children)] * len(children)
