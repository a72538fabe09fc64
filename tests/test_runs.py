"""Evaluation at scale: datasets, run directories and records, resume, sweeps, subsampling, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.cli import app
from pumsearch.datasets import DatasetError, load_problems, register_dataset_prefix
from pumsearch.runs.grid import ScorerSpec, parse_scorer_specs, parse_shard, plan_grid, single_plan
from pumsearch.runs.records import RecordLog, RunError, merge_record_files, parse_records
from pumsearch.runs.report import build_report, make_figures, write_csv, write_json
from pumsearch.runs.rundir import RunSpec, open_run_dir
from pumsearch.runs.runner import execute_plans
from pumsearch.runs.subsample import group_rows, subsample
from pumsearch.scorers.base import BatchedScorer
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem
from pumsearch.search.result import RECORD_FORMAT
from pumsearch.search.selection import Candidate
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies import DVTS, BestOfN
from tests.helpers_runs import STEP_THEN_FINISH, AnswerTableScorer, write_gsm8k_style

REPO = Path(__file__).resolve().parents[1]
TIMING_COUNTERS = ("wall_time", "backend_time", "scorer_time")


def cli(*args: str) -> Result:
    """The command line in this process (what the console script runs: ``pumsearch.cli:main`` is
    ``app()``); stdout and stderr apart."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def cli_popen(log: Path, *args: str) -> subprocess.Popen:
    """The CLI in its own process group, output to a file (a pipe would stay open in the grader's
    worker process after the parent is killed). SIGINT starts at its default, as under a terminal:
    a shell without job control starts background commands (`cmd &`, CI scripts) with SIGINT
    ignored, and a child would inherit that and never see the Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "pumsearch.cli", *args],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def reap(proc: subprocess.Popen) -> None:
    """Wait for the CLI, then end what it left behind in its process group (grader workers)."""
    proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def all_record_lines(out: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in out.rglob("records*.jsonl"))


def comparable(record: dict) -> dict:
    """A record with its timings left out (the only fields a resumed run may change)."""
    r = json.loads(json.dumps(record))
    r.pop("timings")
    for key in TIMING_COUNTERS:
        r["counters"].pop(key)
    return r


def records_by_run(out: Path) -> dict[tuple[str, str], dict]:
    result = {}
    for run in sorted(p.parent for p in out.glob("*/config.json")):
        for pid, record in merge_record_files(run.glob("records*.jsonl")).items():
            result[(run.name, pid)] = comparable(record)
    return result


# -- datasets -------------------------------------------------------------------------------------
def test_bundled_datasets_ids_references_and_metadata() -> None:
    math500 = load_problems("math500", limit=3)
    first = json.loads(Path(REPO, "pumsearch/data/math500.jsonl").read_text().splitlines()[0])
    assert math500[0].id == first["unique_id"] and math500[0].answer == first["answer"]
    assert math500[0].metadata == {"subject": first["subject"], "level": first["level"]}
    gsm = load_problems("gsm8k", offset=1, limit=2)
    row = json.loads(Path(REPO, "pumsearch/data/gsm8k_test.jsonl").read_text().splitlines()[1])
    assert gsm[0].id == "gsm8k:2"  # 1-based line number
    assert gsm[0].answer == row["answer"].split("####")[-1].strip()
    assert len(load_problems("math500")) == 500 and len(load_problems("gsm8k")) == 1319


def test_jsonl_field_mapping_boxed_solution_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        json.dumps({"q": "Find x.", "sol": "So x is \\boxed{\\frac{1}{2}}.", "level": 3})
        + "\n\n"
        + json.dumps({"q": "Find y.", "sol": "Thus $\\boxed{7}$", "key": "b"})
        + "\n"
    )
    problems = load_problems(str(path), question_field="q")
    assert [p.id for p in problems] == ["set:1", "set:3"]  # blank line 2 skipped, numbering kept
    assert problems[0].answer is None  # 'sol' is not the default solution field
    path.write_text(
        "".join(
            json.dumps({"q": f"Q{i}", "solution": f"x = \\boxed{{{i}}}", "name": f"n{i}"}) + "\n"
            for i in range(5)
        )
    )
    problems = load_problems(str(path), question_field="q", id_field="name", offset=1, limit=2)
    assert [(p.id, p.answer) for p in problems] == [("n1", "1"), ("n2", "2")]
    assert [
        p.id for p in load_problems(str(path), question_field="q", id_field="name", ids=["n4", "n0"])
    ] == ["n4", "n0"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n', "line 2: not valid JSON"),
        ('{"question": "a", "answer": "1"}\n{"text": "b"}\n', "line 2: no question field"),
        ("", "has no problems"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
    ],
)
def test_bad_dataset_files_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        load_problems(str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_dataset_missing_answer_field_and_registered_prefix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'mathh'"):
        load_problems("mathh")
    with pytest.raises(DatasetError, match="does not exist"):
        load_problems(str(tmp_path / "none.jsonl"))
    path = write_gsm8k_style(tmp_path / "g.jsonl", 2)
    with pytest.raises(DatasetError, match="no answer field 'solution'"):
        load_problems(str(path), answer_field="solution")
    with pytest.raises(DatasetError, match="no problem with id 'zz'"):
        load_problems(str(path), ids=["zz"])
    register_dataset_prefix(
        "unittestbed", lambda rest: [Problem(f"tb:{rest}:{i}", f"q{i}", str(i)) for i in range(3)]
    )
    assert [p.id for p in load_problems("unittestbed:easy", limit=2)] == ["tb:easy:0", "tb:easy:1"]


# -- records and run directories ------------------------------------------------------------------
def _record(pid: str, status: str = "ok", finished: float = 1.0) -> dict:
    return {
        "format": RECORD_FORMAT,
        "version": 1,
        "problem_id": pid,
        "status": status,
        "timings": {"finished_at": finished},
    }


def test_truncated_last_line_is_cut_and_redone(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    full = json.dumps(_record("a")) + "\n" + json.dumps(_record("b")) + "\n"
    path.write_text(full + json.dumps(_record("c"))[:25])  # killed mid-write
    records, cut = parse_records(path)
    assert [r["problem_id"] for r in records] == ["a", "b"] and cut == len(full.encode())
    with RecordLog(path) as log:
        assert log.repaired
        log.append(_record("c"))
    assert [r["problem_id"] for r in parse_records(path)[0]] == ["a", "b", "c"]
    # a complete JSON object without its newline was cut off too: redone, not trusted
    path.write_text(full + json.dumps(_record("d")))
    assert parse_records(path) == (parse_records(path)[0], len(full.encode()))


def test_bad_middle_line_names_file_and_line_and_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    content = json.dumps(_record("a")) + "\n{broken\n" + json.dumps(_record("b")) + "\n"
    path.write_text(content)
    with pytest.raises(RunError, match=r"records.jsonl, line 2"):
        RecordLog(path).open()
    assert path.read_text() == content


def test_last_line_per_problem_wins_and_ok_beats_failed_across_files(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [_record("a", "failed", 1), _record("a", "ok", 2), _record("b", "ok", 5)]
        )
    )
    (tmp_path / "records.shard-0-of-2.jsonl").write_text(json.dumps(_record("b", "failed", 9)) + "\n")
    merged = merge_record_files(tmp_path.glob("records*.jsonl"))
    assert merged["a"]["timings"]["finished_at"] == 2 and merged["b"]["status"] == "ok"


def test_a_different_configuration_is_refused(tmp_path: Path) -> None:
    spec = RunSpec(SearchConfig(budget=4), {"spec": "gsm8k"}, {"name": "m"})
    open_run_dir(tmp_path, spec)
    before = (tmp_path / "config.json").read_text()
    other = RunSpec(SearchConfig(budget=4, temperature=0.5), {"spec": "gsm8k"}, {"name": "m"})
    with pytest.raises(RunError, match=r"different configuration \(search.temperature: 0.8 -> 0.5\)"):
        open_run_dir(tmp_path, other)
    assert (tmp_path / "config.json").read_text() == before
    open_run_dir(tmp_path, RunSpec(SearchConfig(budget=4), {"spec": "gsm8k"}, {"name": "m"}))  # same: resumes


def test_scorer_specs_and_shards() -> None:
    specs = parse_scorer_specs("pum=/m/pum,prm:qwen=/m/prm,verifier,none")
    assert specs == [
        ScorerSpec("pum=/m/pum", "pum", None, "/m/pum"),
        ScorerSpec("prm:qwen=/m/prm", "prm", "qwen", "/m/prm"),
        ScorerSpec("verifier", "verifier"),
        None,
    ]
    assert specs[1].load_options() == {"model": "/m/prm", "prm_format": "qwen"}
    with pytest.raises(RunError):
        parse_scorer_specs("pum=a,,verifier")
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "0/0"):
        with pytest.raises(RunError, match="shard"):
            parse_shard(bad)


# -- subsampling ----------------------------------------------------------------------------------
def test_dvts_style_subsampling_by_whole_subtrees_on_a_hand_built_tree() -> None:
    """Two subtrees of width 2 (M = 2, N = 4). Budget 2 keeps the first subtree with every node
    in it (pruned branch included); budget 4 keeps both."""
    tree = SearchTree(Problem("p", "q", "5"))
    a = tree.add_child(ROOT, "a", num_tokens=3)
    a1 = tree.add_child(a, "a1 \\boxed{5}", num_tokens=4)  # candidate, correct, score 0.2
    tree.add_child(a, "a2 pruned", num_tokens=10)
    b = tree.add_child(ROOT, "b", num_tokens=2)
    b1 = tree.add_child(b, "b1 \\boxed{6}", num_tokens=5)  # candidate, wrong, score 0.9
    b2 = tree.add_child(b, "b2 \\boxed{6}", num_tokens=1)  # candidate, wrong, score 0.3
    cands = [Candidate(a1, "5", 0.2, True), Candidate(b1, "6", 0.9, False), Candidate(b2, "6", 0.3, False)]
    dvts = DVTS(SearchConfig(strategy="dvts", budget=4, strategy_options={"beam_width": 2}))
    groups = group_rows(tree, cands, dvts.subsample_groups(tree, cands))
    assert [g["tokens"] for g in groups] == [3 + 4 + 10, 2 + 5 + 1]
    block = {"unit": "subtrees", "budget_per_group": 2, "value_kind": "probability", "groups": groups}
    two = subsample(block, 2, "best")
    assert (two.prediction, two.correct, two.pass_at_n, two.generated_tokens) == ("5", True, True, 17)
    four_best = subsample(block, 4, "best")
    assert (four_best.prediction, four_best.correct, four_best.generated_tokens) == ("6", False, 25)
    # weighted: answer 6 sums 0.9 + 0.3 = 1.2 > 0.2
    assert subsample(block, 4, "weighted").prediction == "6"
    assert (
        subsample(block, 4, "majority").maj_at_n is False
        and subsample(block, 4, "majority").pass_at_n is True
    )
    assert (
        subsample(block, 3, "best") is None and subsample(block, 6, "best") is None
    )  # not a multiple / too big
    solutions = group_rows(tree, cands, BestOfN(SearchConfig()).subsample_groups(tree, cands))
    assert [g["tokens"] for g in solutions] == [7, 7, 3]


# -- sweeps on the scripted generator --------------------------------------------------------------
def _dataset(tmp_path: Path, n: int) -> tuple[dict, list[Problem]]:
    path = write_gsm8k_style(tmp_path / "tiny.jsonl", n)
    return {"spec": str(path)}, load_problems(str(path))


def test_sweep_two_strategies_two_budgets_scripted(tmp_path: Path) -> None:
    dataset, problems = _dataset(tmp_path, 5)
    out = tmp_path / "sweep"
    plans, notes = plan_grid(
        out,
        strategies=["bon", STEP_THEN_FINISH],
        budgets=[2, 4],
        scorers=parse_scorer_specs("verifier,table"),
        seeds=[0],
        settings={"max_tokens": 64},
        dataset=dataset,
        model={"name": "scripted"},
    )
    assert not notes
    # bon: one run at N = 4 read off for 2 and 4; the other strategy: one run per N
    assert sorted(
        (p.spec.search.strategy, p.spec.search.budget, p.spec.scorer_label) for p in plans
    ) == sorted(
        [
            ("bon", 4, "verifier"),
            (STEP_THEN_FINISH, 2, "verifier"),
            (STEP_THEN_FINISH, 4, "verifier"),
            ("bon", 4, "table"),
            (STEP_THEN_FINISH, 2, "table"),
            (STEP_THEN_FINISH, 4, "table"),
        ]
    )

    def load_scorer(spec: ScorerSpec, config: SearchConfig):
        if spec.name == "table":
            return BatchedScorer(AnswerTableScorer({"1": 3.0, "2": -1.0, "3": 0.5}))
        from pumsearch.scorers import load_scorer as real

        return real(spec.name, step_delimiter=config.step_delimiter)

    generator = ScriptedGenerator()
    asyncio.run(execute_plans(plans, problems, generator=generator, load_scorer=load_scorer, concurrency=3))
    for plan in plans:
        records = merge_record_files(plan.path.glob("records*.jsonl"))
        assert sorted(records) == sorted(p.id for p in problems)
        assert all(r["status"] == "ok" and (plan.path / r["tree_file"]).exists() for r in records.values())
        summary = json.loads((plan.path / "summary.json").read_text())
        assert summary["problems_finished"] == 5 and summary["interrupted"] is False
    table_bon = next(p for p in plans if p.spec.search.strategy == "bon" and p.spec.scorer_label == "table")
    for record in merge_record_files(table_bon.path.glob("records*.jsonl")).values():
        answers = [c["answer"] for g in record["subsample"]["groups"] for c in g["candidates"]]
        scores = {"1": 3.0, "2": -1.0, "3": 0.5}
        assert record["prediction"] == max(answers, key=lambda a: scores[a])  # best by the table
        assert record["pass_at_n"] == (record["reference"] in answers)
    calls = len(generator.calls)
    asyncio.run(execute_plans(plans, problems, generator=generator, load_scorer=load_scorer))
    assert len(generator.calls) == calls  # everything finished: the rerun searches nothing
    report = build_report([out])
    keys = {(r.strategy, r.scorer, r.budget, r.select, r.subsampled) for r in report.rows}
    assert ("bon", "table", 2, "weighted", True) in keys and ("bon", "verifier", 4, "best", False) in keys
    assert (STEP_THEN_FINISH, "table", 2, "best", False) in keys


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_records_of_an_uninterrupted_run(tmp_path: Path) -> None:
    path = write_gsm8k_style(tmp_path / "d.jsonl", 12)
    common = [
        "sweep",
        "--backend",
        "scripted",
        "--dataset",
        str(path),
        "--strategies",
        f"bon,{STEP_THEN_FINISH}",
        "--budgets",
        "2,4",
        "--seeds",
        "0",
        "--concurrency",
        "1",
        "--max-tokens",
        "64",
    ]
    whole = tmp_path / "whole"
    done = cli(*common, "--out", str(whole))
    assert done.exit_code == 0, done.output
    total = all_record_lines(whole)
    assert total == 12 * 3
    killed = tmp_path / "killed"
    stop_after = random.Random(os.getpid()).randint(1, total - 2)
    proc = cli_popen(tmp_path / "killed.log", *common, "--out", str(killed), "--scripted-delay", "0.01")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if killed.exists() and all_record_lines(killed) >= stop_after:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # the sweep process only, as kill -9 PID does
    reap(proc)
    assert 0 < all_record_lines(killed) < total  # it really died mid-sweep
    rerun = cli(*common, "--out", str(killed))
    assert rerun.exit_code == 0, rerun.output
    assert records_by_run(killed) == records_by_run(whole)


# -- bad input through the CLI --------------------------------------------------------------------
def test_cli_bad_input_is_one_line_and_touches_no_records(tmp_path: Path) -> None:
    path = write_gsm8k_style(tmp_path / "d.jsonl", 4)
    out = tmp_path / "run"
    base = ["run", "--backend", "scripted", "--dataset", str(path), "--out", str(out), "--budget", "2"]
    assert cli(*base).exit_code == 0
    records = (out / "records.jsonl").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [
        ([*base[:4], str(bad), *base[5:]], f"{bad}, line 2: not valid JSON"),
        ([*base[:4], str(empty), *base[5:]], "has no problems"),
        ([*base[:4], "nosuchset", *base[5:]], "unknown dataset 'nosuchset'"),
        ([*base, "--answer-field", "solution"], "no answer field 'solution'"),
        ([*base, "--shard", "2/2"], "shard index must be in 0..1"),
        ([*base, "--budget", "3"], "different configuration (search.budget: 2 -> 3)"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.output
        assert (out / "records.jsonl").read_bytes() == records


def test_sweep_dir_of_another_configuration_and_config_file(tmp_path: Path) -> None:
    path = write_gsm8k_style(tmp_path / "d.jsonl", 3)
    toml = tmp_path / "sweep.toml"
    toml.write_text(
        f'dataset = "{path}"\nstrategies = ["bon"]\nbudgets = [2, 4]\nmax-tokens = 64\n'
        "temperature = 0.5\n[search]\nsystem_prompt = \"Be brief.\"\n"
    )
    out = tmp_path / "s"
    ok = cli("sweep", "--backend", "scripted", "--config", str(toml), "--budgets", "2", "--out", str(out))
    assert ok.exit_code == 0, ok.output
    (run,) = list(out.glob("*/config.json"))
    config = json.loads(run.read_text())
    assert config["search"]["budget"] == 2  # the flag beat the file
    assert config["search"]["temperature"] == 0.5 and config["search"]["max_tokens"] == 64
    assert config["search"]["system_prompt"] == "Be brief."
    refused = cli(
        "sweep", "--backend", "scripted", "--config", str(toml), "--max-tokens", "32", "--out", str(out)
    )
    assert refused.exit_code == 2 and "different configuration" in refused.stderr
    toml.write_text('datasett = "x"\n')
    assert "unknown option 'datasett'" in cli("sweep", "--config", str(toml), "--out", str(out)).stderr


# -- report ---------------------------------------------------------------------------------------
def _write_run(path: Path, seed: int, outcomes: list[tuple[str, bool, bool, bool, int, float, dict]]) -> None:
    """A run directory written by hand: (id, correct, pass, maj, tokens, wall, metadata) per problem."""
    spec = RunSpec(
        SearchConfig(strategy="beam", budget=8, seed=seed),
        {"spec": "math500"},
        {"name": "m"},
        {"spec": "prm", "name": "prm", "format": None, "path": None},
    )
    open_run_dir(path, spec)
    with RecordLog(path / "records.jsonl") as log:
        for pid, correct, passed, maj, tokens, wall, meta in outcomes:
            log.append(
                {
                    "format": RECORD_FORMAT,
                    "version": 1,
                    "problem_id": pid,
                    "status": "ok",
                    "correct": correct,
                    "pass_at_n": passed,
                    "maj_at_n": maj,
                    "counters": {"generated_tokens": tokens},
                    "timings": {"wall_time": wall, "finished_at": 1.0},
                    "metadata": meta,
                }
            )
        log.append(
            {
                "format": RECORD_FORMAT,
                "version": 1,
                "problem_id": "failed-one",
                "status": "failed",
                "timings": {"finished_at": 2.0},
            }
        )


def test_report_table_figures_and_exports_match_hand_computed_values(tmp_path: Path) -> None:
    l1, l2 = {"level": 1, "subject": "Algebra"}, {"level": 2, "subject": "Geometry"}
    _write_run(
        tmp_path / "s0", 0, [("a", True, True, True, 100, 1.0, l1), ("b", False, True, False, 200, 3.0, l2)]
    )
    _write_run(
        tmp_path / "s1", 1, [("a", True, True, False, 300, 2.0, l1), ("b", True, True, True, 400, 4.0, l2)]
    )
    report = build_report([tmp_path / "s0", tmp_path / "s1"])
    (row,) = report.rows
    values = [1.0, 0.0, 1.0, 1.0]  # correct over (seed, problem)
    m = 0.75
    se = math.sqrt(sum((v - m) ** 2 for v in values) / 3 / 4)
    assert (row.seeds, row.n, row.budget, row.select) == (2, 6, 8, "best")  # n counts the failed ones
    assert (row.failed, row.missing) == (2, 0)  # failed without a reference: counted, not graded
    assert row.accuracy == pytest.approx(0.75) and row.se == pytest.approx(se)
    assert row.pass_at_n == 1.0 and row.maj_at_n == pytest.approx(0.5)
    assert row.mean_tokens == pytest.approx(250.0) and row.mean_wall_time == pytest.approx(2.5)
    levels = {(b["field"], b["value"]): (b["n"], b["accuracy"]) for b in report.breakdown}
    assert levels[("level", 1)] == (2, 1.0) and levels[("level", 2)] == (2, 0.5)
    assert levels[("subject", "Geometry")] == (2, 0.5)
    figures = make_figures(report)
    (line,) = figures["accuracy_vs_budget"].axes[0].get_lines()
    assert list(line.get_xdata()) == [8.0] and list(line.get_ydata()) == [0.75]
    assert line.get_label() == "beam / prm (best)"
    (tline,) = figures["accuracy_vs_tokens"].axes[0].get_lines()
    assert list(tline.get_xdata()) == [250.0]
    write_csv(report, tmp_path / "r.csv")
    write_json(report, tmp_path / "r.json")
    assert "0.75" in (tmp_path / "r.csv").read_text().splitlines()[1]
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["pass_at_n"] == 1.0
    result = cli("report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--plots", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "accuracy_vs_budget.png").stat().st_size > 0
    assert "0.750" in result.stdout and "Geometry" in result.stdout
    assert cli("report", str(tmp_path / "nothing")).exit_code == 2


def test_report_of_subsampled_bon_curve_on_the_plot(tmp_path: Path) -> None:
    dataset, problems = _dataset(tmp_path, 6)
    plans, _ = plan_grid(
        tmp_path / "sw",
        strategies=["bon"],
        budgets=[1, 2, 4],
        scorers=[None],
        seeds=[0, 1],
        settings={"max_tokens": 64},
        dataset=dataset,
        model={"name": "scripted"},
    )
    asyncio.run(execute_plans(plans, problems, generator=ScriptedGenerator(), load_scorer=None))
    report = build_report([tmp_path / "sw"])
    expected = {}
    for budget in (1, 2, 4):  # majority vote over the first `budget` solutions, by hand
        hits = []
        for plan in plans:
            for r in merge_record_files(plan.path.glob("records*.jsonl")).values():
                answers = [g["candidates"][0]["answer"] for g in r["subsample"]["groups"][:budget]]
                top = max(dict.fromkeys(answers), key=answers.count)
                hits.append(float(top == r["reference"]))
        expected[budget] = sum(hits) / len(hits)
    (line,) = make_figures(report)["accuracy_vs_budget"].axes[0].get_lines()
    assert list(line.get_xdata()) == [1.0, 2.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx([expected[1], expected[2], expected[4]])
    assert [r.subsampled for r in sorted(report.rows, key=lambda r: r.budget)] == [True, True, False]


# -- the tiny real model ---------------------------------------------------------------------------
def test_sweep_on_a_tiny_real_model(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from pumsearch.backends import load_generator

    dataset, problems = _dataset(tmp_path, 4)
    plans, _ = plan_grid(
        tmp_path / "sw",
        strategies=["bon", STEP_THEN_FINISH],
        budgets=[2, 4],
        scorers=[None],
        seeds=[0],
        settings={"max_tokens": 8, "max_step_tokens": 4},
        dataset=dataset,
        model={"name": str(tiny_llama_dir)},
    )
    generator = load_generator(str(tiny_llama_dir))
    asyncio.run(execute_plans(plans, problems, generator=generator, load_scorer=None, concurrency=4))
    assert len(plans) == 3
    for plan in plans:
        records = merge_record_files(plan.path.glob("records*.jsonl"))
        assert sorted(records) == sorted(p.id for p in problems)
        assert all(r["counters"]["generated_tokens"] > 0 for r in records.values())
    assert {(r.strategy, r.budget) for r in build_report([tmp_path / "sw"]).rows} == {
        ("bon", 2),
        ("bon", 4),
        (STEP_THEN_FINISH, 2),
        (STEP_THEN_FINISH, 4),
    }


# -- interrupting a run ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_keeps_finished_records_and_rerun_completes_each_id_once(tmp_path: Path) -> None:
    """SIGINT to a real `pumsearch run` process once some records are flushed: it exits 130 with one
    message, every finished record is whole on disk, and the rerun completes each id exactly once.
    The scripted backend takes 0.1 s a call, so the run is mid-way when the signal comes."""
    path = write_gsm8k_style(tmp_path / "d.jsonl", 24)
    out = tmp_path / "run"
    args = ["run", "--backend", "scripted", "--dataset", str(path), "--out", str(out), "--budget", "2",
            "--max-tokens", "32", "--concurrency", "1"]
    flushed = random.Random(os.getpid()).randint(1, 4)
    log = tmp_path / "run.log"
    proc = cli_popen(log, *args, "--scripted-delay", "0.1")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "records.jsonl").exists() and all_record_lines(out) >= flushed:
            break
        time.sleep(0.005)
    signalled_at = all_record_lines(out)
    proc.send_signal(signal.SIGINT)
    reap(proc)
    stderr = log.read_text()
    assert proc.returncode == 130, (stderr, f"signalled after {signalled_at} records")
    assert "interrupted" in stderr and "Traceback" not in stderr
    kept, cut = parse_records(out / "records.jsonl")
    assert flushed <= len(kept) < 24 and cut is None  # flushed whole lines only
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    rerun = cli(*args)
    assert rerun.exit_code == 0, rerun.output
    ids = [r["problem_id"] for r in parse_records(out / "records.jsonl")[0]]
    assert sorted(ids) == sorted(p.id for p in load_problems(str(path)))  # each exactly once


def test_single_run_plan_records_groups_for_later_subsampling(tmp_path: Path) -> None:
    dataset, problems = _dataset(tmp_path, 2)
    plan = single_plan(
        tmp_path / "r", SearchConfig(budget=3, max_tokens=64), None, dataset, {"name": "scripted"}
    )
    asyncio.run(execute_plans([plan], problems, generator=ScriptedGenerator(), load_scorer=None))
    record = next(iter(merge_record_files((tmp_path / "r").glob("records*.jsonl")).values()))
    assert len(record["subsample"]["groups"]) == 3 and record["run_key"] == plan.spec.key
