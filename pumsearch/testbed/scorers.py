"""Exact scorers for the testbed: the step-correctness PRM (the ideal "local correctness" scorer).

Every step is judged against the chain the question asks about (parsed from the question text, so
no reference answer is needed):

- ``progress``: ``a op b = c`` with ``a`` the current value, ``op b`` the next pending operation
  and ``c`` right. The chain advances.
- ``detour``: ``a op b = a`` with ``a`` the current value and ``op b`` an identity (``+ 0``,
  ``- 0``, ``* 1``). Correct but useless: it scores as correct, exactly as a step-correctness PRM
  would, though it does not advance the chain.
- ``answer``: ``\\boxed{v}`` once every operation is applied, with ``v`` the current value.
- ``wrong``: anything else (wrong arithmetic, a wrong operand, an operation the question does not
  ask for next, a premature or wrong answer, text that is no step, a step after the answer).

Step values are 1.0 while every step so far is right and 0.0 from the first wrong step on (a step
that continues a wrong chain is not "correct" either), so ``last``, ``min`` and ``prod`` agree. A
finished solution (``complete``) without a right answer step scores 0.0.

``detours="wrong"`` (``--scorer-option detours=wrong``) makes it an exact *progress* scorer: a
detour counts as a wrong step. It is a yardstick for what seeing usefulness is worth (in the
``parting`` world a detour costs the answer), not a step-correctness PRM.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pumsearch.scorers.base import ScorerError
from pumsearch.search.protocols import Score, ScoreItem
from pumsearch.testbed.tasks import IDENTITY_OPERAND, Chain, apply, parse_question

_EQUATION = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")
_ANSWER_LINE = re.compile(r"^\s*(?:the answer is:?\s*)?\\boxed\{\s*(-?\d+)\s*\}\s*\.?\s*$", re.IGNORECASE)


@dataclass
class ChainState:
    value: int
    next_op: int = 0
    answered: bool = False
    broken: bool = False


def judge_step(step: str, chain: Chain, state: ChainState) -> str:
    """The label of one step (``progress``, ``detour``, ``answer`` or ``wrong``); updates ``state``."""
    lines = [line for line in step.strip().splitlines() if line.strip()]
    if state.broken or state.answered or not lines:
        return "wrong"
    labels = [_judge_line(line, chain, state) for line in lines]
    if "wrong" in labels:
        return "wrong"
    if "answer" in labels:
        return "answer"
    return "progress" if "progress" in labels else "detour"


def _judge_line(line: str, chain: Chain, state: ChainState) -> str:
    if state.answered:
        return "wrong"
    answer = _ANSWER_LINE.match(line)
    if answer is not None:
        if state.next_op == len(chain.ops) and int(answer.group(1)) == state.value:
            state.answered = True
            return "answer"
        return "wrong"
    match = _EQUATION.match(line)
    if match is None:
        return "wrong"
    left, symbol, operand, result = (
        int(match.group(1)),
        match.group(2),
        int(match.group(3)),
        int(match.group(4)),
    )
    if left != state.value or apply(left, symbol, operand) != result:
        return "wrong"
    if state.next_op < len(chain.ops) and (symbol, operand) == chain.ops[state.next_op]:
        state.next_op += 1
        state.value = result
        return "progress"
    return "detour" if IDENTITY_OPERAND[symbol] == operand else "wrong"


def judge_steps(steps: Sequence[str], chain: Chain) -> tuple[list[str], ChainState]:
    state = ChainState(chain.start)
    labels = []
    for step in steps:
        label = judge_step(step, chain, state)
        state.broken = state.broken or label == "wrong"
        labels.append(label)
    return labels, state


class TestbedPRM:
    """The exact step-correctness PRM over testbed chains (a ModelScorer; no model runs)."""

    __test__ = False  # not a pytest class, whatever its name
    value_kind = "probability"
    needs_reference = False
    DETOURS = ("correct", "wrong")

    def __init__(self, detours: str = "correct") -> None:
        if detours not in self.DETOURS:
            raise ScorerError(f"testbed-prm detours must be correct or wrong (got {detours!r})")
        self.detours = detours
        self.identity = "testbed-prm" if detours == "correct" else f"testbed-prm:detours={detours}"

    def count_tokens(self, item: ScoreItem) -> int:
        return 1

    def score_batch(self, items: Sequence[ScoreItem]) -> list[Score]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> Score:
        chain = parse_question(item.problem.question)
        if chain is None:
            raise ScorerError(
                f"problem {item.problem.id!r} is not a testbed chain ('start 7, add 5, ...'): "
                "the testbed-prm scorer only judges testbed questions"
            )
        labels, state = judge_steps(item.steps, chain)
        failing = {"wrong", "detour"} if self.detours == "wrong" else {"wrong"}
        step_values = [0.0 if state_broken else 1.0 for state_broken in _broken_prefix(labels, failing)]
        value = step_values[-1] if step_values else 1.0
        if item.complete and not state.answered:
            value = 0.0
        extra = {"labels": labels, "progress": state.next_op, "operations": len(chain.ops)}
        return Score(value, step_values, extra)

    def close(self) -> None:
        pass


def _broken_prefix(labels: list[str], failing: set[str]) -> list[bool]:
    broken, out = False, []
    for label in labels:
        broken = broken or label in failing
        out.append(broken)
    return out
