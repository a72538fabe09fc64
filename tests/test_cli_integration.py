"""`solve`, `run` and `sweep` share one set of options: backend, scorer and tree-search flags reach
run and sweep (and their run keys) exactly as they reach solve; bad flags are one line, exit 2,
and leave no directory behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.cli import app
from pumsearch.datasets import load_problems
from pumsearch.runs.grid import ScorerSpec
from pumsearch.runs.records import merge_record_files
from pumsearch.runs.rundir import search_from_dict
from pumsearch.scorers import load_scorer
from pumsearch.search.config import SearchConfig
from pumsearch.search.engine import Engine
from pumsearch.search.tree import load_tree
from pumsearch.strategies import get_strategy
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_servers import InferenceServer

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def records(run_dir: Path) -> dict[str, dict]:
    return merge_record_files(run_dir.glob("records*.jsonl"))


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in result.output, result.output


# -- sweep and run on the scripted generator ----------------------------------------------------------
def _library_results(path: Path, config: SearchConfig) -> dict[str, tuple]:
    """The same search through the library, flags spelled out by hand."""
    problems = load_problems(str(path))
    scorer = load_scorer("verifier", step_delimiter=config.step_delimiter)
    strategy = get_strategy(config.strategy)(config)

    async def go():
        try:
            return await Engine(ScriptedGenerator(), scorer).run(problems, strategy)
        finally:
            await scorer.aclose()

    results = asyncio.run(go())
    return {p.id: (r.answer, r.correct, r.counters.generated_tokens) for p, r in zip(problems, results, strict=True)}


def test_sweep_bon_and_beam_with_the_verifier_threads_the_tree_search_flags(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 4)
    out = tmp_path / "sweep"
    args = ["sweep", "--backend", "scripted", "--dataset", str(data), "--strategies", "bon,beam", "--scorers",
            "verifier", "--budgets", "2,4", "--beam-width", "2", "--lookahead", "1", "--filter-duplicates",
            "--max-tokens", "64", "--out", str(out)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    runs = {p.name.rsplit("-", 1)[0]: p for p in out.iterdir() if p.is_dir()}
    assert set(runs) == {"bon-verifier-n4-s0", "beam-verifier-n2-s0", "beam-verifier-n4-s0"}
    for name, run_dir in runs.items():
        config = json.loads((run_dir / "config.json").read_text())
        search = config["search"]
        # beam takes the three flags; bon takes none of them, so its key holds their placeholders
        expected_flags = (4, 0, False) if name.startswith("bon") else (2, 1, True)
        assert (search["beam_width"], search["lookahead"], search["filter_duplicates"]) == expected_flags
        assert config["scorer"] == {"spec": "verifier", "name": "verifier", "format": None, "path": None}
        assert config["model"] == {"backend": "scripted", "name": "scripted", "dtype": None}
        expected = _library_results(data, search_from_dict(search))
        got = {pid: (r["prediction"], r["correct"], r["counters"]["generated_tokens"])
               for pid, r in records(run_dir).items()}
        assert got == expected, name
        for record in records(run_dir).values():
            assert record["scorer"] == "verifier" and record["counters"]["scorer_calls"] > 0
            if name.startswith("bon"):  # the verifier picks a correct candidate whenever there is one
                assert record["correct"] == record["pass_at_n"]
    grid = json.loads((out / "sweep.json").read_text())["grids"]
    assert grid == [{"strategies": ["bon", "beam"], "budgets": [2, 4], "scorers": ["verifier"], "seeds": [0]}]
    again = invoke(*args)  # everything is done: the rerun resumes and adds nothing
    assert again.exit_code == 0, again.output
    assert all(len((d / "records.jsonl").read_text().splitlines()) == 4 for d in runs.values())
    changed = invoke(*[a if a != "1" else "2" for a in args])  # --lookahead 2
    one_line_error(changed, "different configuration")


def test_run_records_the_mcts_flags_in_its_configuration(tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 3)
    out = tmp_path / "mcts"
    flags = ["--c-puct", "1.5", "--expansions", "3", "--mcts-steps-per-solution", "2", "--terminal-reward",
             "verifier", "--mcts-parallel", "2", "--max-depth", "6"]
    base = ["run", "--backend", "scripted", "--dataset", str(data), "--strategy", "mcts", "--scorer", "verifier",
            "--budget", "2", "--max-tokens", "64", "--out", str(out)]
    result = invoke(*base, *flags)
    assert result.exit_code == 0, result.output
    search = json.loads((out / "config.json").read_text())["search"]
    assert {k: search[k] for k in ("c_puct", "expansions", "mcts_steps_per_solution", "terminal_reward",
                                   "mcts_parallel", "max_depth")} == {
        "c_puct": 1.5, "expansions": 3, "mcts_steps_per_solution": 2, "terminal_reward": "verifier",
        "mcts_parallel": 2, "max_depth": 6}
    for record in records(out).values():
        assert record["status"] == "ok" and record["strategy"] == "mcts"
        tree, _ = load_tree(out / record["tree_file"])
        # every expanded node got --expansions children (or fewer, where a child ended the solution)
        fanout = [len(tree.children(n)) for n, _ in tree.iter_nodes() if tree.children(n)]
        assert fanout and max(fanout) <= 3 and 3 in fanout
    # the same flags from a TOML file give the same run (so it resumes); a changed one is refused
    toml = tmp_path / "mcts.toml"
    toml.write_text('c-puct = 1.5\nexpansions = 3\nmcts_steps_per_solution = 2\nterminal-reward = "verifier"\n'
                    "mcts-parallel = 2\n[search]\nmax_depth = 6\n")
    resumed = invoke(*base, "--config", str(toml))
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "records.jsonl").read_text().splitlines()) == 3
    refused = invoke(*base, "--config", str(toml), "--c-puct", "2")
    one_line_error(refused, "different configuration", "search.c_puct: 1.5 -> 2.0")


def test_scorer_settings_enter_the_run_key_and_the_device_does_not(tmp_path: Path, tiny_reward_dir: Path) -> None:
    spec = ScorerSpec("orm=/m", "orm", None, "/m", {"dtype": "bfloat16", "device": "cuda", "cache_size": 8,
                                                    "url": "http://h:1"})
    assert spec.to_dict()["options"] == {"dtype": "bfloat16"}  # url: the path names the served model
    assert ScorerSpec("orm", "orm", options={"url": "http://h:1"}).to_dict()["options"] == {"url": "http://h:1"}
    assert "options" not in ScorerSpec("verifier", "verifier", options={"device": "cpu"}).to_dict()
    reward = tiny_reward_dir
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    out = tmp_path / "s"
    args = ["sweep", "--backend", "scripted", "--dataset", str(data), "--strategies", "bon", "--budgets", "2",
            "--scorers", f"verifier,orm={reward}", "--scorer-dtype", "float32", "--max-tokens", "64",
            "--out", str(out)]
    result = invoke(*args, "--scorer-device", "cpu")
    assert result.exit_code == 0, result.output
    configs = {p.parent.name.split("-")[1]: json.loads(p.read_text()) for p in out.glob("*/config.json")}
    assert configs["orm"]["scorer"]["options"] == {"dtype": "float32"}  # the verifier takes no dtype
    assert "options" not in configs["verifier"]["scorer"]
    assert json.loads((out / "sweep.json").read_text())["base"]["scorer_options"] == {
        f"orm={reward}": {"dtype": "float32"}}
    resumed = invoke(*args)  # --scorer-device left out: same runs
    assert resumed.exit_code == 0, resumed.output
    one_line_error(invoke(*[a if a != "float32" else "bfloat16" for a in args]), "different configuration")


# -- a server backend ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers(step_llama_dir, tiny_reward_dir):
    policy = InferenceServer(step_llama_dir).start()
    reward = InferenceServer(tiny_reward_dir, reward=True).start()
    yield policy, reward
    policy.stop()
    reward.stop()


def test_run_through_an_sglang_server_scored_by_a_served_reward_model(servers, tmp_path: Path) -> None:
    policy, reward = servers
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"what is {w}", "answer": "1"}) + "\n"
                            for w in ("one", "two", "three")))
    out = tmp_path / "run"
    result = invoke("run", "--backend", "sglang-server", "--url", policy.url, "--model", str(policy.model_dir),
                    "--max-concurrency", "2", "--retries", "0", "--request-timeout", "60", "--dataset", str(data),
                    "--scorer", f"orm={reward.model_dir}", "--scorer-url", reward.url, "--budget", "3",
                    "--max-tokens", "6", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"backend": "sglang-server", "name": str(policy.model_dir.resolve()), "dtype": None}
    assert config["scorer"]["path"] == str(reward.model_dir) and "options" not in config["scorer"]
    found = records(out)
    assert len(found) == 3 and all(r["status"] == "ok" for r in found.values())
    generated = sum(e.response["meta_info"]["completion_tokens"] for e in policy.generate_log())
    assert sum(r["counters"]["generated_tokens"] for r in found.values()) == generated
    assert max(r["counters"]["backend_peak_in_flight"] for r in found.values()) <= 2
    classified = [e for e in reward.state.log if e.path == "/classify"]
    assert classified and sum(r["counters"]["scorer_calls"] for r in found.values()) >= 1
    served_rewards = {v[0] for e in classified for v in (item["embedding"] for item in e.response)}
    for record in found.values():
        tree, _ = load_tree(out / record["tree_file"])
        scores = [a["scores"] for _, a in tree.iter_nodes() if a["scores"]]
        assert scores, record["problem_id"]
        values = {v for s in scores for v in s.values()}
        assert values <= served_rewards, (values, served_rewards)  # what the reward server answered


def test_run_with_no_server_is_one_line_and_writes_no_records(tmp_path: Path) -> None:
    from tests.helpers_servers import closed_port_url

    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    result = invoke("run", "--backend", "sglang-server", "--url", closed_port_url(), "--model", "m", "--retries",
                    "0", "--dataset", str(data), "--out", str(tmp_path / "r"))
    one_line_error(result, "no server answering at http://127.0.0.1:")
    assert not list((tmp_path / "r").glob("records*.jsonl"))


# -- bad flags ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "args", "message"), [
    ("run", ["--url", "http://127.0.0.1:1"], "--url and --launch are for --backend sglang-server or openai"),
    ("sweep", ["--backend", "vllm-magic"], "unknown backend 'vllm-magic'"),
    ("run", ["--max-concurrency", "0"], "--max-concurrency must be >= 1"),
    ("run", ["--scorer-device", "cuda"], "no scorer is chosen: give --scorer"),
    ("sweep", ["--scorer-dtype", "bfloat16"], "no scorer is chosen: give --scorers"),
    ("run", ["--scorer", "verifier", "--scorer-dtype", "bfloat16"], "scorer 'verifier' has no option dtype"),
    ("sweep", ["--scorers", "verifier,none", "--scorer-url", "http://127.0.0.1:1"], "has no option url"),
    ("sweep", ["--scorers", "verifier,pum=/x", "--scorer-option", "k=8"], "none of the scorers verifier, pum has "
                                                                          "option k"),
    ("run", ["--scorer", "verifier", "--scorer-option", "k"], "is not KEY=VALUE"),
    ("run", ["--scorer", "prm:qwen=/nowhere", "--strategy", "beam", "--budget", "4", "--beam-width", "2"],
     "/nowhere is not a directory"),
    ("run", ["--scorer", "verifier,prm=/x"], "run takes one --scorer"),
    ("run", ["--time-limit", "0"], "--time-limit must be positive"),
    ("sweep", ["--strategies", "mcts", "--scorers", "verifier", "--c-puct", "-1"], "--c-puct must be 0 or more"),
    ("run", ["--strategy", "mcts", "--scorer", "verifier", "--terminal-reward", "oracle"],
     "unknown --terminal-reward 'oracle'"),
    ("run", ["--strategy", "beam", "--scorer", "verifier", "--lookahead", "-1"], "lookahead"),
])
def test_bad_run_and_sweep_flags_are_one_line_and_leave_no_directory(
    tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", 2)
    out = tmp_path / "out"
    backend = [] if "--backend" in args else ["--backend", "scripted"]
    one_line_error(invoke(command, *backend, "--dataset", str(data), "--out", str(out), *args), message)
    assert not out.exists()


def test_mcts_valued_by_the_verifier_needs_reference_answers(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "what is one"}) + "\n")
    result = invoke("run", "--backend", "scripted", "--dataset", str(data), "--strategy", "mcts", "--scorer",
                    "verifier", "--terminal-reward", "verifier", "--out", str(tmp_path / "r"))
    one_line_error(result, "needs reference answers")
    assert not (tmp_path / "r").exists()
