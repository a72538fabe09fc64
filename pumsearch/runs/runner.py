"""Running configurations over a dataset: records written as problems finish, resumable.

Every problem goes through the engine (many at once, their backend calls coalesced). As each one
finishes, its tree is saved and its record appended and flushed, so a crash or Ctrl-C loses only
problems still in flight. A rerun skips problems with a finished record, retries failed ones,
and redoes a problem whose record line was cut off.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pumsearch.runs.grid import RunPlan, ScorerSpec
from pumsearch.runs.records import RunError, RunWriteError
from pumsearch.runs.rundir import RunDir, open_run_dir
from pumsearch.runs.subsample import group_rows
from pumsearch.search.engine import Engine
from pumsearch.search.problem import Problem, require_answers
from pumsearch.search.protocols import Generator, Scorer
from pumsearch.search.result import SearchResult, make_failed_record, make_record
from pumsearch.search.selection import select_candidate
from pumsearch.strategies import Strategy, make_strategy


class RunProgress(Protocol):
    """What a progress display is told (the CLI draws a rich bar; tests may record the calls):
    ``begin`` with the records of the problems finished before (a resumed run), ``record`` as each
    problem finishes, ``note`` for what the user should know (a repaired records file)."""

    def begin(self, label: str, total: int, already_done: int, previous: Sequence[dict[str, Any]] = ()) -> None: ...

    def record(self, record: dict[str, Any]) -> None: ...

    def note(self, message: str) -> None: ...


class NoProgress:
    def begin(self, label: str, total: int, already_done: int, previous: Sequence[dict[str, Any]] = ()) -> None:
        pass

    def record(self, record: dict[str, Any]) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class Tally:
    """Live figures of one run (for the progress bar and the summary)."""

    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    failed: int = 0
    graded: int = 0
    correct: int = 0
    generated_tokens: int = 0
    errors: list[str] = field(default_factory=list)  # the error of each failed problem

    def add(self, record: dict[str, Any], *, counts_tokens: bool = True) -> None:
        """Count a record; ``counts_tokens=False`` for one finished before this session (it enters
        the accuracy, not the rate)."""
        if record["status"] != "ok":
            self.failed += 1
            self.errors.append(str(record.get("error") or "unknown error"))
            return
        self.done += 1
        if counts_tokens:
            self.generated_tokens += int(record["counters"]["generated_tokens"])
        if record["correct"] is not None or record.get("reference") is not None:  # no answer: wrong
            self.graded += 1
            self.correct += int(bool(record["correct"]))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def tokens_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.generated_tokens / elapsed if elapsed > 0 else 0.0


def record_extras(result: SearchResult, run_dir: RunDir, value_kind: str,
                  strategy: Strategy | None = None) -> dict[str, Any]:
    """pass@N (any finished candidate correct) and maj@N (the majority answer correct), the run
    key, and for subsampled strategies the groups smaller budgets are read off (``strategy`` says
    which nodes make each group)."""
    cands = result.candidates
    graded = result.correct is not None or any(c.correct is not None for c in cands)
    majority = select_candidate(cands, "majority", value_kind) if cands else None
    extra: dict[str, Any] = {
        "run_key": run_dir.spec.key,
        "pass_at_n": any(bool(c.correct) for c in cands) if graded else None,
        "maj_at_n": (bool(majority.correct) if majority else False) if graded else None,
    }
    sub = run_dir.spec.subsample
    if sub:
        if strategy is None:
            raise ValueError("a subsampled run's records need the strategy that made them")
        keep = strategy.vote_filter()
        extra["subsample"] = {
            **sub,
            "value_kind": value_kind,
            **({"keep": keep} if keep < 1 else {}),  # votes at a read-off budget filter as the run did
            "groups": group_rows(result.tree, cands, strategy.subsample_groups(result.tree, cands)),
            "stopped_early": strategy.stopped_early(result),
        }
    return extra


def default_note(plan: RunPlan) -> dict[str, str]:
    """The record field saying what was chosen because no scorer was named, where something was."""
    return {"scorer_default": plan.default_note} if plan.default_note else {}


def group_failures(errors: Sequence[str]) -> list[tuple[int, str]]:
    """(count, an example) per kind of failure, most frequent first: errors that differ only in
    numbers (ports, token counts) are one kind."""
    kinds: Counter[str] = Counter()
    example: dict[str, str] = {}
    for error in errors:
        kind = re.sub(r"\d+", "#", error)
        kinds[kind] += 1
        example.setdefault(kind, error)
    return [(count, example[kind]) for kind, count in kinds.most_common()]


def summarise(run_dir: RunDir, **facts: Any) -> dict[str, Any]:
    """Totals over every record in the directory (all shards), plus the given facts. ``accuracy``
    counts every planned problem (a failed or missing one as wrong); ``accuracy_finished`` only
    the finished ones."""
    records = run_dir.records()
    # id -> has a reference answer, for every problem asked for (a record knows best)
    planned = {**run_dir.planned(), **{pid: r.get("reference") is not None for pid, r in records.items()}}
    ok = [r for r in records.values() if r["status"] == "ok"]
    graded = [r for r in ok if r["correct"] is not None or r.get("reference") is not None]  # no answer: wrong
    gradable = sum(planned.values())

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "format": "pumsearch-summary",
        "key": run_dir.spec.key,
        "problems_planned": len(planned),
        "problems_finished": len(ok),
        "problems_failed": len(records) - len(ok),
        "problems_missing": len(planned.keys() - records.keys()),
        "failures": [{"count": n, "error": e} for n, e in group_failures(
            [str(r.get("error")) for r in records.values() if r["status"] != "ok"])],
        "accuracy": sum(bool(r["correct"]) for r in graded) / gradable if gradable else None,
        "accuracy_finished": mean([float(bool(r["correct"])) for r in graded]),
        "pass_at_n": mean([float(bool(r.get("pass_at_n"))) for r in graded]),
        "maj_at_n": mean([float(bool(r.get("maj_at_n"))) for r in graded]),
        "generated_tokens": sum(int(r["counters"]["generated_tokens"]) for r in ok),
        "mean_generated_tokens": mean([float(r["counters"]["generated_tokens"]) for r in ok]),
        "problem_wall_time": sum(float(r["timings"]["wall_time"]) for r in ok),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **facts,
    }


async def execute_run(
    plan: RunPlan,
    problems: Sequence[Problem],
    *,
    generator: Generator,
    scorer: Scorer | None,
    concurrency: int = 16,
    batch_tokens: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: RunProgress | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Tally:
    """Run one configuration over ``problems`` into ``plan.path`` (resuming what is there)."""
    progress = progress or NoProgress()
    if scorer is not None and scorer.needs_reference:
        require_answers(problems, who=f"scorer {scorer.identity}", fix="give --answer-field or drop that scorer",
                        error=RunError)
    run_dir = open_run_dir(plan.path, plan.spec, extra_config)
    with run_dir.lock(shard):
        return await _execute_locked(plan, run_dir, problems, generator=generator, scorer=scorer,
                                     concurrency=concurrency, batch_tokens=batch_tokens, shard=shard,
                                     progress=progress)


async def _execute_locked(plan: RunPlan, run_dir: RunDir, problems: Sequence[Problem], *, generator: Generator,
                          scorer: Scorer | None, concurrency: int, batch_tokens: int | None,
                          shard: tuple[int, int] | None, progress: RunProgress) -> Tally:
    config = plan.spec.search
    strategy = make_strategy(config, scorer is not None)
    run_dir.add_planned(problems, shard)
    records = run_dir.records()
    previous = [records[p.id] for p in problems if records.get(p.id, {}).get("status") == "ok"]
    todo = [p for p in problems if records.get(p.id, {}).get("status") != "ok"]
    value_kind = scorer.value_kind if scorer is not None else "probability"
    scorer_label = plan.spec.scorer_label if scorer is not None else None
    tally = Tally()
    log = run_dir.log(shard).open()
    if log.repaired:
        progress.note(f"{log.path} ended in a line cut off mid-write (a killed run): it was removed, and that "
                      "problem is run again")
    progress.begin(plan.label, len(problems), len(previous), previous)
    started_wall = time.perf_counter()
    write_error: list[RunWriteError] = []

    def on_result(problem: Problem, result: SearchResult | None, err: BaseException | None) -> None:
        if write_error:  # the directory stopped taking writes: the run is ending
            return
        try:
            write_result(problem, result, err)
        except OSError as error:
            write_error.append(RunWriteError(
                f"stopped: cannot write to {run_dir.path} ({error.strerror or error}); the problems finished "
                "before are kept: make it writable and rerun the same command to resume"))
            raise write_error[0] from None

    def write_result(problem: Problem, result: SearchResult | None, err: BaseException | None) -> None:
        if result is not None:
            tree_rel = run_dir.tree_file(problem.id)
            result.tree.save(run_dir.path / tree_rel, result.summary())
            record = make_record(
                result,
                tree_file=tree_rel,
                scorer=scorer_label,
                budget=config.budget,
                seed=config.seed,
                started_at=time.time() - result.counters.wall_time,
                extra={**record_extras(result, run_dir, value_kind, strategy), **default_note(plan)},
            )
        else:
            record = make_failed_record(
                problem,
                f"{type(err).__name__}: {err}",
                strategy=strategy.name,
                scorer=scorer_label,
                budget=config.budget,
                seed=config.seed,
                started_at=time.time(),
                extra={"run_key": run_dir.spec.key},
            )
        log.append(record)
        tally.add(record)
        progress.record(record)

    interrupted = True
    try:
        if todo:
            engine = Engine(generator, scorer, concurrency=concurrency, batch_tokens=batch_tokens)
            await engine.run(todo, strategy, on_result=on_result)
        interrupted = False
    finally:  # also on Ctrl-C (cancellation): what finished is on disk; say so in the summary
        log.close()
        summary = summarise(
            run_dir,
            interrupted=interrupted,
            model_name=getattr(generator, "name", None),
            samples_reproducible=getattr(generator, "samples_reproducible", None),  # seeds decide the samples
            scorer_identity=getattr(scorer, "identity", None),
            value_kind=value_kind,
            session_wall_time=round(time.perf_counter() - started_wall, 3),
            repaired_truncated_line=log.repaired,
        )
        try:
            run_dir.write_summary(summary)
        except RunError:
            if not write_error:  # a directory that took every record but not the summary
                raise
    return tally


async def execute_plans(
    plans: Sequence[RunPlan],
    problems: Sequence[Problem],
    *,
    generator: Generator,
    load_scorer: Any,
    progress: RunProgress | None = None,
    **options: Any,
) -> list[Tally]:
    """Run every plan with one generator; each scorer is loaded once (``load_scorer(spec)``)."""
    scorers: dict[str, Scorer] = {}
    tallies = []
    try:
        for plan in plans:
            scorer = None
            if plan.scorer is not None:
                if plan.scorer.spec not in scorers:
                    scorers[plan.scorer.spec] = load_scorer(plan.scorer, plan.spec.search)
                scorer = scorers[plan.scorer.spec]
            tallies.append(
                await execute_run(
                    plan, problems, generator=generator, scorer=scorer, progress=progress, **options
                )
            )
    finally:
        for scorer in scorers.values():
            await scorer.aclose()
    return tallies


def default_scorer_loader(spec: ScorerSpec, config: Any) -> Scorer:
    from pumsearch.scorers import load_scorer

    return load_scorer(spec.name, step_delimiter=config.step_delimiter, **spec.load_options())


__all__ = ["NoProgress", "RunProgress", "Tally", "execute_plans", "execute_run", "group_failures", "summarise"]
