"""The ORM scorer over SGLang's /classify, against a loopback reward server running a tiny real
LlamaForSequenceClassification (helpers_servers)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pumsearch.scorers import ScorerError, load_scorer
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import ScoreItem
from tests.helpers_servers import InferenceServer


@pytest.fixture(scope="module")
def reward_server(tiny_reward_dir):
    server = InferenceServer(tiny_reward_dir, reward=True).start()
    yield server
    server.stop()


async def test_rewards_are_embedding_zero_of_the_chat(reward_server):
    scorer = load_scorer(
        "orm", url=reward_server.url, model=str(reward_server.model_dir), step_delimiter="\n\n"
    )
    problem = Problem("p", "what is one")
    items = [
        ScoreItem(problem, ("step one", "the answer is one"), complete=True),
        ScoreItem(problem, ("two",)),
    ]
    scores = await scorer.score(items)
    (exchange,) = reward_server.state.log
    expected_text = (
        "<|im_start|>user\nwhat is one<|im_end|>\n"
        "<|im_start|>assistant\nstep one\n\nthe answer is one<|im_end|>\n"
    )
    tok = AutoTokenizer.from_pretrained(reward_server.model_dir)
    expected_ids = tok(expected_text, add_special_tokens=False)["input_ids"]
    sent = exchange.request["input_ids"]  # token ids, so the server adds no BOS; sorted by length
    assert "text" not in exchange.request and expected_ids in sent
    model = AutoModelForSequenceClassification.from_pretrained(reward_server.model_dir).eval()
    with torch.inference_mode():
        expected = float(model(input_ids=torch.tensor([expected_ids])).logits[0, 0])
    assert scores[0].value == pytest.approx(expected, rel=1e-5)
    by_ids = {tuple(ids): r["embedding"][0] for ids, r in zip(sent, exchange.response, strict=True)}
    assert scores[0].value == by_ids[tuple(expected_ids)]
    assert scores[1].value == by_ids[next(tuple(i) for i in sent if i != expected_ids)]
    assert scorer.identity == f"orm:sglang:{reward_server.model_dir}" and scorer.value_kind == "unbounded"
    await scorer.score(items)  # cached: no second request
    assert len(reward_server.state.log) == 1
    await scorer.aclose()


def test_a_generation_server_is_not_a_reward_server(step_llama_dir):
    server = InferenceServer(step_llama_dir).start()
    try:
        with pytest.raises(ScorerError, match="serve the reward model with --is-embedding"):
            load_scorer("orm", url=server.url)
    finally:
        server.stop()


def test_scorer_url_needs_orm():
    with pytest.raises(ScorerError, match="--scorer-url works with --scorer orm"):
        load_scorer("verifier", url="http://127.0.0.1:1")
