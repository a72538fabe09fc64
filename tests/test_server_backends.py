"""The SGLang server and OpenAI-compatible backends against a real loopback server (helpers_servers)
that generates with a tiny real Llama and injects faults."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from pumsearch.backends import BackendError, BackendUnavailable, load_generator
from pumsearch.backends.openai_compat import OpenAICompatGenerator
from pumsearch.backends.sglang_server import SGLangServerGenerator
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from pumsearch.search.tree import ROOT
from pumsearch.strategies.base import Strategy
from tests.helpers_servers import InferenceServer, closed_port_url
from tests.tiny_models import step_tokenizer

FAST = {"retries": 1, "backoff": 0.01}


@pytest.fixture(scope="module")
def policy_dir(step_llama_dir):
    return step_llama_dir


@pytest.fixture(scope="module")
def live_server(policy_dir):
    server = InferenceServer(policy_dir).start()
    yield server
    server.stop()


@pytest.fixture
def server(live_server):
    deadline = time.monotonic() + 30
    while live_server.state.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)  # a request a previous test gave up on must not land in this test's log
    live_server.faults.__init__()  # fresh faults and log for each test
    live_server.state.log.clear()
    live_server.state.peak_in_flight = 0
    live_server.state.posts = 0
    return live_server


def request(n=1, stop=("\n\n",), max_tokens=12, ids=(2, 50, 5), seed=7):
    return GenerationRequest(
        prompt_text="", prompt_ids=ids, n=n, params=SamplingParams(0.8, 1.0, max_tokens, stop), seed=seed
    )


class TwoSteps(Strategy):
    """Expands the root into two steps, then continues the first step once: enough to see a prefix
    extended by the token ids of what was generated."""

    name = "two-steps"

    async def search(self, problem, ctx):
        (children,) = await ctx.expand([ROOT], 2, until="step")
        await ctx.expand(children[:1], 1, until="step")
        return await ctx.finish(ctx.candidates(ctx.tree.terminals() or children))


def expected_finish(meta_finish, stops):
    """SGLang's finish_reason object, mapped by hand."""
    if meta_finish["type"] == "length":
        return "length"
    return "step" if meta_finish["matched"] in stops else "eos"


async def test_prefixes_are_extended_by_generated_token_ids(server, policy_dir):
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), **FAST)
    text, ids = gen.chat_prompt("what is one", None)
    assert text == "<|im_start|>user\nwhat is one<|im_end|>\n<|im_start|>assistant\n"
    tok = step_tokenizer()
    assert list(ids) == tok(text, add_special_tokens=False)["input_ids"]

    config = SearchConfig(strategy="two-steps", budget=8, max_step_tokens=10, max_tokens=40, system_prompt="")
    engine = Engine(gen, concurrency=1)
    (result,) = await engine.run([Problem("p1", "what is one")], TwoSteps(config))
    await gen.aclose()

    log = server.generate_log()
    assert len(log) == 3
    first_round, second = log[:2], log[2]
    for exchange in first_round:
        assert exchange.request["input_ids"] == list(ids)
        sp = exchange.request["sampling_params"]
        assert (sp["temperature"], sp["top_p"], sp["max_new_tokens"], sp["stop"]) == (0.8, 1.0, 10, ["\n\n"])
    assert (
        first_round[0].request["sampling_params"]["sampling_seed"]
        != first_round[1].request["sampling_params"]["sampling_seed"]
    )
    # the continued node is the first child; its ids are exactly what the server generated
    child = result.tree.children(ROOT)[0]
    made_it = next(e for e in first_round if e.response["output_ids"] == result.tree[child]["token_ids"])
    assert second.request["input_ids"] == list(ids) + made_it.response["output_ids"]
    assert result.tree[child]["text"] == made_it.response["text"]
    by_ids = {tuple(e.response["output_ids"]): e for e in log}
    for node in result.tree.graph.nodes:
        if node != ROOT:
            meta = by_ids[tuple(result.tree[node]["token_ids"])].response["meta_info"]
            assert result.tree[node]["finish_reason"] == expected_finish(meta["finish_reason"], ("\n\n",))
    # the radix-style cache saw prompt + step: all but the last prompt token are cached
    assert second.response["meta_info"]["cached_tokens"] == len(second.request["input_ids"]) - 1
    c = result.counters
    assert c.prompt_tokens == sum(e.response["meta_info"]["prompt_tokens"] for e in log)
    assert c.cached_prompt_tokens == sum(e.response["meta_info"]["cached_tokens"] for e in log)
    assert c.generated_tokens == sum(e.response["meta_info"]["completion_tokens"] for e in log)
    assert c.backend_retries == 0 and c.backend_peak_in_flight == 2
    assert 0 < c.cached_prompt_share < 1


async def test_requests_in_flight_are_bounded(server, policy_dir):
    server.faults.delay = 0.3
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), max_concurrency=3, **FAST)
    (out,) = await gen.generate([request(n=7, max_tokens=3)])
    await gen.aclose()
    assert len(out.completions) == 7
    assert server.state.peak_in_flight == 3
    assert out.requests_in_flight == 3


async def test_5xx_is_retried_and_counted(server, policy_dir):
    server.faults.fail_next = 2
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), retries=3, backoff=0.01)
    (out,) = await gen.generate([request()])
    await gen.aclose()
    assert out.retries == 2 and server.state.posts == 3
    assert out.completions[0].token_ids == server.generate_log()[0].response["output_ids"]


async def test_5xx_for_good_says_what_failed(server, policy_dir):
    server.faults.fail_next = 10
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), **FAST)
    with pytest.raises(BackendUnavailable, match=r"failed after 2 attempts: HTTP 500: injected failure"):
        await gen.generate([request()])
    await gen.aclose()


async def test_timeouts_are_retried_then_fail(server, policy_dir):
    server.faults.delay = 1.0
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), request_timeout=0.3, **FAST)
    with pytest.raises(BackendUnavailable, match="timed out"):
        await gen.generate([request()])
    await gen.aclose()
    assert server.state.posts == 2


async def test_malformed_body_is_a_clear_error(server, policy_dir):
    server.faults.malformed = True
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), **FAST)
    with pytest.raises(BackendError, match=r"malformed response from .*/generate: not JSON"):
        await gen.generate([request()])
    await gen.aclose()


async def test_4xx_is_not_retried_and_shows_the_server_message(server, policy_dir):
    server.faults.reject = "top_k must be -1 (disable) or at least 1, got 0."
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), retries=3, backoff=0.01)
    with pytest.raises(BackendError, match=r"refused the request \(HTTP 400\): top_k must be"):
        await gen.generate([request()])
    await gen.aclose()
    assert server.state.posts == 1


def test_no_server_at_start(policy_dir):
    with pytest.raises(BackendUnavailable, match=r"no server answering at .*/health"):
        SGLangServerGenerator.connect(closed_port_url(), model=str(policy_dir), **FAST)


def test_server_serving_another_model_is_refused(server):
    with pytest.raises(BackendError, match=r"serves .*tiny-llama.*, not 'Qwen/Qwen2\.5-1\.5B-Instruct'"):
        SGLangServerGenerator.connect(server.url, model="Qwen/Qwen2.5-1.5B-Instruct", **FAST)


async def test_server_dying_mid_run_fails_later_problems_and_keeps_earlier_ones(policy_dir):
    server = InferenceServer(policy_dir).start()
    server.faults.die_after = 4  # bon with budget 2 sends two requests per problem
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), **FAST)
    config = SearchConfig(strategy="bon", budget=2, max_tokens=6)
    from pumsearch.strategies.best_of_n import BestOfN

    finished = []
    problems = [Problem(f"p{i}", "what is one") for i in range(4)]
    outcomes = await Engine(gen, concurrency=1).run(
        problems, BestOfN(config), on_result=lambda p, r, e: finished.append((p.id, e))
    )
    await gen.aclose()
    server.stop()
    assert [type(o).__name__ for o in outcomes] == [
        "SearchResult",
        "SearchResult",
        "BackendUnavailable",
        "BackendUnavailable",
    ]
    assert all(len(o.candidates) == 2 for o in outcomes[:2])
    assert "connection refused" in str(outcomes[2])
    assert [pid for pid, err in finished if err is None] == ["p0", "p1"]


def test_cli_with_no_server_prints_one_line_and_exits_2(policy_dir):
    from pumsearch.cli import app

    result = CliRunner().invoke(
        app,
        [
            "solve",
            "what is one",
            "--backend",
            "sglang-server",
            "--url",
            closed_port_url(),
            "--model",
            str(policy_dir),
            "--retries",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no server answering at http://127.0.0.1:")


def test_cli_solves_through_the_server(server, policy_dir, tmp_path):
    from pumsearch.cli import app

    result = CliRunner().invoke(
        app,
        [
            "solve",
            "what is one",
            "--backend",
            "sglang-server",
            "--url",
            server.url,
            "--model",
            str(policy_dir),
            "--budget",
            "3",
            "--max-tokens",
            "6",
            "--json",
            "--tree-out",
            str(tmp_path / "t.json"),
            "--max-concurrency",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert record["status"] == "ok" and record["num_candidates"] == 3
    log = server.generate_log()
    assert record["counters"]["generated_tokens"] == sum(
        e.response["meta_info"]["completion_tokens"] for e in log
    )
    assert record["counters"]["backend_peak_in_flight"] == 2


def test_backend_flags_that_do_not_apply_are_refused():
    from pumsearch.cli import app

    result = CliRunner().invoke(app, ["solve", "q", "--url", "http://127.0.0.1:1"])
    assert (
        result.exit_code == 2
        and "--url and --launch are for --backend sglang-server or openai" in result.output
    )
    result = CliRunner().invoke(app, ["solve", "q", "--backend", "vllm-magic"])
    assert result.exit_code == 2 and "unknown backend 'vllm-magic'" in result.output


# -- OpenAI-compatible (a server that says nothing of itself; tests/test_real_servers.py has the rest)
@pytest.fixture(scope="module")
def named_server(policy_dir):
    server = InferenceServer(policy_dir, served_name="tiny-chat", mode="openai").start()
    yield server
    server.stop()


async def test_openai_completions_extend_by_text_and_count_usage(named_server, policy_dir):
    gen = load_generator(
        "tiny-chat", backend="openai", url=named_server.url + "/v1", tokenizer=str(policy_dir), **FAST
    )
    assert isinstance(gen, OpenAICompatGenerator) and gen.takes_token_ids is False
    text, ids = gen.chat_prompt("what is one", "step by step")
    assert ids is None
    assert text == (
        "<|im_start|>system\nstep by step<|im_end|>\n<|im_start|>user\nwhat is one<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    req = GenerationRequest(
        prompt_text=text + "one\n\n",
        prompt_ids=None,
        n=4,
        params=SamplingParams(0.8, 1.0, 12, ("\n\n",), want_logprobs=True),
        seed=11,
    )
    (out,) = await gen.generate([req])
    await gen.aclose()
    (exchange,) = named_server.state.log[-1:]
    sent, got = exchange.request, exchange.response
    assert (sent["model"], sent["prompt"], sent["n"], sent["stop"], sent["max_tokens"], sent["logprobs"]) == (
        "tiny-chat",
        text + "one\n\n",
        4,
        ["\n\n"],
        12,
        0,
    )
    assert [c.text for c in out.completions] == [ch["text"] for ch in got["choices"]]
    assert sum(c.num_tokens for c in out.completions) == got["usage"]["completion_tokens"]
    assert out.prompt_tokens == got["usage"]["prompt_tokens"] and out.cached_tokens is None
    # no stop field: the generated tokens of the log-probabilities say which choices hit the stop
    assert [c.finish_reason for c in out.completions] == exchange.finishes
    assert all(c.token_ids is None for c in out.completions) and gen.guessed_finishes == 0


def test_openai_server_with_another_model_is_refused(named_server, policy_dir):
    with pytest.raises(BackendError, match="serves tiny-chat, not 'gpt-big'"):
        load_generator("gpt-big", backend="openai", url=named_server.url, tokenizer=str(policy_dir), **FAST)


def test_share_tokens_adds_up_to_usage():
    from pumsearch.backends.openai_compat import share_tokens
    from pumsearch.search.protocols import Completion

    comps = [Completion("a", None, n, "eos") for n in (3, 5, 1)]
    share_tokens(comps, 19)
    assert [c.num_tokens for c in comps] == [6, 11, 2]  # 19 * (3, 5, 1) / 9 = 6.33, 10.56, 2.11


def test_run_loops_each_get_a_client(server, policy_dir):
    """The CLI may run several asyncio.run calls with one generator; each gets a working client."""
    gen = SGLangServerGenerator.connect(server.url, model=str(policy_dir), **FAST)
    for _ in range(2):
        (out,) = asyncio.run(gen.generate([request(max_tokens=2)]))
        assert len(out.completions) == 1
    asyncio.run(gen.aclose())
