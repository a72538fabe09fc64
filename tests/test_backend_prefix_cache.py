"""The transformers backend's prefix cache on tiny real models: the same samples with the cache on
and off, prompts shared by N samples prefilled once, tree-search rounds served from the cache,
the byte budget, stop strings screened without missing one, and the plain path."""

from __future__ import annotations

import pytest
import torch

from pumsearch.backends.transformers_backend import TransformersGenerator
from pumsearch.search.protocols import GenerationOutput, GenerationRequest, SamplingParams


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request, tiny_llama_dir, tiny_qwen2_dir):
    return tiny_llama_dir if request.param == "llama" else tiny_qwen2_dir


def _prompt(gen: TransformersGenerator, question: str) -> tuple[int, ...]:
    return gen.chat_prompt(question, "Be brief.")[1]


def _request(ids, n: int, seed: int, **params) -> GenerationRequest:
    sampling = SamplingParams(**{"temperature": 1.0, "max_tokens": 10, "stop": ("e",), **params})
    return GenerationRequest("", tuple(ids), n, sampling, seed=seed)


def _tree_search(gen: TransformersGenerator, rounds: int = 3, width: int = 2, n: int = 4, **params
                 ) -> list[list[GenerationOutput]]:
    """Beam-like rounds: each round extends the first ``width`` step-ended samples of the last."""
    prefixes = [_prompt(gen, "What is 2 + 3?"), _prompt(gen, "Natalia sold 48 clips. How many?")]
    history = []
    for r in range(rounds):
        outputs = gen.generate_sync([_request(p, n, seed=100 * r + i, **params) for i, p in enumerate(prefixes)])
        history.append(outputs)
        kept = [(p, c) for p, out in zip(prefixes, outputs, strict=True) for c in out.completions
                if c.finish_reason == "step"][:width]
        prefixes = [tuple(p) + tuple(c.token_ids) for p, c in kept] or prefixes
    return history


def _tokens(history: list[list[GenerationOutput]]) -> list[list[list[int]]]:
    return [[c.token_ids for out in outputs for c in out.completions] for outputs in history]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_same_seeds_give_the_same_tokens_with_the_cache_on_and_off(model_dir, temperature):
    """fp32 tiny models: greedy and sampled tokens are identical, round after round, though the
    cached rounds compute only the new step's keys; so are the log-probabilities of every token
    (to float rounding), which would move with any misplaced key or position. Three rows at a
    time, so rows join running batches and leave their keys to the cache from merged ones."""
    on = TransformersGenerator.load(str(model_dir), max_batch_rows=3)
    off = TransformersGenerator.load(str(model_dir), kv_cache_mb=0)
    with_cache = _tree_search(on, temperature=temperature, want_logprobs=True)
    without = _tree_search(off, temperature=temperature, want_logprobs=True)
    assert _tokens(with_cache) == _tokens(without)
    for outputs_on, outputs_off in zip(with_cache, without, strict=True):
        for a, b in zip(outputs_on, outputs_off, strict=True):
            for x, y in zip(a.completions, b.completions, strict=True):
                assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-5)
    later = [out for outputs in with_cache[1:] for out in outputs]
    assert sum(o.cached_tokens for o in later) > sum(o.cached_tokens for outputs in without[1:] for o in outputs)


def test_a_prompt_shared_by_n_samples_is_prefilled_once(model_dir):
    gen = TransformersGenerator.load(str(model_dir), kv_cache_mb=0)  # no help from earlier calls
    ids = _prompt(gen, "What is 2 + 3?")
    (out,) = gen.generate_sync([_request(ids, 8, seed=1)])
    assert out.prompt_tokens == 8 * len(ids)
    assert out.cached_tokens == 7 * len(ids)  # the first sample computed the prompt, the other 7 shared it


def test_tree_search_rounds_are_served_from_the_cache(model_dir):
    gen = TransformersGenerator.load(str(model_dir))
    history = _tree_search(gen, rounds=3)
    for outputs in history[1:]:
        prompt, cached = sum(o.prompt_tokens for o in outputs), sum(o.cached_tokens for o in outputs)
        assert cached >= 0.8 * prompt
        for out in outputs:  # only the last token of each kept prefix was computed again
            assert out.cached_tokens == out.prompt_tokens - 1


def test_rows_joining_a_running_batch_sample_as_they_would_in_a_batch_of_their_own(model_dir):
    """With 3 rows at a time, most rows join the batch while others are mid-way: each row's
    tokens and log-probabilities must not change (they depend only on its seed and prefix)."""
    wide = TransformersGenerator.load(str(model_dir), max_batch_rows=64)
    narrow = TransformersGenerator.load(str(model_dir), max_batch_rows=3)
    requests = [_request(_prompt(wide, q), 5, seed=s, max_tokens=14, want_logprobs=True)
                for s, q in enumerate(["What is 2 + 3?", "start 7, add 5.", "Natalia sold 48 clips."])]
    for a, b in zip(wide.generate_sync(requests), narrow.generate_sync(requests), strict=True):
        assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
        for x, y in zip(a.completions, b.completions, strict=True):
            assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-5)
    lengths = {c.num_tokens for out in wide.generate_sync(requests) for c in out.completions}
    assert len(lengths) > 1  # rows finish at different steps, so rows do join mid-way


def test_the_decode_buffer_stays_as_wide_as_its_widest_row_however_many_rows_join(model_dir, monkeypatch):
    from pumsearch.backends import decode_loop

    widths: list[int] = []

    class Recording(decode_loop.KVBuffer):
        def advance(self, tokens: int) -> None:
            super().advance(tokens)
            widths.append(self.length)

    monkeypatch.setattr(decode_loop, "KVBuffer", Recording)
    gen = TransformersGenerator.load(str(model_dir), max_batch_rows=4)
    ids = _prompt(gen, "What is 2 + 3?")
    (out,) = gen.generate_sync([_request(ids, 40, seed=3, max_tokens=12)])
    assert len({c.num_tokens for c in out.completions}) > 3  # rows finish at many steps: rows join mid-way
    assert max(widths) <= len(ids) + 12 + 16  # prompt + tokens + the prefill gap allowance


def test_the_byte_budget_is_never_exceeded_and_eviction_keeps_samples_exact(model_dir):
    gen = TransformersGenerator.load(str(model_dir))
    per_token = gen.decoder.shape.bytes_per_token
    gen.prefix_cache.budget_bytes = 90 * per_token  # less than two rounds' prefixes
    off = TransformersGenerator.load(str(model_dir), kv_cache_mb=0)
    assert _tokens(_tree_search(gen, rounds=4)) == _tokens(_tree_search(off, rounds=4))
    assert 0 < gen.prefix_cache.stats.peak_bytes <= gen.prefix_cache.budget_bytes
    assert gen.prefix_cache.stats.evicted_tokens > 0


def _first_stop(tokenizer, ids: list[int], stops: tuple[str, ...]) -> int | None:
    """Reference: the first step whose decoded tail (longest stop + 2 tokens) holds a stop."""
    window = max(len(s) for s in stops) + 2
    for t in range(len(ids)):
        tail = tokenizer.decode(ids[max(0, t + 1 - window) : t + 1], skip_special_tokens=True)
        if any(s in tail for s in stops):
            return t
    return None


@pytest.mark.parametrize("stops", [("e",), ("th", "an"), ("12", " 4")], ids=["char", "two", "digits"])
def test_screened_stop_detection_finds_every_stop_the_decoded_tail_holds(tiny_llama_dir, stops):
    """At temperature 2 the tiny model writes many partial-byte tokens and stops split across
    tokens; every row must stop exactly where decoding its tail every step would have."""
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    requests = [_request(_prompt(gen, q), 32, seed=s, max_tokens=32, stop=stops, temperature=2.0)
                for s, q in enumerate(["What is 2 + 3?", "start 7, add 5, times 3."])]
    outputs = gen.generate_sync(requests)
    reasons = set()
    for comp in (c for out in outputs for c in out.completions):
        first = _first_stop(gen.tokenizer, comp.token_ids, stops)
        reasons.add(comp.finish_reason)
        if comp.finish_reason == "step":
            assert first == len(comp.token_ids) - 1
        else:
            assert first is None
    assert "step" in reasons


def test_a_stop_ending_in_a_multi_byte_character_is_seen_on_the_byte_that_completes_it(tiny_llama_dir):
    """The byte-level tokenizer spells "é" as two byte tokens; the second decodes to U+FFFD on
    its own, and must still be screened in as a possible stop."""
    from pumsearch.backends.sampling import StopScreen

    gen = TransformersGenerator.load(str(tiny_llama_dir))
    ids = gen.tokenizer("é", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 and gen.tokenizer.decode(ids) == "é"
    screen = StopScreen(gen.tokenizer, len(gen.tokenizer), "cpu")
    candidates = screen.candidates(("é",))
    assert bool(candidates[ids[-1]])
    plain = gen.tokenizer("b", add_special_tokens=False)["input_ids"]
    assert not bool(candidates[plain[0]])


def test_a_sliding_window_model_shares_prefixes_within_its_window_and_falls_back_beyond(tmp_path):
    from tests.tiny_models import build_tiny_causal_lm

    gen = TransformersGenerator.load(str(build_tiny_causal_lm(tmp_path, "mistral")))
    assert gen.decoder.shape is not None and gen.decoder.shape.sliding_window == 4096
    ids = _prompt(gen, "What is 2 + 3?")
    greedy = _request(ids, 3, seed=1, temperature=0.0, stop=())
    (shared,) = gen.generate_sync([greedy])
    assert shared.cached_tokens == 2 * len(ids)
    gen.decoder.shape = gen.decoder.shape.__class__(**{**gen.decoder.shape.__dict__, "sliding_window": 8})
    (plain,) = gen.generate_sync([greedy])
    assert plain.cached_tokens == 0
    prompt = torch.tensor([ids])
    reference = gen.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                   max_new_tokens=10, pad_token_id=gen.pad_id)[0, len(ids):].tolist()
    for out in (shared, plain):
        for comp in out.completions:
            assert comp.token_ids == reference[: len(comp.token_ids)]


def test_rows_too_long_for_the_window_wait_for_the_plain_path_instead_of_joining(tmp_path):
    from tests.tiny_models import build_tiny_causal_lm

    gen = TransformersGenerator.load(str(build_tiny_causal_lm(tmp_path, "mistral")), max_batch_rows=2)
    short, long = _prompt(gen, "2 + 3?"), _prompt(gen, "Natalia sold 48 clips in April and half as many in May.")
    window = len(short) + 16 + 8  # the short prompt's rows share prefixes, the long one's cannot
    gen.decoder.shape = gen.decoder.shape.__class__(**{**gen.decoder.shape.__dict__, "sliding_window": window})
    requests = [_request(short, 1, seed=1, temperature=0.0, max_tokens=3, stop=()),  # leaves room early
                _request(short, 1, seed=1, temperature=0.0, max_tokens=8, stop=()),
                _request(long, 2, seed=2, temperature=0.0, max_tokens=8, stop=())]
    early, short_out, long_out = gen.generate_sync(requests)
    assert short_out.cached_tokens > 0 and long_out.cached_tokens == 0
    for ids, out in ((short, early), (short, short_out), (long, long_out)):
        prompt = torch.tensor([ids])
        reference = gen.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                       max_new_tokens=8, pad_token_id=gen.pad_id)[0, len(ids):].tolist()
        assert all(c.token_ids == reference[: len(c.token_ids)] for c in out.completions)


def test_an_empty_prompt_is_refused_with_a_clear_message(tiny_llama_dir):
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    with pytest.raises(ValueError, match="empty prompt"):
        gen.generate_sync([_request((), 1, seed=1)])


async def test_search_records_carry_the_cached_prompt_tokens(tiny_llama_dir):
    """Through the engine: the counters every record carries report what the cache saved."""
    from pumsearch.api import asearch
    from pumsearch.scorers import load_scorer
    from pumsearch.search.problem import Problem
    from pumsearch.search.result import make_record
    from pumsearch.strategies import search_config

    gen = TransformersGenerator.load(str(tiny_llama_dir))
    config = search_config(strategy="beam", budget=4, beam_width=2, max_tokens=16, max_step_tokens=6, seed=1)
    (result,) = await asearch([Problem("p", "What is 2 + 3?", "5")], generator=gen, config=config,
                              scorer=load_scorer("verifier"))
    record = make_record(result, tree_file=None, scorer="verifier", budget=4, seed=1, started_at=0.0)
    counters = record["counters"]
    assert counters["cached_prompt_tokens"] > 0
    share = counters["cached_prompt_tokens"] / counters["prompt_tokens"]
    assert counters["cached_prompt_share"] == pytest.approx(share, abs=1e-4)
    assert counters["cached_prompt_share"] >= 0.75


def test_decode_stats_count_one_forward_per_step_of_the_longest_row(tiny_llama_dir):
    """Benchmarks read these to tell how many forwards a strategy needs: a call of 3 rows that
    each run to a 6-token cap is one prefill and 5 decode steps of 3 rows (the first token comes
    from the prefill's logits, and nothing runs after the last)."""
    gen = TransformersGenerator.load(str(tiny_llama_dir))
    gen.generate_sync([_request(_prompt(gen, "What is 2 + 3?"), 3, seed=1, max_tokens=6, stop=(),
                                temperature=1.0)])
    stats = gen.decode_stats
    assert (stats.prefill_forwards, stats.decode_steps, stats.row_steps) == (1, 5, 15), stats
