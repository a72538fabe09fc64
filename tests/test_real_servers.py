"""The OpenAI-compatible backend against servers as they really behave (issue 18), and the SGLang
backends' log-probabilities, BOS handling and seeds (issue 13, items 5-7).

Every server here is a loopback double (tests/helpers_servers.py) written from that server's
source: llama-cpp-python's ``llama_cpp.server``, llama.cpp's ``llama-server``, vLLM's and SGLang's
/v1, and the bare OpenAI schema. benchmarks/real_servers.sh runs the real llama-cpp-python server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.backends import BackendError, BackendUnavailable, load_generator
from pumsearch.backends.openai_compat import OpenAICompatGenerator
from pumsearch.backends.remote import sample_seeds
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from pumsearch.search.tree import ROOT, load_tree
from pumsearch.strategies.base import Strategy
from pumsearch.strategies.best_of_n import BestOfN
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_servers import BOS, InferenceServer, build_bos_reward, build_bos_step_llama, build_char_llama

FAST = {"retries": 1, "backoff": 0.01}
STOP = ("\n\n",)


@pytest.fixture(scope="module")
def bos_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bos_step_llama(tmp_path_factory.mktemp("bos") / "bos-llama")


@pytest.fixture(scope="module")
def char_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_char_llama(tmp_path_factory.mktemp("char") / "char-llama")


MODES = ("llamacpp-python", "llamacpp", "vllm", "sglang", "openai")


def every_mode(model_dir: Path) -> Iterator[dict[str, InferenceServer]]:
    """One server per mode on ``model_dir``, served as "tiny"; stopped when the fixture ends."""
    started = {mode: InferenceServer(model_dir, mode=mode, served_name="tiny").start() for mode in MODES}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def servers(step_llama_dir):
    """One server per mode on the step policy; a fresh log for every test."""
    yield from every_mode(step_llama_dir)


@pytest.fixture
def fresh(servers):
    for server in servers.values():
        deadline = time.monotonic() + 30
        while server.state.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)  # a request a previous test left behind must not land in this one's log
        server.faults.__init__()
        server.state.reset()
    return servers


def connect(server: InferenceServer, tokenizer: Path, **options) -> OpenAICompatGenerator:
    return load_generator("tiny", backend="openai", url=server.url, tokenizer=str(tokenizer), **{**FAST, **options})


def sample_request(gen: OpenAICompatGenerator, n: int = 6, *, seed: int = 3, max_tokens: int = 12,
                   **params) -> GenerationRequest:
    text, ids = gen.chat_prompt("what is one", None)
    return GenerationRequest(text, ids, n, SamplingParams(1.0, 1.0, max_tokens, STOP, **params), seed=seed)


def truths(server: InferenceServer) -> list[str]:
    return sorted(f for e in server.completions_log() for f in e.finishes)


# -- 1. n ignored: one request per sample, each with its own seed --------------------------------
async def test_llamacpp_python_ignores_n_so_each_sample_is_a_seeded_request(fresh, step_llama_dir):
    server = fresh["llamacpp-python"]
    gen = connect(server, step_llama_dir)
    assert gen.kind.name == "llama-cpp-python" and gen.split_samples
    req = sample_request(gen, n=4)
    (out,) = await gen.generate([req])
    await gen.aclose()
    log = server.completions_log()
    assert len(out.completions) == 4 and len(log) == 4
    assert {e.request["n"] for e in log} == {1}
    assert sorted(e.request["seed"] for e in log) == sorted(sample_seeds(req))
    # the server itself: one choice for n=4, and the same seed gives the same text
    body = {"model": "tiny", "prompt": req.prompt_text, "n": 4, "seed": 5, "max_tokens": 8}
    first, second = (server.post("/v1/completions", dict(body)).response for _ in range(2))
    assert len(first["choices"]) == 1 and first["choices"][0]["text"] == second["choices"][0]["text"]


async def test_a_server_that_hides_its_kind_and_ignores_n_is_detected(step_llama_dir):
    server = InferenceServer(step_llama_dir, mode="llamacpp-python", served_name="tiny", owned_by="a-proxy").start()
    try:
        gen = connect(server, step_llama_dir)
        assert gen.kind.name == "openai" and not gen.split_samples
        (out,) = await gen.generate([sample_request(gen, n=3)])
        assert len(out.completions) == 3 and gen.split_samples
        assert [e.request["n"] for e in server.completions_log()] == [3, 1, 1, 1]  # asked once, then split
        await gen.generate([sample_request(gen, n=2, seed=9)])
        assert [e.request["n"] for e in server.completions_log()][4:] == [1, 1]
        await gen.aclose()
    finally:
        server.stop()


async def test_server_n_declares_how_samples_are_sent(fresh, step_llama_dir):
    strict = fresh["openai"]
    gen = connect(strict, step_llama_dir, server_n="split")
    (out,) = await gen.generate([sample_request(gen, n=3)])
    await gen.aclose()
    assert len(out.completions) == 3 and [e.request["n"] for e in strict.completions_log()] == [1, 1, 1]
    gen = connect(fresh["llamacpp-python"], step_llama_dir, server_n="request")
    with pytest.raises(BackendError, match=r"expected 3 choices, got 1 \(the server ignores n: pass --server-n"):
        await gen.generate([sample_request(gen, n=3)])
    await gen.aclose()


async def test_sglang_v1_copies_one_seed_to_every_choice_so_samples_go_one_per_request(fresh, step_llama_dir):
    server = fresh["sglang"]
    body = {"model": "tiny", "prompt": "what is one", "n": 3, "seed": 5, "max_tokens": 8, "temperature": 1.0}
    texts = [c["text"] for c in server.post("/v1/completions", body).response["choices"]]
    assert len(set(texts)) == 1  # deterministic inference, one sampling_seed for all n
    gen = connect(server, step_llama_dir)
    assert gen.split_samples
    (out,) = await gen.generate([sample_request(gen, n=3)])
    await gen.aclose()
    assert len({e.request["seed"] for e in server.completions_log()}) == 3 and len(out.completions) == 3


# -- 2. end of sequence against a stop string: each server's evidence ----------------------------
def true_samples(server: InferenceServer, req: GenerationRequest) -> list:
    """What the model generated for each sample of ``req``, in sample order (by seed where each
    sample was its own request)."""
    log = server.completions_log()
    if len(log) == 1:
        return log[0].samples
    by_seed = {e.request["seed"]: e.samples[0] for e in log}
    return [by_seed[seed] for seed in sample_seeds(req)]


@pytest.mark.parametrize(("mode", "params", "evidence"), [
    ("vllm", {}, "stop_reason"),
    ("sglang", {}, "matched_stop"),
    ("llamacpp", {}, "__verbose.stop_type"),
    ("llamacpp-python", {"want_logprobs": True}, "the tokens of the log-probabilities"),
    ("openai", {"want_logprobs": True}, "the tokens of the log-probabilities"),
])
async def test_end_of_sequence_and_stop_string_are_told_apart(fresh, step_llama_dir, mode, params, evidence):
    server = fresh[mode]
    gen = connect(server, step_llama_dir)
    req = sample_request(gen, n=8, **params)
    (out,) = await gen.generate([req])
    await gen.aclose()
    truth = true_samples(server, req)
    assert [c.finish_reason for c in out.completions] == [t.finish_reason for t in truth], evidence
    assert {"step", "eos", "length"} <= {t.finish_reason for t in truth}  # the seed gives every ending
    assert gen.guessed_finishes == 0
    for comp in out.completions:
        assert comp.matched_stop == ("\n\n" if comp.finish_reason == "step" else None)


async def test_llamacpp_python_counts_tell_eos_from_a_stop(char_llama_dir):
    """llama-cpp-python counts a stop string's tokens, not the EOS (llama.py:1412-1439): as many
    tokens as the text re-tokenises to is the end of sequence, as many as text + stop a step. On a
    tokenizer where text re-tokenises as it was generated (the character-level one here, and a
    byte-level BPE mostly) that tells every choice apart."""
    server = InferenceServer(char_llama_dir, mode="llamacpp-python", served_name="tiny").start()
    try:
        gen = connect(server, char_llama_dir)
        req = sample_request(gen, n=16, seed=4)
        (out,) = await gen.generate([req])
        await gen.aclose()
        truth = true_samples(server, req)
        assert [c.finish_reason for c in out.completions] == [t.finish_reason for t in truth]
        assert {"step", "eos", "length"} <= {t.finish_reason for t in truth} and gen.guessed_finishes == 0
    finally:
        server.stop()


async def test_where_counts_cannot_tell_the_choice_is_a_counted_guess(fresh, step_llama_dir):
    """The step policy's word pieces swallow their neighbours (",\n\n" and " \n\n" are one token
    each, "whatthree" re-tokenises to one unknown word), so text and text + stop often count the
    same, or neither matches: such a choice is taken for a step (the search may go on; a finished
    answer is not cut short) and counted in ``guessed_finishes``. A hidden special token can still
    mimic a one-token stop (docs/backends.md)."""
    server = fresh["llamacpp-python"]
    gen = connect(server, step_llama_dir)
    req = sample_request(gen, n=16)
    (out,) = await gen.generate([req])
    await gen.aclose()
    truth = true_samples(server, req)
    wrong = [(c, t) for c, t in zip(out.completions, truth, strict=True) if c.finish_reason != t.finish_reason]
    assert wrong and all(c.finish_reason == "step" and t.finish_reason == "eos" for c, t in wrong)
    assert len(wrong) <= gen.guessed_finishes < len(out.completions)


async def test_a_server_that_says_nothing_gets_a_guess_that_is_counted(fresh, step_llama_dir):
    server = fresh["openai"]
    gen = connect(server, step_llama_dir)
    (out,) = await gen.generate([sample_request(gen, n=8)])
    await gen.aclose()
    stopped = [c for c in out.completions if c.finish_reason != "length"]
    assert {c.finish_reason for c in stopped} == {"step"}  # the safe guess: the search may go on
    assert gen.guessed_finishes == len(stopped) and "eos" in truths(server)


async def test_token_counts_follow_each_servers_rule(char_llama_dir):
    """completion_tokens counts the EOS on vLLM and llama.cpp, not on llama-cpp-python; pumsearch
    counts it on every server, as the transformers backend does."""
    counts, usage = {}, {}
    for mode in ("vllm", "llamacpp", "llamacpp-python"):
        server = InferenceServer(char_llama_dir, mode=mode, served_name="tiny").start()
        try:
            gen = connect(server, char_llama_dir)
            req = sample_request(gen, n=16, seed=4)
            (out,) = await gen.generate([req])
            await gen.aclose()
            counts[mode] = [(c.finish_reason, c.num_tokens) for c in out.completions]
            usage[mode] = [(t.finish_reason, len(t.token_ids)) for t in true_samples(server, req)]
        finally:
            server.stop()
    assert counts["vllm"] == usage["vllm"]  # one request, n choices, each with its token ids
    assert counts["llamacpp"] == counts["llamacpp-python"] == usage["llamacpp"]  # seeded alike
    assert any(reason == "eos" for reason, _ in counts["llamacpp-python"])


# -- 3. server-side sampling defaults: neutral values sent, --extra-body over them -----------------
@pytest.mark.parametrize(("mode", "neutral"), [
    ("llamacpp-python", {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "presence_penalty": 0.0,
                         "frequency_penalty": 0.0, "mirostat_mode": 0}),
    ("llamacpp", {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "typical_p": 1.0, "xtc_probability": 0.0,
                  "dry_multiplier": 0.0, "mirostat": 0}),
    ("vllm", {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0}),
    ("sglang", {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}),
])
async def test_server_defaults_are_overridden_by_neutral_values(fresh, step_llama_dir, mode, neutral):
    server = fresh[mode]
    gen = connect(server, step_llama_dir)
    req = sample_request(gen, n=1, max_tokens=4)
    await gen.generate([GenerationRequest(req.prompt_text, req.prompt_ids, 1,
                                          SamplingParams(0.7, 0.9, 4, STOP), seed=1)])
    await gen.aclose()
    (exchange,) = server.completions_log()
    assert exchange.effective["temperature"] == 0.7 and exchange.effective["top_p"] == 0.9
    assert {k: exchange.effective[k] for k in neutral} == neutral


async def test_a_models_generation_config_does_not_reach_vllm_samples(step_llama_dir):
    server = InferenceServer(step_llama_dir, mode="vllm", served_name="tiny",
                             generation_config={"temperature": 0.6, "top_k": 20, "repetition_penalty": 1.05}).start()
    try:
        gen = connect(server, step_llama_dir)
        await gen.generate([sample_request(gen, n=1, max_tokens=3)])
        await gen.aclose()
        effective = server.completions_log()[0].effective
        assert (effective["temperature"], effective["top_k"], effective["repetition_penalty"]) == (1.0, 0, 1.0)
    finally:
        server.stop()


async def test_extra_body_is_laid_over_every_request(fresh, step_llama_dir):
    server = fresh["llamacpp-python"]
    gen = connect(server, step_llama_dir, extra_body={"top_k": 40, "mirostat_mode": 2})
    await gen.generate([sample_request(gen, n=2, max_tokens=3)])
    await gen.aclose()
    assert [(e.effective["top_k"], e.effective["mirostat_mode"]) for e in server.completions_log()] == [(40, 2)] * 2
    gen = connect(fresh["openai"], step_llama_dir, extra_body={"top_k": 40})
    with pytest.raises(BackendError, match="Unrecognized request argument supplied: top_k"):
        await gen.generate([sample_request(gen, n=1, max_tokens=3)])
    await gen.aclose()


def test_extra_body_and_server_n_on_the_command_line(fresh, step_llama_dir):
    from pumsearch.cli import app

    server = fresh["llamacpp-python"]
    base = ["solve", "what is one", "--backend", "openai", "--url", server.url, "--tokenizer", str(step_llama_dir),
            "--budget", "2", "--max-tokens", "4", "--json"]
    result = CliRunner().invoke(app, [*base, "--extra-body", '{"top_k": 7}'])
    assert result.exit_code == 0, result.output
    assert {e.effective["top_k"] for e in server.completions_log()} == {7}
    for flags, message in [
        (["--extra-body", "{top_k: 7}"], "--extra-body is not JSON"),
        (["--extra-body", "[1]"], "--extra-body must be a JSON object, not list"),
        (["--server-n", "sometimes"], "--server-n must be one of auto, request, split"),
    ]:
        result = CliRunner().invoke(app, [*base, *flags])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    result = CliRunner().invoke(app, ["solve", "q", "--backend", "sglang-server", "--url", server.url,
                                      "--server-n", "split"])
    assert result.exit_code == 2 and "--server-n is for --backend openai, not sglang-server" in result.output


# -- 4. a GGUF file is the tokenizer -------------------------------------------------------------
@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from pumsearch.backends.embedded import find_gguf
    from pumsearch.models import ModelLoadError

    try:
        return find_gguf()
    except ModelLoadError as err:
        pytest.skip(str(err))


@pytest.mark.slow
async def test_a_gguf_file_is_the_tokenizer_and_the_url_alone_is_enough(step_llama_dir, gguf_path, embedded_model_dir):
    from transformers import AutoTokenizer

    server = InferenceServer(step_llama_dir, mode="llamacpp-python", served_name=str(gguf_path)).start()
    try:  # llama-cpp-python names the model by its --model path when no alias is given
        gen = load_generator(None, backend="openai", url=server.url, **FAST)
        converted = AutoTokenizer.from_pretrained(embedded_model_dir)
        assert gen.name == str(gguf_path) and len(gen.tokenizer) == len(converted)
        assert gen.chat_prompt("hi", "be brief")[0] == converted.apply_chat_template(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            tokenize=False, add_generation_prompt=True)
        await gen.aclose()
    finally:
        server.stop()
    server = InferenceServer(step_llama_dir, mode="llamacpp-python", served_name="smollm2").start()
    try:  # served under an alias (--model_alias smollm2): the file is named by --tokenizer
        gen = load_generator(None, backend="openai", url=server.url, tokenizer=str(gguf_path), **FAST)
        assert gen.name == "smollm2" and len(gen.tokenizer) == len(converted)
        await gen.aclose()
    finally:
        server.stop()


def test_a_gguf_tokenizer_is_read_from_the_file_once(gguf_path, tmp_path, monkeypatch):
    """Reading a GGUF's tokenizer takes seconds (gguf-py parses every token string one by one): 5 of
    the 7 s that `pumsearch run --backend openai` spent before its first request to
    llama-cpp-python (benchmarks/RESULTS.md, "its-hub"). The converted tokenizer is kept in the
    cache and loaded from there next time, the same tokenizer."""
    import transformers

    from pumsearch.models import load_tokenizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    reads = []
    read = transformers.AutoTokenizer.from_pretrained

    def counting(name, *args, **kwargs):
        reads.extend([name] if kwargs.get("gguf_file") else [])
        return read(name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    first, second = load_tokenizer(str(gguf_path)), load_tokenizer(str(gguf_path))
    assert len(reads) == 1 and list((tmp_path / "pumsearch").iterdir())
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2 + 2 = ?"}]
    assert second.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        first.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for text in ["Natalia sold 48 clips.\n\n$\\boxed{72}$ <|im_end|>", "  ünïcode  ", ""]:
        assert second(text)["input_ids"] == first(text)["input_ids"]
    assert type(second) is type(first) and second.get_vocab() == first.get_vocab()
    assert (second.bos_token, second.eos_token, second.pad_token) == (first.bos_token, first.eos_token, first.pad_token)


def test_the_gguf_tokenizer_cache_follows_the_file(tmp_path):
    """A GGUF file rewritten in place (new size or modification time) is read again."""
    from pumsearch.models import gguf_tokenizer_cache

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF one")
    kept = gguf_tokenizer_cache(gguf)
    assert gguf_tokenizer_cache(gguf) == kept
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    touched = gguf_tokenizer_cache(gguf)
    gguf.write_bytes(b"GGUF two!")
    assert len({kept, touched, gguf_tokenizer_cache(gguf)}) == 3
    elsewhere = tmp_path / "other" / "model.gguf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF two!")
    os.utime(elsewhere, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns))
    assert gguf_tokenizer_cache(elsewhere) != gguf_tokenizer_cache(gguf)


def test_a_missing_gguf_tokenizer_is_one_clear_line(tmp_path):
    from pumsearch.models import ModelLoadError, load_tokenizer

    with pytest.raises(ModelLoadError, match=r"could not load the tokenizer .*model.gguf.*does not exist"):
        load_tokenizer(str(tmp_path / "model.gguf"))


# -- 5. cached tokens: what the server reports, None where it does not ---------------------------
async def test_cached_tokens_are_unknown_where_the_server_does_not_say(fresh, step_llama_dir):
    seen = {}
    for mode in ("llamacpp-python", "vllm", "sglang", "openai", "llamacpp"):
        gen = connect(fresh[mode], step_llama_dir)
        (out,) = await gen.generate([sample_request(gen, n=2, max_tokens=3)])
        await gen.aclose()
        seen[mode] = out.cached_tokens
    assert seen["llamacpp-python"] is seen["vllm"] is seen["sglang"] is seen["openai"] is None
    log = fresh["llamacpp"].completions_log()
    details = [e.response["usage"]["prompt_tokens_details"]["cached_tokens"] for e in log]
    assert seen["llamacpp"] == sum(details) and seen["llamacpp"] > 0


async def test_vllm_reports_cached_tokens_when_asked_to(step_llama_dir):
    server = InferenceServer(step_llama_dir, mode="vllm", served_name="tiny", cache_report=True).start()
    try:
        gen = connect(server, step_llama_dir)
        outs = [(await gen.generate([sample_request(gen, n=2, max_tokens=3)]))[0] for _ in range(2)]
        await gen.aclose()
        reported = [e.response["usage"]["prompt_tokens_details"]["cached_tokens"] for e in server.completions_log()]
        assert [o.cached_tokens for o in outs] == reported and reported[0] == 0 < reported[1]
    finally:
        server.stop()


def test_unknown_cached_tokens_are_null_in_records_summaries_and_reports(fresh, step_llama_dir, tmp_path):
    from pumsearch.cli import app

    server = fresh["llamacpp-python"]
    data = write_gsm8k_style(tmp_path / "g.jsonl", 2)
    out = tmp_path / "run"
    args = ["run", "--dataset", str(data), "--out", str(out), "--backend", "openai", "--url", server.url,
            "--tokenizer", str(step_llama_dir), "--strategy", "bon", "--budget", "2", "--max-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["counters"]["cached_prompt_tokens"] is None and record["counters"]["cached_prompt_share"] is None
        assert record["counters"]["prompt_tokens"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_reproducible"] is True  # llama-cpp-python honours seeds
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    result = CliRunner().invoke(app, ["solve", "what is one", "--backend", "openai", "--url", server.url,
                                      "--tokenizer", str(step_llama_dir), "--budget", "2", "--max-tokens", "4"])
    assert result.exit_code == 0 and "cached_prompt_tokens" in result.output and "unknown" in result.output


# -- 6. requests in flight and requests the server may still be running ------------------------
async def test_a_one_slot_server_gets_one_request_at_a_time(fresh, step_llama_dir):
    server = fresh["llamacpp-python"]
    gen = connect(server, step_llama_dir)
    assert gen.client.max_concurrency == 1
    server.faults.delay = 0.05
    (out,) = await gen.generate([sample_request(gen, n=4, max_tokens=3)])
    await gen.aclose()
    assert len(out.completions) == 4 and server.state.peak_in_flight == 1 and out.requests_in_flight == 1
    assert connect(server, step_llama_dir, max_concurrency=3).client.max_concurrency == 3  # the flag wins


def test_llamacpp_in_flight_follows_its_slots(step_llama_dir):
    server = InferenceServer(step_llama_dir, mode="llamacpp", served_name="tiny", slots=2).start()
    try:
        assert connect(server, step_llama_dir).client.max_concurrency == 2
    finally:
        server.stop()


async def test_a_timed_out_request_on_a_server_that_keeps_running_it_is_not_sent_again(fresh, step_llama_dir):
    server = fresh["llamacpp-python"]
    server.faults.delay = 1.0
    gen = connect(server, step_llama_dir, request_timeout=0.3, retries=3)
    with pytest.raises(BackendUnavailable, match=r"timed out after 0.3s; the server keeps running a request whose "
                                                 r"client left, so it is not sent again: raise --request-timeout"):
        await gen.generate([sample_request(gen, n=1, max_tokens=3)])
    await gen.aclose()
    deadline = time.monotonic() + 10
    while server.state.finished_after_client_left < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.state.posts == 1 and server.state.finished_after_client_left == 1


async def test_a_timed_out_request_is_cancelled_by_hanging_up_before_it_is_retried(fresh, step_llama_dir):
    server = fresh["vllm"]
    server.faults.delay = 1.0
    gen = connect(server, step_llama_dir, request_timeout=0.3, retries=2, backoff=0.2)
    with pytest.raises(BackendUnavailable, match="failed after 3 attempts: timed out"):
        await gen.generate([sample_request(gen, n=1, max_tokens=3)])
    await gen.aclose()
    deadline = time.monotonic() + 10
    while server.state.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.state.posts == 3 and server.state.cancelled == 3
    assert server.state.peak_in_flight == 1  # each abandoned request stopped before its retry began


# -- 7. token ids where the server takes them; one BOS either way --------------------------------
class TwoSteps(Strategy):
    """Two steps from the root, then the first one continued: a prefix extended by what the server
    generated."""

    name = "two-steps"

    async def search(self, problem, ctx):
        (children,) = await ctx.expand([ROOT], 2, until="step")
        await ctx.expand(children[:1], 1, until="step")
        return await ctx.finish(ctx.candidates(ctx.tree.terminals() or children))


@pytest.mark.parametrize("mode", ["vllm", "sglang", "llamacpp"])
async def test_ids_go_where_the_server_takes_them_and_prefixes_grow_by_generated_ids(fresh, step_llama_dir, mode):
    server = fresh[mode]
    gen = connect(server, step_llama_dir)
    _, ids = gen.chat_prompt("what is one", None)
    assert gen.takes_token_ids and ids is not None
    config = SearchConfig(strategy="two-steps", budget=8, max_step_tokens=10, max_tokens=40, system_prompt="")
    (result,) = await Engine(gen, concurrency=1).run([Problem("p", "what is one")], TwoSteps(config))
    await gen.aclose()
    log = server.completions_log()
    first_round, second = log[:-1], log[-1]  # vLLM: one request with n=2; the others: two
    assert [e.request["prompt"] for e in first_round] == [list(ids)] * len(first_round)
    child = result.tree.children(ROOT)[0]
    made_it = next(s for e in first_round for s in e.samples if s.token_ids == result.tree[child]["token_ids"])
    assert second.request["prompt"] == list(ids) + made_it.token_ids
    assert result.tree[child]["text"] == made_it.text


def test_llamacpp_python_takes_text(fresh, step_llama_dir):
    gen = connect(fresh["llamacpp-python"], step_llama_dir)
    assert not gen.takes_token_ids and gen.chat_prompt("what is one", None)[1] is None


@pytest.fixture(scope="module")
def bos_servers(bos_llama_dir):
    yield from every_mode(bos_llama_dir)


async def test_a_bos_adding_server_sees_one_bos(bos_servers, bos_llama_dir):
    """The chat template writes a BOS and the servers' tokenisation adds one (Llama 3): ids go as
    they are; text goes without the template's BOS, or with add_special_tokens false (vLLM)."""
    bos_id = bos_servers["vllm"]._tokenizer.convert_tokens_to_ids(BOS)
    for mode in ("llamacpp-python", "llamacpp", "vllm", "sglang"):
        server = bos_servers[mode]
        server.state.reset()
        gen = connect(server, bos_llama_dir)
        text, ids = gen.chat_prompt("what is one", None)
        assert text.startswith(BOS) and (ids is None or list(ids).count(bos_id) == 1)
        by_ids, by_text = GenerationRequest(text, ids, 1, SamplingParams(1.0, 1.0, 3, STOP), seed=1), \
            GenerationRequest(text, None, 1, SamplingParams(1.0, 1.0, 3, STOP), seed=1)
        await gen.generate([by_ids, by_text])
        await gen.aclose()
        for exchange in server.completions_log():
            (seen,) = exchange.prompt_ids
            assert seen[0] == bos_id and seen.count(bos_id) == 1, (mode, exchange.request["prompt"])
    # the control: a server that says nothing of itself gets the template's text as it is
    gen = connect(bos_servers["openai"], bos_llama_dir)
    await gen.generate([sample_request(gen, n=1, max_tokens=2)])
    await gen.aclose()
    assert bos_servers["openai"].completions_log()[-1].prompt_ids[0][:2] == [bos_id, bos_id]


async def test_sglang_native_text_prompts_and_classify_see_one_bos(bos_llama_dir, tmp_path):
    from pumsearch.backends.sglang_server import SGLangServerGenerator
    from pumsearch.scorers import load_scorer
    from pumsearch.search.protocols import ScoreItem

    server = InferenceServer(bos_llama_dir, mode="sglang").start()
    reward = InferenceServer(build_bos_reward(tmp_path / "bos-rm"), reward=True).start()
    try:
        gen = SGLangServerGenerator.connect(server.url, model=str(bos_llama_dir), **FAST)
        text, _ = gen.chat_prompt("what is one", None)
        await gen.generate([GenerationRequest(text, None, 1, SamplingParams(1.0, 1.0, 3, STOP), seed=1)])
        await gen.aclose()
        bos_id = server._tokenizer.convert_tokens_to_ids(BOS)
        (exchange,) = server.generate_log()
        assert exchange.request["text"] == text.removeprefix(BOS) and exchange.prompt_ids[0].count(bos_id) == 1
        scorer = load_scorer("orm", url=reward.url, step_delimiter="\n\n")
        (score,) = await scorer.score([ScoreItem(Problem("p", "what is one"), ("one",), complete=True)])
        await scorer.aclose()
        (exchange,) = reward.state.log
        (ids,) = exchange.request["input_ids"]
        assert "text" not in exchange.request and ids[0] == bos_id and ids.count(bos_id) == 1
        assert score.value == exchange.response[0]["embedding"][0]
    finally:
        server.stop()
        reward.stop()


# -- issue 13 item 5: per-token log-probabilities from every server backend ---------------------
@pytest.mark.parametrize("mode", ["vllm", "llamacpp", "llamacpp-python", "sglang", "openai"])
async def test_logprobs_and_top_alternatives_come_back_by_token_id(fresh, step_llama_dir, mode):
    server = fresh[mode]
    gen = connect(server, step_llama_dir)
    (out,) = await gen.generate([sample_request(gen, n=4, want_logprobs=True, top_logprobs=2)])
    await gen.aclose()
    samples = [s for e in server.completions_log() for s in e.samples]
    assert gen.logprobs_tempered is {"sglang": True, "openai": None}.get(mode, False)
    for comp in out.completions:
        sample = next(s for s in samples if s.text == comp.text and s.finish_reason == comp.finish_reason)
        if mode == "llamacpp" and comp.finish_reason == "step" and not comp.token_logprobs:
            continue  # llama.cpp cuts the stop word's entries, here the step's only token
        n = len(comp.token_logprobs)  # llama-cpp-python leaves out the EOS, llama.cpp the stop words
        assert 0 < n <= len(sample.token_ids) and comp.logprob == pytest.approx(sum(comp.token_logprobs))
        assert len(comp.top_logprobs) == n
        if mode != "sglang":  # the raw distribution, as the model gives it
            assert comp.token_logprobs == pytest.approx(sample.token_logprobs[:n], abs=1e-5)
            assert [[t for t, _ in top] for top in comp.top_logprobs] == [
                [t for t, _ in top[:2]] for top in sample.top_logprobs[:n]]


async def test_sglang_native_logprobs_with_top_k(step_llama_dir):
    from pumsearch.backends.sglang_server import SGLangServerGenerator

    server = InferenceServer(step_llama_dir, mode="sglang").start()
    try:
        gen = SGLangServerGenerator.connect(server.url, model=str(step_llama_dir), **FAST)
        _, ids = gen.chat_prompt("what is one", None)
        params = SamplingParams(0.7, 1.0, 6, STOP, want_logprobs=True, top_logprobs=3)
        (out,) = await gen.generate([GenerationRequest("", ids, 2, params, seed=4)])
        await gen.aclose()
        for exchange in server.generate_log():
            assert exchange.request["return_logprob"] is True and exchange.request["top_logprobs_num"] == 3
        by_ids = {tuple(e.response["output_ids"]): e.response["meta_info"] for e in server.generate_log()}
        for comp in out.completions:
            meta = by_ids[tuple(comp.token_ids)]
            assert comp.token_logprobs == [t[0] for t in meta["output_token_logprobs"]]
            assert comp.top_logprobs == [[(t[1], t[0]) for t in top] for top in meta["output_top_logprobs"]]
            assert len(comp.token_logprobs) == len(comp.token_ids)
    finally:
        server.stop()


# -- issue 13 item 7: SGLang seeds mean something only with deterministic inference --------------
@pytest.mark.parametrize("deterministic", [True, False])
def test_runs_record_whether_sglang_samples_are_reproducible(step_llama_dir, tmp_path, deterministic):
    from pumsearch.cli import app

    server = InferenceServer(step_llama_dir, mode="sglang", deterministic=deterministic).start()
    try:
        data = write_gsm8k_style(tmp_path / "g.jsonl", 1)
        args = ["run", "--dataset", str(data), "--out", str(tmp_path / "run"), "--backend", "sglang-server",
                "--url", server.url, "--model", str(step_llama_dir), "--budget", "2", "--max-tokens", "3"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["samples_reproducible"] is deterministic
    finally:
        server.stop()


def test_launch_turns_on_deterministic_inference_and_raw_logprobs(monkeypatch):
    from pumsearch.backends import remote

    started = {}

    class Recorder:
        def __init__(self, command, *, url, log_path=None, env=None):
            started.update(command=command, env=env)

        def wait_healthy(self, timeout):
            pass

    monkeypatch.setattr(remote, "require_sglang", lambda: None)
    monkeypatch.setattr(remote, "LaunchedServer", Recorder)
    monkeypatch.delenv(remote.RAW_LOGPROBS_ENV, raising=False)
    remote.launch_sglang_server("some/model", extra_args=["--dp", "2"])
    assert started["command"][-3:] == ["--dp", "2", "--enable-deterministic-inference"]
    assert started["env"] == {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1"}
    remote.launch_sglang_server("some/model", extra_args=["--enable-deterministic-inference"])
    assert started["command"].count("--enable-deterministic-inference") == 1


async def test_bon_over_a_one_slot_server_keeps_every_sample(fresh, step_llama_dir):
    """End to end on the llama-cpp-python double: Best-of-N with samples sent one by one, seeded,
    counted."""
    server = fresh["llamacpp-python"]
    gen = connect(server, step_llama_dir)
    config = SearchConfig(strategy="bon", budget=4, max_tokens=8)
    (result,) = await Engine(gen, concurrency=2).run([Problem("p", "what is one")], BestOfN(config))
    await gen.aclose()
    log = server.completions_log()
    assert len(result.candidates) == 4 and len(log) == 4
    assert result.counters.generated_tokens == sum(
        e.response["usage"]["completion_tokens"] + (e.finishes == ["eos"]) for e in log)
    assert result.counters.cached_prompt_tokens is None and result.counters.backend_peak_in_flight == 1


@pytest.mark.parametrize("mode", ["vllm", "llamacpp-python"])
def test_a_tree_search_with_no_scorer_scores_by_the_servers_log_probabilities(fresh, step_llama_dir, tmp_path, mode):
    """The default scorer of a tree search (confidence) runs on an OpenAI-compatible server: it asks
    for top-k log-probabilities, records them on the nodes and costs no scorer forward pass."""
    from pumsearch.cli import app

    server = fresh[mode]
    tree = tmp_path / "t.json"
    result = CliRunner().invoke(app, ["solve", "what is one", "--backend", "openai", "--url", server.url,
                                      "--tokenizer", str(step_llama_dir), "--strategy", "beam", "--budget", "4",
                                      "--max-tokens", "12", "--max-step-tokens", "4", "--json",
                                      "--tree-out", str(tree)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["scorer"] == "confidence" and "no --scorer" in record["scorer_default"]
    assert record["counters"]["scorer_tokens"] == 0
    assert {e.request["logprobs"] for e in server.completions_log()} == {20}  # the scorer's k
    searched, _ = load_tree(tree)
    nodes = [searched[n] for n in searched.graph.nodes if n != ROOT]
    # one value per token the server reports (llama-cpp-python leaves out the EOS: a step of only
    # the EOS has none)
    assert all(len(n["token_confidences"]) == len(n["token_logprobs"]) <= n["num_tokens"] for n in nodes)
    assert sum(len(n["token_logprobs"]) for n in nodes) > 0
