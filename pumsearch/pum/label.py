"""Label prefixes with their utility for a group of students (the PUM's training signal).

For each problem: sample trajectories from each policy model; cut each trajectory into prefixes at
token lengths shared by all trajectories of the problem (so one trajectory gives prefixes at two
lengths: "vertical", and two trajectories give prefixes at one length: "horizontal"); estimate
each prefix's solve rate q_s(x, p) with ``rollouts`` continuations from each student s, and the
empty prefix's q_s(x, empty) once per problem and student. The gain is q_s(x, p) - q_s(x, empty);
the group utility standardises each student's gains over the problem's prefixes and takes the
mean over students (``standardise="none"``: the mean of raw gains). A complete trajectory is also
a prefix (``include_complete``): its solve rate is its own graded answer, 1 or 0, with no rollouts.

All sampling goes through the Engine (one engine per model, many problems at once), so rollouts
batch like any search. Output: one JSON line per problem, appended and flushed as each chunk of
problems finishes; a rerun skips problems already written and refuses a file written with other
settings. See docs/pum-training.md for the record format.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pumsearch.scorers.rollout import TOKEN_CAPS, RolloutPrefix, solve_rates
from pumsearch.search.budget import Budget
from pumsearch.search.config import DEFAULT_SYSTEM_PROMPT, SearchConfig
from pumsearch.search.context import SearchContext
from pumsearch.search.engine import Engine
from pumsearch.search.grading import Grader, default_grader, extract_answer
from pumsearch.search.problem import Problem, require_answers
from pumsearch.search.protocols import Completion, Generator
from pumsearch.search.result import SearchResult

LABELS_FORMAT = "pumsearch-pum-labels"
LABELS_VERSION = 1
STANDARDISE = ("problem", "none")
# options added after the first label files, with their defaults: at the default they stay out of
# the settings key, so those files resume
LATER_OPTIONS = {"rollout_seed": None, "token_cap": "continuation", "branches": 0}


class LabelError(ValueError):
    """Bad labelling input (the message says what to fix)."""


@dataclass(frozen=True)
class LabelSettings:
    """Every choice of the labelling run. The paper leaves most values open; the defaults are ours
    and documented in docs/pum-training.md."""

    trajectories: int = 4  # per policy and problem
    cuts: int = 3  # evenly spaced cut lengths per problem, when cut_lengths is empty
    cut_lengths: tuple[int, ...] = ()  # explicit token lengths (override ``cuts``)
    include_complete: bool = True  # the finished trajectory is a prefix too (BoN scores those)
    rollouts: int = 4  # per prefix and student (k)
    temperature: float = 0.8  # students' rollouts
    policy_temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 256  # per trajectory and per rollout
    # "solution": max_tokens caps prefix + rollout, as a search caps a whole solution (a rollout
    # from a prefix of L tokens gets max_tokens - L); "continuation": each rollout gets max_tokens
    token_cap: str = "continuation"
    standardise: str = "problem"
    seed: int = 0
    # students' seed when not ``seed``: a second, independent draw of the rollouts of the same
    # trajectories and prefixes (how noisy the labels are: the label ceiling)
    rollout_seed: int | None = None
    # sibling continuations per trajectory and cut length: the policy resamples from the cut, and a
    # distinct continuation's prefix at the next cut length differs from its parent's in one stretch
    # only (the contrast a beam search ranks); 0: none
    branches: int = 0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # what policies and students see
    step_delimiter: str = "\n\n"

    def __post_init__(self) -> None:
        for name in ("trajectories", "rollouts", "max_tokens"):
            if getattr(self, name) < 1:
                raise LabelError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.branches < 0:
            raise LabelError(f"--branches must be >= 0 (got {self.branches})")
        if self.cuts < 0 or any(length < 1 for length in self.cut_lengths):
            raise LabelError("cut lengths must be positive token counts (--cuts >= 0, --cut-lengths 8,16,...)")
        if self.token_cap not in TOKEN_CAPS:
            raise LabelError(f"unknown --token-cap {self.token_cap!r}: use one of {', '.join(TOKEN_CAPS)}")
        if self.standardise not in STANDARDISE:
            raise LabelError(f"unknown --standardise {self.standardise!r}: use one of {', '.join(STANDARDISE)}")
        if self.temperature < 0 or self.policy_temperature < 0:
            raise LabelError("temperatures must be >= 0")


@dataclass
class Trajectory:
    policy: str
    text: str
    token_ids: list[int] | None  # content tokens in the policy's tokenizer (end-of-sequence dropped)
    num_tokens: int
    finish_reason: str
    answer: str | None = None
    correct: bool | None = None
    branch_of: int | None = None  # the trajectory this one resampled from its first branch_length tokens
    branch_length: int = 0


@dataclass
class Prefix:
    trajectory: int  # index into the problem's trajectories
    length: int  # tokens of the trajectory kept (its num_tokens when complete)
    text: str
    complete: bool
    token_ids: list[int] | None = field(default=None, repr=False)
    solve_rates: list[float] = field(default_factory=list)  # one per student
    gains: list[float] = field(default_factory=list)
    utility: float = 0.0


# -- cutting ------------------------------------------------------------------------------------
_WORD = re.compile(r"^\s*\S+\s*|\S+\s*")


def text_pieces(text: str) -> list[str]:
    """A text cut into words, each with the whitespace after it, for backends without token ids
    (a word is a token, as in the scripted backend). So a cut after a step's last word keeps the
    step delimiter, and a student continues with the next step. Joining gives the text back."""
    return _WORD.findall(text)


def auto_cut_lengths(lengths: Sequence[int], cuts: int) -> list[int]:
    """``cuts`` lengths evenly spaced inside the median trajectory length: one grid per problem,
    shared by all its trajectories, so that trajectories meet at the same lengths."""
    if not lengths or cuts < 1:
        return []
    median = statistics.median(lengths)
    grid = {round(median * i / (cuts + 1)) for i in range(1, cuts + 1)}
    return sorted(length for length in grid if length >= 1)


def cut_prefixes(trajectories: Sequence[Trajectory], lengths: Sequence[int], *, include_complete: bool,
                 decode: Callable[[Trajectory, int], str] | None = None) -> list[Prefix]:
    """Every trajectory cut at every length shorter than itself, then (optionally) the whole of it.
    ``decode(trajectory, n)`` gives the text of the first n tokens; without it (or without token
    ids) a token is a word with its trailing whitespace (``text_pieces``)."""
    out: list[Prefix] = []
    for index, traj in enumerate(trajectories):
        for length in sorted(set(lengths)):
            if length < traj.num_tokens:
                text, ids = trajectory_head(traj, length, decode)
                out.append(Prefix(index, length, text, False, ids))
        if include_complete:
            out.append(Prefix(index, traj.num_tokens, traj.text, True, traj.token_ids))
    return out


def trajectory_head(traj: Trajectory, length: int, decode: Callable[[Trajectory, int], str] | None
                    ) -> tuple[str, list[int] | None]:
    """The first ``length`` tokens of a trajectory: their text and, when known, their token ids
    (without ids or ``decode``, a token is a word with its trailing whitespace)."""
    if traj.token_ids is not None and decode is not None:
        return decode(traj, length), traj.token_ids[:length]
    return "".join(text_pieces(traj.text)[:length]), None


# -- utility ------------------------------------------------------------------------------------
def group_utility(rates: Sequence[Sequence[float]], baselines: Sequence[float], standardise: str) -> list[list[float]]:
    """Per-student gains (rows: prefixes, columns: students) and, appended as each row's last
    element, the group utility. ``standardise="problem"``: each student's gains are z-scored over
    the rows (population standard deviation; a student whose gains are all equal contributes 0,
    as it prefers nothing), then averaged over students. ``"none"``: the mean of raw gains."""
    gains = [[r - b for r, b in zip(row, baselines, strict=True)] for row in rates]
    if not gains:
        return []
    students = len(baselines)
    if standardise == "problem":
        columns = []
        for s in range(students):
            col = [g[s] for g in gains]
            mean = sum(col) / len(col)
            std = math.sqrt(sum((x - mean) ** 2 for x in col) / len(col))
            columns.append([(x - mean) / std if std > 1e-9 else 0.0 for x in col])
        scaled = [[columns[s][i] for s in range(students)] for i in range(len(gains))]
    else:
        scaled = gains
    return [[*row, sum(z) / students] for row, z in zip(gains, scaled, strict=True)]


# -- engine jobs --------------------------------------------------------------------------------
class _SampleJob:
    """A "strategy" that samples continuations of given prefixes through the engine's batching.
    ``todo[problem.id]`` lists (text, token_ids) prefixes; completions land in ``done``. With
    ``caps``, each prefix's continuations have their own token cap (one engine submission per
    distinct cap, all at once, so they still batch together)."""

    name = "pum-label"
    config: SearchConfig  # the sampling settings, set by _run_job

    def __init__(self, todo: dict[str, list[tuple[str, list[int] | None]]], k: int,
                 caps: dict[str, list[int]] | None = None) -> None:
        self.todo = todo
        self.k = k
        self.caps = caps
        self.done: dict[str, list[list[Completion]]] = {}

    def make_budget(self) -> Budget:
        return Budget(limit=2**62, unit="samples")

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        prefixes = self.todo[problem.id]
        if self.caps is None:
            self.done[problem.id] = await ctx.sample(prefixes, self.k)
        else:
            self.done[problem.id] = await _sample_capped(ctx, prefixes, self.caps[problem.id], self.k)
        return SearchResult(problem=problem, strategy=self.name, tree=ctx.tree, counters=ctx.counters)


async def _sample_capped(ctx: SearchContext, prefixes: list[tuple[str, list[int] | None]], caps: list[int],
                         k: int) -> list[list[Completion]]:
    """``ctx.sample`` with a token cap per prefix; a prefix with no tokens left gets no rollouts
    (its solve rate is 0: it cannot reach an answer)."""
    groups: dict[int, list[int]] = {}
    for index, cap in enumerate(caps):
        if cap >= 1:
            groups.setdefault(cap, []).append(index)
    outputs = await asyncio.gather(*(ctx.sample([prefixes[i] for i in members], k, max_tokens=cap)
                                     for cap, members in groups.items()))
    done: list[list[Completion]] = [[] for _ in prefixes]
    for members, completions in zip(groups.values(), outputs, strict=True):
        for index, completion in zip(members, completions, strict=True):
            done[index] = completion
    return done


async def _run_job(generator: Generator, problems: Sequence[Problem], job: _SampleJob, config: SearchConfig,
                   grader: Grader) -> None:
    engine = Engine(generator, grader=grader, concurrency=max(len(problems), 1))
    job.config = config
    results = await engine.run(problems, job)
    for problem, outcome in zip(problems, results, strict=True):
        if isinstance(outcome, BaseException):
            raise LabelError(f"sampling failed for problem {problem.id!r} with {generator.name}: {outcome}")


def content_ids(generator: Generator, completion: Completion) -> list[int] | None:
    """The completion's token ids without trailing end-of-sequence tokens, or None when unknown."""
    if completion.token_ids is None or not generator.takes_token_ids or _tokenizer(generator) is None:
        return None
    eos = set(getattr(generator, "eos_ids", None) or ())
    ids = list(completion.token_ids)
    while ids and ids[-1] in eos:
        ids.pop()
    return ids


def _tokenizer(generator: Generator) -> Any:
    return getattr(generator, "tokenizer", None)


def _same_tokenizer(a: Generator, b: Generator) -> bool:
    ta, tb = _tokenizer(a), _tokenizer(b)
    if ta is None or tb is None:
        return False
    return ta is tb or ta.get_vocab() == tb.get_vocab()


def _decoder(generator: Generator) -> Callable[[Trajectory, int], str] | None:
    tok = _tokenizer(generator)
    if tok is None:
        return None
    return lambda traj, n: tok.decode((traj.token_ids or [])[:n], skip_special_tokens=True)


# -- the labelling run --------------------------------------------------------------------------
def settings_key(settings: LabelSettings, policies: Sequence[Generator], students: Sequence[Generator]) -> str:
    chosen = {k: v for k, v in asdict(settings).items() if LATER_OPTIONS.get(k, ...) != v}
    blob = json.dumps({"settings": chosen, "policies": [g.name for g in policies],
                       "students": [g.name for g in students]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def label_problems(problems: Sequence[Problem], policies: Sequence[Generator], students: Sequence[Generator],
                         settings: LabelSettings, *, grader: Grader | None = None) -> list[dict[str, Any]]:
    """Label a chunk of problems; one record per problem (see docs/pum-training.md)."""
    if not policies or not students:
        raise LabelError("labelling needs at least one policy (--policy) and one student (--students)")
    require_answers(problems, who="labelling (rollouts are graded)", fix="label problems with answers",
                    error=LabelError)
    grader = grader or default_grader()
    trajectories = await _sample_trajectories(problems, policies, settings, grader)
    lengths = {p.id: _cut_grid(trajectories[p.id], settings) for p in problems}
    roots = {p.id: len(trajectories[p.id]) for p in problems}
    drawn = await _sample_branches(problems, policies, trajectories, lengths, settings, grader)
    prefixes = {p.id: _prefixes_for(trajectories[p.id], lengths[p.id], policies, settings) for p in problems}
    cost: dict[str, dict[str, Any]] = {p.id: {"policy_samples": roots[p.id] + drawn.get(p.id, 0),
                                              "policy_tokens": sum(t.num_tokens for t in trajectories[p.id]),
                                              "students": []} for p in problems}
    baselines: dict[str, list[float]] = {p.id: [] for p in problems}
    for s, student in enumerate(students):
        await _student_rates(s, student, problems, trajectories, prefixes, policies, settings, grader,
                             baselines, cost)
    records = []
    for problem in problems:
        rows = group_utility([pre.solve_rates for pre in prefixes[problem.id]], baselines[problem.id],
                             settings.standardise)
        for pre, row in zip(prefixes[problem.id], rows, strict=True):
            pre.gains, pre.utility = row[:-1], row[-1]
        records.append(_record(problem, trajectories[problem.id], prefixes[problem.id], baselines[problem.id],
                               students, settings, cost[problem.id]))
    return records


async def _sample_trajectories(problems: Sequence[Problem], policies: Sequence[Generator], settings: LabelSettings,
                               grader: Grader) -> dict[str, list[Trajectory]]:
    out: dict[str, list[Trajectory]] = {p.id: [] for p in problems}
    for index, policy in enumerate(policies):
        config = _config(settings, settings.policy_temperature, seed=settings.seed * 1000 + index)
        job = _SampleJob({p.id: [("", None)] for p in problems}, settings.trajectories)
        await _run_job(policy, problems, job, config, grader)
        for problem in problems:
            for completion in job.done[problem.id][0]:
                ids = content_ids(policy, completion)
                tokens = len(ids) if ids is not None else len(text_pieces(completion.text))
                out[problem.id].append(Trajectory(policy.name, completion.text, ids, tokens,
                                                  completion.finish_reason, extract_answer(completion.text)))
    _grade(problems, out, grader)
    return out


def _grade(problems: Sequence[Problem], trajectories: dict[str, list[Trajectory]], grader: Grader) -> None:
    """Grade every trajectory not graded yet."""
    todo = [(p, t) for p in problems for t in trajectories[p.id] if t.correct is None]
    verdicts = grader.grade_many([(t.answer, p.answer) for p, t in todo])
    for (_, traj), verdict in zip(todo, verdicts, strict=True):
        traj.correct = verdict


def _cut_grid(trajs: list[Trajectory], settings: LabelSettings) -> list[int]:
    """The problem's cut lengths, from its root trajectories (before any branch)."""
    return sorted(set(settings.cut_lengths or auto_cut_lengths([t.num_tokens for t in trajs], settings.cuts)))


async def _sample_branches(problems: Sequence[Problem], policies: Sequence[Generator],
                           trajectories: dict[str, list[Trajectory]], lengths: dict[str, list[int]],
                           settings: LabelSettings, grader: Grader) -> dict[str, int]:
    """``branches`` continuations of each root trajectory from each of its open cut lengths, by the
    trajectory's own policy, capped so that prefix and continuation share ``max_tokens`` as the
    trajectory did. A continuation identical to its parent's, or to an earlier sibling's, is
    dropped: it would only repeat a prefix's rollouts. Returns the continuations drawn per problem
    (kept or not: the policy's cost)."""
    drawn: dict[str, int] = {}
    if not settings.branches:
        return drawn
    for index, policy in enumerate(policies):
        decode = _decoder(policy)
        points: dict[str, list[tuple[int, int]]] = {}  # problem -> (trajectory, cut length)
        todo: dict[str, list[tuple[str, list[int] | None]]] = {}
        caps: dict[str, list[int]] = {}
        for problem in problems:
            for t, traj in enumerate(trajectories[problem.id]):
                if traj.policy != policy.name:
                    continue
                for length in lengths[problem.id]:
                    if length < traj.num_tokens and settings.max_tokens - length >= 1:
                        points.setdefault(problem.id, []).append((t, length))
                        todo.setdefault(problem.id, []).append(trajectory_head(traj, length, decode))
                        caps.setdefault(problem.id, []).append(settings.max_tokens - length)
        asked = [p for p in problems if p.id in todo]
        if not asked:
            continue
        config = _config(settings, settings.policy_temperature, seed=settings.seed * 1000 + 900 + index)
        job = _SampleJob(todo, settings.branches, caps)
        await _run_job(policy, asked, job, config, grader)
        for problem in asked:
            trajs = trajectories[problem.id]
            seen = {t.text for t in trajs}
            for (t, length), (head_text, head_ids), completions in zip(points[problem.id], todo[problem.id],
                                                                       job.done[problem.id], strict=True):
                drawn[problem.id] = drawn.get(problem.id, 0) + len(completions)
                for completion in completions:
                    branch = _branch(policy, t, length, head_text, head_ids, completion)
                    if branch.text not in seen:
                        seen.add(branch.text)
                        trajs.append(branch)
    _grade(problems, trajectories, grader)
    return drawn


def _branch(policy: Generator, parent: int, length: int, head_text: str, head_ids: list[int] | None,
            completion: Completion) -> Trajectory:
    text = head_text + completion.text
    ids = content_ids(policy, completion)
    ids = head_ids + ids if head_ids is not None and ids is not None else None
    tokens = len(ids) if ids is not None else len(text_pieces(text))
    return Trajectory(policy.name, text, ids, tokens, completion.finish_reason, extract_answer(text),
                      branch_of=parent, branch_length=length)


def _prefixes_for(trajs: list[Trajectory], lengths: list[int], policies: Sequence[Generator],
                  settings: LabelSettings) -> list[Prefix]:
    """Root trajectories cut at every grid length; a branch only at the first grid length past its
    branch point (its sibling prefix; shorter cuts repeat its parent's) and, optionally, whole."""
    by_name = {g.name: g for g in policies}
    out: list[Prefix] = []
    for name in dict.fromkeys(t.policy for t in trajs):  # cut with each policy's own tokenizer
        decode = _decoder(by_name[name])
        for i, traj in enumerate(trajs):
            if traj.policy != name:
                continue
            grid = lengths if traj.branch_of is None else [n for n in lengths if n > traj.branch_length][:1]
            cut = cut_prefixes([traj], grid, include_complete=settings.include_complete, decode=decode)
            for pre in cut:
                pre.trajectory = i
            out.extend(cut)
    return sorted(out, key=lambda p: (p.trajectory, p.length))


async def _student_rates(s: int, student: Generator, problems: Sequence[Problem],
                         trajectories: dict[str, list[Trajectory]], prefixes: dict[str, list[Prefix]],
                         policies: Sequence[Generator], settings: LabelSettings, grader: Grader,
                         baselines: dict[str, list[float]], cost: dict[str, dict[str, Any]]) -> None:
    """Solve rates of one student for every prefix (and the empty one) of every problem."""
    shares = {g.name: _same_tokenizer(g, student) for g in policies}
    asked: list[RolloutPrefix] = []
    left: list[int] = []  # tokens each open prefix leaves its rollouts (token_cap "solution")
    for problem in problems:
        asked.append(RolloutPrefix(problem, ""))  # the empty prefix: the student's baseline
        left.append(settings.max_tokens)
        for pre in prefixes[problem.id]:
            ids = pre.token_ids if shares[trajectories[problem.id][pre.trajectory].policy] else None
            asked.append(RolloutPrefix(problem, pre.text, pre.complete, ids))
            if not pre.complete:
                left.append(settings.max_tokens - pre.length)
    seed = settings.seed if settings.rollout_seed is None else settings.rollout_seed
    config = _config(settings, settings.temperature, seed=seed * 1000 + 500 + s)

    async def sample(open_prefixes: list[RolloutPrefix]) -> list[list[Completion]]:
        """Every open prefix's rollouts through one engine run (problem by problem, as asked)."""
        todo: dict[str, list[tuple[str, list[int] | None]]] = {p.id: [] for p in problems}
        caps: dict[str, list[int]] = {p.id: [] for p in problems}
        for pre, cap in zip(open_prefixes, left, strict=True):
            todo[pre.problem.id].append((pre.text, None if pre.token_ids is None else list(pre.token_ids)))
            caps[pre.problem.id].append(cap)
        job = _SampleJob(todo, settings.rollouts, caps if settings.token_cap == "solution" else None)
        await _run_job(student, problems, job, config, grader)
        return [completions for p in problems for completions in job.done[p.id]]

    rates = iter(await solve_rates(asked, sample, grader))
    for problem in problems:
        base = next(rates)
        baselines[problem.id].append(base.rate)
        mine = [base]
        for pre in prefixes[problem.id]:
            rate = next(rates)
            pre.solve_rates.append(rate.rate)
            mine.append(rate)
        cost[problem.id]["students"].append({
            "student": student.name,
            "rollouts": sum(r.rollouts for r in mine),
            "generated_tokens": sum(r.tokens for r in mine),
        })


def _config(settings: LabelSettings, temperature: float, seed: int) -> SearchConfig:
    return SearchConfig(temperature=temperature, top_p=settings.top_p, max_tokens=settings.max_tokens, seed=seed,
                        system_prompt=settings.system_prompt, step_delimiter=settings.step_delimiter)


def _record(problem: Problem, trajs: list[Trajectory], prefixes: list[Prefix], baselines: list[float],
            students: Sequence[Generator], settings: LabelSettings, cost: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": LABELS_FORMAT,
        "version": LABELS_VERSION,
        "problem": problem.to_dict(),
        "students": [g.name for g in students],
        "baselines": baselines,
        "trajectories": [_trajectory_record(t) for t in trajs],
        "prefixes": [{"trajectory": p.trajectory, "length": p.length, "complete": p.complete, "text": p.text,
                      "solve_rates": p.solve_rates, "gains": p.gains, "utility": p.utility} for p in prefixes],
        "cost": cost,
        "standardise": settings.standardise,
    }


def _trajectory_record(traj: Trajectory) -> dict[str, Any]:
    out = {"policy": traj.policy, "text": traj.text, "num_tokens": traj.num_tokens,
           "finish_reason": traj.finish_reason, "answer": traj.answer, "correct": traj.correct}
    if traj.branch_of is not None:
        out |= {"branch_of": traj.branch_of, "branch_length": traj.branch_length}
    return out


# -- the append-only file -----------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a labels file, the last line per problem winning; a line cut short by a kill
    (or otherwise unreadable) is skipped."""
    latest: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("format") == LABELS_FORMAT:
                latest[str(record["problem"]["id"])] = record
    return list(latest.values())


def _append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
    with path.open("a", encoding="utf-8") as fh:
        if needs_newline:  # a line cut short by a kill stays on its own (unreadable) line
            fh.write("\n")
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


async def label_to_file(problems: Sequence[Problem], policies: Sequence[Generator], students: Sequence[Generator],
                        settings: LabelSettings, out: Path, *, chunk: int = 8, grader: Grader | None = None,
                        on_chunk: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Label every problem not yet in ``out``, ``chunk`` problems per engine run, appending each
    chunk's records as it finishes. Returns counts: done before, labelled now, total."""
    if chunk < 1:
        raise LabelError("--chunk must be at least 1")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise LabelError("problem ids repeat in the data set: give every problem a distinct id")
    key = settings_key(settings, policies, students)
    existing = read_records(out)
    others = {r.get("settings_key") for r in existing} - {key}
    if others:
        raise LabelError(f"{out} holds labels made with other settings or models; use a new --out file, "
                         "or the same flags as before to resume")
    done = {str(r["problem"]["id"]) for r in existing}
    todo = [p for p in problems if p.id not in done]
    for start in range(0, len(todo), chunk):
        records = await label_problems(todo[start:start + chunk], policies, students, settings, grader=grader)
        for record in records:
            record["settings_key"] = key
        _append(out, records)
        if on_chunk is not None:
            on_chunk(min(start + chunk, len(todo)), len(todo))
    return {"skipped": len(done & set(ids)), "labelled": len(todo), "total": len(problems)}
