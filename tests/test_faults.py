"""Faults during a run: the policy's server dies mid-run, another process writes the same
directory, the directory stops taking writes. Each ends with a documented exit code and a message
that says what happened and how to go on; nothing finished is lost; a rerun finishes the work."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app
from pumsearch.runs.records import merge_record_files
from pumsearch.runs.report import build_report
from tests.helpers_runs import write_gsm8k_style
from tests.helpers_servers import InferenceServer
from tests.tiny_models import build_step_llama

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
PROBLEMS = 20
SAMPLES = 2  # Best-of-2: the sglang-server backend sends one POST per sample
VOLATILE_COUNTERS = ("wall_time", "backend_time", "scorer_time", "cached_prompt_tokens", "cached_prompt_share")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def said(result) -> str:
    """What a command printed, with the console's line wrapping undone."""
    return " ".join(result.output.split())


def records(out: Path) -> dict[str, dict]:
    return merge_record_files(out.glob("records*.jsonl"))


def comparable(record: dict) -> dict:
    """A record without what depends on time or on the server's cache of earlier requests."""
    counters = {k: v for k, v in record["counters"].items() if k not in VOLATILE_COUNTERS}
    return {**{k: v for k, v in record.items() if k not in ("timings", "counters")}, "counters": counters}


@pytest.fixture()
def server(tmp_path: Path):
    served = InferenceServer(build_step_llama(tmp_path / "policy")).start()
    yield served
    served.stop()


def test_a_server_that_dies_mid_run_fails_loudly_and_the_rerun_finishes_identically(server, tmp_path: Path) -> None:
    data = write_gsm8k_style(tmp_path / "d.jsonl", PROBLEMS)
    broken, whole = tmp_path / "broken", tmp_path / "whole"
    args = ["run", "--backend", "sglang-server", "--url", server.url, "--model", str(server.model_dir),
            "--retries", "0", "--request-timeout", "30", "--dataset", str(data), "--budget", str(SAMPLES),
            "--max-tokens", "6", "--concurrency", "1", "--max-concurrency", "1"]
    server.faults.die_after = 6 * SAMPLES  # the server stops listening after the 6th problem

    result = invoke(*args, "--out", str(broken))

    assert result.exit_code == 1, result.output  # some problems failed (README, "Exit codes")
    assert "Traceback" not in result.output
    assert "6 of 20 finished, 14 failed" in said(result)
    assert "14 problems failed:" in said(result)
    # the reasons grouped with their counts, as printed; a request in flight as the port closed
    # fails with another transport error than "connection refused" (ReadError, a disconnect)
    summary = json.loads((broken / "summary.json").read_text())
    groups = summary["failures"]
    assert sum(group["count"] for group in groups) == 14, groups
    assert all(group["error"].startswith("BackendUnavailable") for group in groups), groups
    assert any("connection refused" in group["error"] for group in groups), groups
    for group in groups:
        assert f"{group['count']} x {' '.join(group['error'].split())[:60]}" in said(result), group
    assert "rerun the same command" in said(result)
    kept = records(broken)
    assert sorted(r["status"] for r in kept.values()) == ["failed"] * 14 + ["ok"] * 6
    assert all("BackendUnavailable" in r["error"] for r in kept.values() if r["status"] == "failed")
    assert (summary["problems_planned"], summary["problems_failed"]) == (20, 14)

    (row,) = build_report([broken]).rows  # accuracy over all 20 problems, failures counted as wrong
    finished = [r for r in kept.values() if r["status"] == "ok"]
    assert (row.n, row.failed, row.missing) == (20, 14, 0)
    assert row.accuracy == pytest.approx(sum(bool(r["correct"]) for r in finished) / 20)
    (old_view,) = build_report([broken], finished_only=True).rows
    assert (old_view.n, old_view.failed) == (6, 0)
    shown = invoke("report", str(broken), "--no-plots")
    assert shown.exit_code == 0, shown.output
    assert "failed" in shown.output and "counts failed and missing problems as wrong" in said(shown)

    server.faults.die_after = None
    server.start(port=server.port)  # the server is back on the same address
    resumed = invoke(*args, "--out", str(broken))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming 6/20" in said(resumed)
    assert "20 of 20 finished, 0 failed" in said(resumed)

    assert invoke(*args, "--out", str(whole)).exit_code == 0
    rerun, uninterrupted = records(broken), records(whole)
    assert rerun.keys() == uninterrupted.keys()
    assert all(r["status"] == "ok" for r in rerun.values())
    assert {k: comparable(v) for k, v in rerun.items()} == {k: comparable(v) for k, v in uninterrupted.items()}
    assert len((broken / "records.jsonl").read_text().splitlines()) == PROBLEMS + 14  # failed lines, then their redo


def _cli_popen(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "pumsearch.cli", *args], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _end(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _wait_for_records(out: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        path = out / "records.jsonl"
        if path.exists() and len(path.read_bytes().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the first run wrote fewer than {count} records (exit {proc.poll()})")


def _slow_run(tmp_path: Path, problems: int) -> tuple[Path, list[str]]:
    """A run of the scripted backend slow enough (0.3 s a problem) to act on while it runs."""
    data = write_gsm8k_style(tmp_path / "d.jsonl", problems)
    out = tmp_path / "run"
    return out, ["run", "--backend", "scripted", "--scripted-delay", "0.3", "--concurrency", "1", "--dataset",
                 str(data), "--budget", "2", "--out", str(out)]


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    out, args = _slow_run(tmp_path, 12)
    first = _cli_popen(tmp_path / "first.log", *args)
    try:
        _wait_for_records(out, 1, first)
        second = invoke(*args)
        assert second.exit_code == 3, second.output  # busy (README, "Exit codes")
        assert f"pid {first.pid}" in said(second) and "another pumsearch process" in said(second)
        assert "Traceback" not in second.output
        _wait_for_records(out, 3, first)
        first.send_signal(signal.SIGKILL)  # kill -9: the OS drops the lock with the process
        first.wait(timeout=60)
    finally:
        _end(first)
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    lines = (out / "records.jsonl").read_text().splitlines()
    ids = [json.loads(line)["problem_id"] for line in lines if line.strip()]
    assert sorted(set(ids)) == sorted(ids) and len(ids) == 12  # nobody wrote a problem twice


def _stop_writes(out: Path) -> None:
    """Make the run directory refuse new files: read-only, or (as root, whom permissions do not
    bind) with trees/ turned into a plain file."""
    if os.geteuid() != 0:
        for path in (out, out / "trees"):
            path.chmod(0o555)
        return
    shutil.rmtree(out / "trees")
    (out / "trees").write_text("not a directory any more")


def test_a_directory_that_stops_taking_writes_mid_run_ends_with_one_line_and_keeps_what_finished(
    tmp_path: Path,
) -> None:
    out, args = _slow_run(tmp_path, 6)
    proc = _cli_popen(tmp_path / "log", *args)
    try:
        _wait_for_records(out, 2, proc)
        _stop_writes(out)
        proc.wait(timeout=120)
    finally:
        _end(proc)
        if out.is_dir():
            out.chmod(0o755)
    output = " ".join((tmp_path / "log").read_text().split())
    assert proc.returncode == 1, output  # the run stopped part-way (README, "Exit codes")
    assert "Traceback" not in output
    assert f"cannot write to {out}" in output and "rerun the same command to resume" in output
    kept = records(out)
    assert 2 <= len(kept) < 6 and all(r["status"] == "ok" for r in kept.values())
