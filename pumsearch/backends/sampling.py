"""Vectorised per-row sampling, log-probabilities and stop-string screening for the decode loop.

Reproducibility without per-row generators: the uniform number that picks row r's token at step
t is SplitMix64 output number t+1 of the row's own seed, computed for the whole batch at once, and
the token is the inverse of the row's cumulative distribution at that number. So a row's samples
depend only on its seed and its logits, never on its batch mates, and a batch of any size costs
a few tensor operations per step (one ``torch.multinomial`` call per row did not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniforms(seeds: np.ndarray, steps: int | np.ndarray) -> np.ndarray:
    """One float64 in [0, 1) per seed: SplitMix64 output ``step + 1`` of each seed's stream (one
    step for all, or one per seed)."""
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64) + _GOLDEN * (np.asarray(steps).astype(np.uint64) + np.uint64(1))
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class RowSampling:
    """The sampling settings of a batch's rows, as tensors (rows in batch order)."""

    seeds: np.ndarray  # uint64
    temperature: torch.Tensor  # float32 [rows]
    top_p: torch.Tensor  # float32 [rows]

    @classmethod
    def of(cls, seeds: Sequence[int], temperatures: Sequence[float], top_ps: Sequence[float],
           device: Any) -> RowSampling:
        return cls(np.array(seeds, dtype=np.uint64), torch.tensor(temperatures, dtype=torch.float32, device=device),
                   torch.tensor(top_ps, dtype=torch.float32, device=device))

    def select(self, keep: Sequence[int]) -> RowSampling:
        index = torch.tensor(keep, device=self.temperature.device)
        return RowSampling(self.seeds[list(keep)], self.temperature[index], self.top_p[index])

    def concat(self, other: RowSampling) -> RowSampling:
        return RowSampling(np.concatenate([self.seeds, other.seeds]), torch.cat([self.temperature, other.temperature]),
                           torch.cat([self.top_p, other.top_p]))


def sample_tokens(logits: torch.Tensor, rows: RowSampling, steps: int | np.ndarray) -> torch.Tensor:
    """One token per row (the row's ``steps``-th): argmax where the temperature is 0, else a draw
    from the tempered distribution (restricted to the nucleus where top_p < 1), by inverse CDF at
    the row's uniform."""
    tokens = logits.argmax(dim=-1)
    sampled = (rows.temperature > 0).nonzero().flatten()
    if sampled.numel() == 0:
        return tokens
    u = torch.from_numpy(uniforms(rows.seeds, steps)).to(logits.device)[sampled]
    probs = torch.softmax(logits[sampled].float() / rows.temperature[sampled, None], dim=-1)
    top_p = rows.top_p[sampled]
    nucleus = (top_p < 1.0).nonzero().flatten()
    plain = (top_p >= 1.0).nonzero().flatten()
    if plain.numel():
        tokens[sampled[plain]] = _inverse_cdf(probs[plain], u[plain])
    if nucleus.numel():
        sorted_probs, order = probs[nucleus].sort(dim=-1, descending=True)
        keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p[nucleus, None]  # always keeps the top token
        picked = _inverse_cdf(sorted_probs * keep, u[nucleus])
        tokens[sampled[nucleus]] = order.gather(1, picked[:, None]).squeeze(1)
    return tokens


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first index whose cumulative weight exceeds ``u`` times the row's total (float64, so
    the sums over a large vocabulary stay exact enough; zero-weight entries are never picked)."""
    cdf = weights.double().cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=weights.shape[-1] - 1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_k: int
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probabilities under the model's raw distribution (temperature 1, no nucleus cut, as
    vLLM returns by default): of each row's token, and the ``top_k`` most likely (values, ids)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1)
    if top_k <= 0:
        return chosen, None, None
    top = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
    return chosen, top.values, top.indices


class StopScreen:
    """Which tokens could complete a stop string, so the decode loop decodes a row's tail only
    on the steps where that is possible.

    A stop string first appears in the decoded text at the step whose token supplies its last
    character; every other step cannot complete it. A token's text is read once for the whole
    vocabulary (decoded after a fixed one-character token, so a leading space survives
    tokenizers that strip one at the start); a token whose text holds the last character of a
    stop string, or an incomplete character (U+FFFD, the tail of a multi-byte character may
    complete it), is a candidate. Tokens the tokenizer cannot decode are candidates too."""

    def __init__(self, tokenizer: Any, vocab_size: int, device: Any) -> None:
        self.tokenizer, self.vocab_size, self.device = tokenizer, vocab_size, device
        self._texts: list[str] | None = None
        self._tables: dict[tuple[str, ...], torch.Tensor] = {}

    def candidates(self, stops: tuple[str, ...]) -> torch.Tensor:
        """A bool per vocabulary entry: True where the token may complete one of ``stops``."""
        if stops not in self._tables:
            texts = self._token_texts()
            last = {s[-1] for s in stops if s}
            flags = [t is None or "\ufffd" in t or any(c in t for c in last) for t in texts]
            self._tables[stops] = torch.tensor(flags, dtype=torch.bool, device=self.device)
        return self._tables[stops]

    def _token_texts(self) -> list[str | None]:
        if self._texts is None:
            self._texts = _decoded_vocabulary(self.tokenizer, self.vocab_size)
        return self._texts


def _decoded_vocabulary(tokenizer: Any, vocab_size: int) -> list[str | None]:
    known = min(len(tokenizer), vocab_size)
    anchor = _anchor_token(tokenizer)
    if anchor is None:
        return [None] * vocab_size
    head = tokenizer.decode([anchor], skip_special_tokens=True)
    texts: list[str | None] = []
    for text in tokenizer.batch_decode([[anchor, t] for t in range(known)], skip_special_tokens=True):
        texts.append(text[len(head):] if text.startswith(head) else None)
    return texts + [None] * (vocab_size - known)


def _anchor_token(tokenizer: Any) -> int | None:
    """A token that decodes to one plain character on its own."""
    for char in ("a", "x", "0", "."):
        ids = tokenizer(char, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and tokenizer.decode(ids, skip_special_tokens=True) == char:
            return int(ids[0])
    return None
