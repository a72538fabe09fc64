"""The in-process SGLang backend, driven through a recording stand-in of the ``sglang`` module.

sglang needs a CUDA GPU, so it cannot run here. The stand-in's signatures are copied from SGLang's
python/sglang/srt/entrypoints/engine.py (sgl-project/sglang, commit 001067fffe33427bee0ed2f007fb7551a1d76b44,
the 0.5.x line): ``Engine(**kwargs)`` registering ``atexit.register(self.shutdown)``,
``async_generate(prompt=None, sampling_params=None, input_ids=None, ..., return_logprob=False, ...)``,
``get_all_child_pids()`` and ``shutdown()`` (which kills every child process of the caller). Its
outputs come from a tiny real Llama in SGLang's output format (helpers_servers). The Engine path
runs for real only on a GPU machine: benchmarks/gpu/bench_sglang.py.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import os
import subprocess
import sys
import types
from typing import ClassVar

import pytest

from pumsearch.backends import BackendError, load_generator
from pumsearch.backends import sglang_engine as engine_module
from pumsearch.search.protocols import GenerationRequest, SamplingParams
from tests.helpers_servers import InferenceServer


class RecordingEngine:
    """Stands in for sglang.Engine, recording every call."""

    instances: ClassVar[list[RecordingEngine]] = []

    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.calls: list[dict] = []
        self.shutdown_calls = 0
        self.child_pids: list[int] = []
        self._model = InferenceServer(kwargs["model_path"])
        self._model.start(port=0)  # loads the tiny model; the HTTP side is unused
        self._model.stop()
        atexit.register(self.shutdown)  # as the real Engine.__init__ does
        RecordingEngine.instances.append(self)

    async def async_generate(
        self,
        prompt=None,
        sampling_params=None,
        input_ids=None,
        image_data=None,
        audio_data=None,
        video_data=None,
        mm_hashes=None,
        mm_content_hashes=None,
        return_logprob=False,
        logprob_start_len=None,
        top_logprobs_num=None,
        token_ids_logprob=None,
        lora_path=None,
        custom_logit_processor=None,
        require_reasoning=False,
        return_hidden_states=False,
        return_routed_experts=False,
        routed_experts_start_len=0,
        stream=False,
        bootstrap_host=None,
        bootstrap_port=None,
        bootstrap_room=None,
        routed_dp_rank=None,
        disagg_prefill_dp_rank=None,
        data_parallel_rank=None,
        kv_router_hint=None,
        external_trace_header=None,
        rid=None,
        session_params=None,
        priority=None,
        session_id=None,
        *,
        cache_salt=None,
    ):
        self.calls.append(
            {
                "prompt": prompt,
                "input_ids": input_ids,
                "sampling_params": sampling_params,
                "return_logprob": return_logprob,
                "top_logprobs_num": top_logprobs_num,
                "stream": stream,
            }
        )
        batch = input_ids if input_ids is not None else prompt
        key = "input_ids" if input_ids is not None else "text"
        logprob = return_logprob if isinstance(return_logprob, list) else [return_logprob] * len(batch)
        top = top_logprobs_num if isinstance(top_logprobs_num, list) else [top_logprobs_num or 0] * len(batch)
        return [  # what /generate answers, one request per entry (GenerateReqInput normalises lists so)
            self._model.post("/generate", {key: item, "sampling_params": sp, "return_logprob": lp,
                                           "top_logprobs_num": k}).response
            for item, sp, lp, k in zip(batch, sampling_params, logprob, top, strict=True)
        ]

    def get_all_child_pids(self):
        return list(self.child_pids)

    def shutdown(self):
        self.shutdown_calls += 1


@pytest.fixture(scope="module")
def policy_dir(step_llama_dir):
    return step_llama_dir


@pytest.fixture
def fake_sglang(monkeypatch):
    module = types.ModuleType("sglang")
    module.__spec__ = importlib.machinery.ModuleSpec("sglang", None)
    module.Engine = RecordingEngine
    monkeypatch.setitem(sys.modules, "sglang", module)
    RecordingEngine.instances.clear()
    return module


def test_missing_sglang_names_the_extra(monkeypatch, policy_dir):
    monkeypatch.setitem(sys.modules, "sglang", None)  # makes find_spec fail like an absent package
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendError, match=r"pip install 'pumsearch\[sglang\]'"):
        load_generator(str(policy_dir), backend="sglang")


async def test_engine_calls_and_output_mapping(fake_sglang, policy_dir):
    gen = load_generator(str(policy_dir), backend="sglang", mem_fraction_static=0.4, tp_size=1, dp_size=2)
    (engine,) = RecordingEngine.instances
    assert engine.init_kwargs == {
        "model_path": str(policy_dir),
        "tp_size": 1,
        "dp_size": 2,
        "trust_remote_code": False,
        "enable_deterministic_inference": True,  # else SGLang ignores sampling_seed
        "mem_fraction_static": 0.4,
    }
    assert gen.samples_reproducible is True
    _, ids = gen.chat_prompt("what is one", None)
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=9, stop=("\n\n",))
    requests = [
        GenerationRequest("", ids, 2, params, seed=5),
        GenerationRequest("<|im_start|>user\nwhat<|im_end|>\n", None, 1, params, seed=6),
    ]
    outputs = await gen.generate(requests)

    by_ids, by_text = engine.calls  # token-id prompts and text prompts go in separate batched calls
    assert by_ids["input_ids"] == [list(ids), list(ids)] and by_ids["prompt"] is None
    assert by_text["prompt"] == ["<|im_start|>user\nwhat<|im_end|>\n"] and by_text["input_ids"] is None
    for call in (by_ids, by_text):
        assert set(call["return_logprob"]) == {False} and call["stream"] is False
        for sp in call["sampling_params"]:
            assert {k: sp[k] for k in ("temperature", "top_p", "max_new_tokens", "stop")} == {
                "temperature": 0.7,
                "top_p": 0.9,
                "max_new_tokens": 9,
                "stop": ["\n\n"],
            }
    seeds = [sp["sampling_seed"] for sp in by_ids["sampling_params"]]
    assert len(set(seeds)) == 2
    assert [len(o.completions) for o in outputs] == [2, 1]
    assert outputs[0].prompt_tokens == 2 * len(ids)
    for comp in outputs[0].completions:
        assert comp.num_tokens == len(comp.token_ids)
        assert comp.finish_reason in ("step", "eos", "length")
        if comp.finish_reason == "step":
            assert comp.matched_stop == "\n\n"
    await gen.aclose()


async def test_shutdown_spares_processes_that_are_not_the_engines(fake_sglang, policy_dir):
    gen = load_generator(str(policy_dir), backend="sglang")
    (engine,) = RecordingEngine.instances
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    engine_child = subprocess.Popen(sleeper)  # plays the engine's scheduler process
    unrelated = subprocess.Popen(sleeper)  # e.g. a grading worker the caller started
    engine.child_pids = [engine_child.pid]
    try:
        await gen.aclose()
        assert engine.shutdown_calls == 0  # the real one would have killed `unrelated` too
        assert engine_child.wait(timeout=10) is not None
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


async def test_shutdown_uses_engine_shutdown_when_it_owns_every_child(fake_sglang, policy_dir, monkeypatch):
    gen = load_generator(str(policy_dir), backend="sglang")
    (engine,) = RecordingEngine.instances
    monkeypatch.setattr(engine_module, "unrelated_children", lambda pids: [])
    await gen.aclose()
    await gen.aclose()  # closing twice is harmless
    assert engine.shutdown_calls == 1


EXIT_SCRIPT = """
import atexit, subprocess, sys
from pumsearch.backends.sglang_engine import shutdown_engine

class Engine:  # registers its kill-all shutdown at exit, as sglang.Engine.__init__ does
    def __init__(self):
        atexit.register(self.shutdown)
    def get_all_child_pids(self):
        return []
    def shutdown(self):
        print("ENGINE-SHUTDOWN-RAN")

other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
shutdown_engine(Engine())
other.kill()
other.wait()
print("done")
"""


def test_engine_exit_hook_is_removed(tmp_path):
    """At interpreter exit the Engine's own shutdown (kill every child) must not run either."""
    out = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": _repo_root()},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["done"]


def _repo_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1])


async def test_engine_logprobs_per_sample_and_raw_values(fake_sglang, policy_dir, monkeypatch):
    from pumsearch.backends.remote import RAW_LOGPROBS_ENV

    monkeypatch.delenv(RAW_LOGPROBS_ENV, raising=False)
    gen = load_generator(str(policy_dir), backend="sglang")
    (engine,) = RecordingEngine.instances
    assert gen.logprobs_tempered is False and os.environ[RAW_LOGPROBS_ENV] == "1"
    _, ids = gen.chat_prompt("what is one", None)
    plain = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=5, stop=("\n\n",))
    asks = SamplingParams(temperature=0.7, top_p=1.0, max_tokens=5, stop=("\n\n",), want_logprobs=True,
                          top_logprobs=2)
    quiet, told = await gen.generate([GenerationRequest("", ids, 1, plain, seed=1),
                                      GenerationRequest("", ids, 1, asks, seed=2)])
    (call,) = engine.calls
    assert call["return_logprob"] == [False, True] and call["top_logprobs_num"] == [0, 2]
    assert quiet.completions[0].token_logprobs is None
    comp = told.completions[0]
    assert len(comp.token_logprobs) == len(comp.token_ids) == len(comp.top_logprobs)
    assert comp.logprob == pytest.approx(sum(comp.token_logprobs))
    assert all(len(top) == 2 for top in comp.top_logprobs)
    await gen.aclose()
