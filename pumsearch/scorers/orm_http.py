"""The outcome reward model served by SGLang (``--scorer orm --scorer-url URL``).

A sequence-classifier reward model (e.g. Skywork-Reward, LlamaForSequenceClassification) served
with ``python -m sglang.launch_server --model-path RM --is-embedding``. POST /classify takes
``{"model": ..., "input_ids": [[ids of one conversation], ...]}`` and returns one result per
conversation whose ``embedding[0]`` is the reward (SGLang 0.5.23: sglang/srt/entrypoints/
http_server.py:1006-1015; EmbeddingReqInput takes ``text`` or ``input_ids``, a list of lists being a
batch, sglang/srt/managers/io_struct.py:1204-1211, 1316-1336). Ids, not text: SGLang tokenises text
with the tokenizer's special tokens, so a chat template that writes its own BOS would reach a
Llama-3-style reward model with two. The conversation is the question as the user turn and the
steps, joined by the step delimiter, as the assistant turn; it is rendered with the reward
model's own chat template from a local tokenizer and encoded without added special tokens.
Rewards are unbounded, so they are normalised per problem before votes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from pumsearch.http_common import RETRYABLE, RetryableStatus, describe, json_or_raise, same_model, served_model_info
from pumsearch.models import load_tokenizer
from pumsearch.scorers.base import ScorerError
from pumsearch.search.protocols import Score, ScoreItem


class OrmHttpScorer:
    value_kind = "unbounded"
    needs_reference = False

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        *,
        model: str,
        step_delimiter: str = "\n\n",
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.identity = f"orm:sglang:{model}"
        self.step_delimiter = step_delimiter
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def conversation_text(self, item: ScoreItem) -> str:
        messages = [
            {"role": "user", "content": item.problem.question},
            {"role": "assistant", "content": self.step_delimiter.join(item.steps)},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def conversation_ids(self, item: ScoreItem) -> list[int]:
        return list(self.tokenizer(self.conversation_text(item), add_special_tokens=False)["input_ids"])

    def count_tokens(self, item: ScoreItem) -> int:
        return len(self.conversation_ids(item))

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        body = self._post({"model": self.model, "input_ids": [self.conversation_ids(i) for i in items]})
        if not isinstance(body, list) or len(body) != len(items):
            raise ScorerError(f"malformed response from {self.url}/classify: expected {len(items)} results")
        scores = []
        for result in body:
            embedding = result.get("embedding") if isinstance(result, dict) else None
            if not isinstance(embedding, list) or not embedding:
                raise ScorerError(f"malformed response from {self.url}/classify: a result has no embedding")
            scores.append(Score(float(embedding[0])))
        return scores

    def _post(self, payload: dict[str, Any]) -> Any:
        url = f"{self.url}/classify"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return json_or_raise(self._client.post("/classify", json=payload), url, ScorerError)
            except RETRYABLE as err:
                last = describe(err)
            except RetryableStatus as err:
                last = str(err)
        raise ScorerError(f"the reward model server {url} failed after {self.retries + 1} attempts: {last}")

    def close(self) -> None:
        self._client.close()


def load_orm_http(
    url: str,
    *,
    model: str | None = None,
    tokenizer: str | None = None,
    step_delimiter: str = "\n\n",
    retries: int = 3,
    timeout: float = 300.0,
) -> OrmHttpScorer:
    """Connect to a reward-model server: check /health and that it serves an embedding model."""
    url = url.rstrip("/")
    info = served_model_info(url, timeout=min(timeout, 30.0), retries=retries, backoff=0.5, error=ScorerError,
                             unavailable=ScorerError)
    served = str(info["model_path"]) if info is not None else None
    if info is not None and info.get("is_generation") is True:
        raise ScorerError(
            f"the server at {url} serves {served!r} as a generation model; "
            "serve the reward model with --is-embedding"
        )
    if model is not None and served is not None and not same_model(model, served):
        raise ScorerError(f"the reward-model server at {url} serves {served!r}, not {model!r}")
    name = model or served
    source = tokenizer or name
    if source is None:
        raise ScorerError(f"the server at {url} does not say which model it serves: pass --scorer-model")
    return OrmHttpScorer(
        url,
        load_tokenizer(source),
        model=name or source,
        step_delimiter=step_delimiter,
        timeout=timeout,
        retries=retries,
    )
