"""Per-token log-probabilities out of the transformers decode loop, checked against an independent
plain forward pass over prompt + generated tokens on a tiny real model (fp32).

Convention (docs/backends.md): the log-probabilities are of the model's raw distribution, before
temperature and top-p, as vLLM returns them by default (vllm/v1/sample/sampler.py, Sampler.forward:
"Use the original logits (before any penalties or temperature scaling) for the top-k logprobs",
``logprobs_mode="raw_logprobs"``). SGLang's sampler (python/sglang/srt/layers/sampler.py,
Sampler.forward) returns the tempered distribution's unless SGLANG_RETURN_ORIGINAL_LOGPROB is set.
"""

from __future__ import annotations

import pytest
import torch

from pumsearch.backends import decode_loop
from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.search.protocols import GenerationRequest, SamplingParams


@pytest.fixture(scope="module")
def generator(tiny_llama_dir) -> TransformersGenerator:
    return TransformersGenerator.load(str(tiny_llama_dir))


def _generate(gen: TransformersGenerator, **params):
    ids = gen.chat_prompt("What is 2 + 3?", "Be brief.")[1]
    sampling = SamplingParams(**{"max_tokens": 12, "stop": ("e",), **params})
    (out,) = gen.generate_sync([GenerationRequest("", ids, 3, sampling, seed=4)])
    return ids, out.completions


def _reference_logprobs(gen: TransformersGenerator, prompt: tuple[int, ...], generated: list[int]) -> torch.Tensor:
    """log_softmax of a plain forward's logits at each generated position: [tokens, vocab]."""
    with torch.inference_mode():
        logits = gen.model(torch.tensor([list(prompt) + generated])).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(generated)], dim=-1)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_token_logprobs_and_top_k_are_the_raw_model_distribution(generator, temperature, top_p):
    prompt, completions = _generate(generator, temperature=temperature, top_p=top_p, want_logprobs=True,
                                    top_logprobs=5)
    tempered_differs = False
    for comp in completions:
        reference = _reference_logprobs(generator, prompt, comp.token_ids)
        assert len(comp.token_logprobs) == len(comp.top_logprobs) == comp.num_tokens
        for step, token in enumerate(comp.token_ids):
            assert comp.token_logprobs[step] == pytest.approx(float(reference[step, token]), abs=1e-5)
            top_values = reference[step].topk(5).values.tolist()
            assert [v for _, v in comp.top_logprobs[step]] == pytest.approx(top_values, abs=1e-5)
            for token_id, value in comp.top_logprobs[step]:
                assert value == pytest.approx(float(reference[step, token_id]), abs=1e-5)
            if temperature not in (0.0, 1.0):
                tempered = torch.log_softmax(reference[step] / temperature, dim=-1)[token]
                tempered_differs |= abs(float(tempered) - comp.token_logprobs[step]) > 1e-3
        assert comp.logprob == pytest.approx(sum(comp.token_logprobs))
    assert tempered_differs or temperature in (0.0, 1.0)


def test_want_logprobs_alone_gives_per_token_logprobs_without_alternatives(generator):
    _, completions = _generate(generator, temperature=1.0, want_logprobs=True)
    assert all(c.token_logprobs is not None and c.top_logprobs is None for c in completions)


def test_nothing_is_computed_when_logprobs_are_not_asked_for(generator, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("log-probabilities computed without being asked for")

    monkeypatch.setattr(decode_loop, "token_logprobs", fail)
    _, completions = _generate(generator, temperature=1.0)
    assert all(c.logprob is None and c.token_logprobs is None and c.top_logprobs is None for c in completions)


def test_rows_that_ask_get_logprobs_and_their_batch_mates_do_not(generator):
    ids = generator.chat_prompt("What is 2 + 3?", "Be brief.")[1]
    asking = GenerationRequest("", ids, 2, SamplingParams(max_tokens=6, want_logprobs=True, top_logprobs=3), seed=1)
    silent = GenerationRequest("", ids, 2, SamplingParams(max_tokens=6), seed=2)
    with_logprobs, without = generator.generate_sync([asking, silent])
    assert all(len(c.top_logprobs[0]) == 3 for c in with_logprobs.completions)
    assert all(c.token_logprobs is None for c in without.completions)
