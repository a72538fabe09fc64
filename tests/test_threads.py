"""--threads: torch computes with the threads asked for (intra- and inter-op), set before torch's
first operation; without the flag, OMP_NUM_THREADS where set, else every core. Waiting threads sleep
(OMP_WAIT_POLICY=PASSIVE) unless the environment names a policy: spinning ones made the first
command 20-60x slower on a loaded machine (benchmarks/bench_threads.py, benchmarks/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# runs a command in a fresh process, importing torch only after it, then says what torch used
PROBE = """
import sys
from pumsearch.cli import app
try:
    app(sys.argv[1:])
except SystemExit as end:
    assert not end.code, end.code
import os
import torch
print("THREADS", torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_WAIT_POLICY"))
"""
CORES = len(os.sched_getaffinity(0))


def threads_used(*args: str, env: dict[str, str] | None = None) -> tuple[int, int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                               "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**clean, "PYTHONPATH": str(REPO), **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("THREADS"))
    _, intra, inter, policy = line.split()
    return int(intra), int(inter), policy


@pytest.mark.parametrize(("flags", "env", "expected"), [
    (["--threads", "1"], {}, (1, 1, "PASSIVE")),
    ([], {}, (CORES, CORES, "PASSIVE")),  # the default: every core, waiting threads asleep
    (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}, (2, 2, "ACTIVE")),  # the environment's policy stands
])
def test_solve_computes_with_the_threads_asked_for(tiny_llama_dir: Path, flags: list[str], env: dict[str, str],
                                                   expected: tuple[int, int, str]) -> None:
    used = threads_used("solve", "What is 2 + 3?", "--model", str(tiny_llama_dir), "--budget", "1", "--max-tokens",
                        "2", "--json", *flags, env=env)
    assert used == expected


def test_without_the_flag_the_environment_decides_and_the_flag_beats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pumsearch import models

    monkeypatch.setattr(models, "_wanted_threads", None)
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert models.default_cpu_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert models.default_cpu_threads() == CORES
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    try:
        assert models.use_cpu_threads(1) == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1  # torch was loaded: set now
    finally:
        torch.set_num_threads(before)


def test_every_command_that_runs_torch_takes_threads() -> None:
    from typer.testing import CliRunner

    from pumsearch.cli import app
    from pumsearch.cli_options import RUN_GROUPS, SOLVE_GROUPS, SWEEP_GROUPS, THREADS

    for groups in (SOLVE_GROUPS, RUN_GROUPS, SWEEP_GROUPS):
        assert any(THREADS[0] in group for group in groups)
    for command in (["solve"], ["run"], ["sweep"], ["score"], ["testbed", "evaluate"], ["testbed", "train"],
                    ["pum", "label"], ["pum", "train"]):
        shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert "--threads" in shown.output, command
