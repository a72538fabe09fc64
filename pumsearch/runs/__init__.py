"""Evaluation at scale: run directories, resumable records, sweep grids, subsampled curves, reports.

See docs/evaluation.md. Nothing here imports torch at import time.
"""

from pumsearch.runs.grid import RunPlan, ScorerSpec, parse_scorer_specs, parse_shard, plan_grid, single_plan
from pumsearch.runs.records import RecordLog, RunError, merge_record_files, parse_records
from pumsearch.runs.rundir import RunDir, RunSpec, find_run_dirs, load_run_dir, open_run_dir
from pumsearch.runs.runner import execute_plans, execute_run

__all__ = [
    "RecordLog",
    "RunDir",
    "RunError",
    "RunPlan",
    "RunSpec",
    "ScorerSpec",
    "execute_plans",
    "execute_run",
    "find_run_dirs",
    "load_run_dir",
    "merge_record_files",
    "open_run_dir",
    "parse_records",
    "parse_scorer_specs",
    "parse_shard",
    "plan_grid",
    "single_plan",
]
