"""Synthetic multi-step arithmetic chains: the testbed's task generator.

A chain is a start value and a list of operations, asked in words::

    start 7, add 5, times 3, subtract 4.

Its gold solution uses the project's step format, one ``a op b = c`` step per blank-line-separated
step and a final ``\\boxed{}`` answer::

    7 + 5 = 12

    12 * 3 = 36

    36 - 4 = 32

    \\boxed{32}

A "detour" is a step that is arithmetically correct and consistent with the chain so far but does
not advance it (``12 * 1 = 12``, ``12 + 0 = 12``): correct yet useless, the distinction between
step correctness and prefix utility. Gold solutions may carry detours (``detours=0.1``).

Splits never overlap: a chain belongs to ``test`` when a hash of its question falls in one fifth of
the hash space, otherwise to ``train``; sampling for a split rejects chains of the other. Fixed
seeds give fixed data sets.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from pumsearch.search.problem import Problem

WORD_TO_SYMBOL = {"add": "+", "subtract": "-", "times": "*"}
SYMBOL_TO_WORD = {v: k for k, v in WORD_TO_SYMBOL.items()}
IDENTITY_OPERAND = {"+": 0, "-": 0, "*": 1}  # the operand that makes a step a detour
TEST_BUCKETS = 5  # one hash bucket in five is the test split

NAMED_CONFIGS = {
    # the search-quality regression set: 3-4 operations, the shipped policies' target
    "standard": "ops=3-4,n=200,split=test,seed=0",
    "small": "ops=3-4,n=40,split=test,seed=0",
    "easy": "ops=2,n=200,split=test,seed=0",
    "hard": "ops=5-6,n=200,split=test,seed=0",
    # where usefulness and correctness part: solved under SOLUTION_TOKEN_CAPS["parting"] (below), a
    # detour costs the answer though the exact PRM scores it correct (docs/testbed.md)
    "parting": "ops=4,n=200,split=test,seed=1",
}

# The whole-solution token cap (``--max-tokens``) a named config is meant to be solved under, where
# it is part of the world. In the shipped policies' tokenizer (every number one token) a step
# ``a op b = c`` and its delimiter take 6 tokens, ``\boxed{v}`` 3 and the end token 1, so the gold
# solution of 4 operations fits 28 tokens with its end token, and one detour more (6) does not.
SOLUTION_TOKEN_CAPS = {"parting": 28}


def apply(value: int, symbol: str, operand: int) -> int:
    if symbol == "+":
        return value + operand
    if symbol == "-":
        return value - operand
    if symbol == "*":
        return value * operand
    raise ValueError(f"unknown operation {symbol!r}: use +, - or *")


@dataclass(frozen=True)
class Chain:
    """A start value and operations as (symbol, operand) pairs."""

    start: int
    ops: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        """The running value after each operation (the start value first)."""
        out = [self.start]
        for symbol, operand in self.ops:
            out.append(apply(out[-1], symbol, operand))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def question(self) -> str:
        parts = [f"start {self.start}"] + [f"{SYMBOL_TO_WORD[s]} {k}" for s, k in self.ops]
        return ", ".join(parts) + "."

    def gold_steps(self, rng: random.Random | None = None, detours: float = 0.0) -> list[str]:
        """The gold solution's steps; with ``detours`` > 0, identity steps are inserted before an
        operation with that probability (drawn from ``rng``)."""
        steps: list[str] = []
        values = self.values()
        for i, (symbol, operand) in enumerate(self.ops):
            if rng is not None and detours > 0 and rng.random() < detours:
                steps.append(detour_step(values[i], rng.choice(sorted(IDENTITY_OPERAND))))
            steps.append(f"{values[i]} {symbol} {operand} = {values[i + 1]}")
        steps.append(f"\\boxed{{{self.answer}}}")
        return steps

    def solution(
        self, rng: random.Random | None = None, detours: float = 0.0, delimiter: str = "\n\n"
    ) -> str:
        return delimiter.join(self.gold_steps(rng, detours))


def detour_step(value: int, symbol: str) -> str:
    """A correct step that leaves ``value`` unchanged."""
    return f"{value} {symbol} {IDENTITY_OPERAND[symbol]} = {value}"


def split_of(question: str) -> str:
    digest = hashlib.sha256(question.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else "train"


@dataclass(frozen=True)
class TaskSpec:
    """How chains are drawn. ``min_ops``..``max_ops`` operations, operands in 1..``max_operand``
    (multipliers in 2..``max_multiplier``), every running value kept within 0..``max_value``."""

    min_ops: int = 3
    max_ops: int = 4
    n: int = 200
    split: str = "test"
    seed: int = 0
    max_operand: int = 9
    max_multiplier: int = 5
    max_value: int = 50
    mix: tuple[str, ...] = ("+", "-", "*")
    detours: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(
                f"ops must be a positive count or range like 3-4 (got {self.min_ops}-{self.max_ops})"
            )
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be train or test (got {self.split!r})")
        if self.n < 1:
            raise ValueError(f"n must be at least 1 (got {self.n})")
        if not self.mix or any(s not in IDENTITY_OPERAND for s in self.mix):
            raise ValueError(f"mix must name operations among add, subtract, times (got {self.mix})")
        if self.max_value < 10 or self.max_operand < 1 or self.max_multiplier < 2:
            raise ValueError("max_value must be >= 10, max_operand >= 1 and max_multiplier >= 2")
        if not 0 <= self.detours <= 1:
            raise ValueError(f"detours is a probability in [0, 1] (got {self.detours})")


def parse_spec(spec: str) -> TaskSpec:
    """``ops=3-4,n=200,split=test,seed=0`` (any TaskSpec field; ``mix=add+times``), or a named
    config (``standard``, ``small``, ``easy``, ``hard``, ``parting``) optionally followed by
    overrides (``standard,n=50``)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts and "=" not in parts[0]:
        name = parts.pop(0)
        if name not in NAMED_CONFIGS:
            raise ValueError(
                f"unknown testbed config {name!r}: use one of {', '.join(NAMED_CONFIGS)} "
                "or key=value pairs like ops=3,n=200,split=test,seed=0"
            )
        parts = NAMED_CONFIGS[name].split(",") + parts
    fields: dict[str, object] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bad testbed spec part {part!r}: write key=value")
        fields.update(_spec_field(key.strip(), value.strip()))
    return TaskSpec(**fields)  # type: ignore[arg-type]


def _spec_field(key: str, value: str) -> dict[str, object]:
    try:
        if key == "ops":
            low, _, high = value.partition("-")
            return {"min_ops": int(low), "max_ops": int(high or low)}
        if key == "split":
            return {"split": value}
        if key == "mix":
            words = [w for w in value.replace("+", " ").replace("|", " ").split() if w]
            unknown = [w for w in words if w not in WORD_TO_SYMBOL]
            if unknown:
                raise ValueError(f"unknown operation {unknown[0]!r} in mix: use add, subtract, times")
            return {"mix": tuple(WORD_TO_SYMBOL[w] for w in words)}
        if key == "detours":
            return {"detours": float(value)}
        if key in ("n", "seed", "max_operand", "max_multiplier", "max_value"):
            return {key: int(value)}
    except ValueError as err:
        if "mix" in str(err):
            raise
        raise ValueError(f"bad value {value!r} for testbed spec key {key!r}") from None
    raise ValueError(
        f"unknown testbed spec key {key!r}: use ops, n, split, seed, max_operand, "
        "max_multiplier, max_value, mix, detours"
    )


def _choices(value: int, spec: TaskSpec) -> list[tuple[str, int]]:
    """Operations that keep the running value within 0..max_value."""
    options = []
    for symbol in spec.mix:
        operands = range(2, spec.max_multiplier + 1) if symbol == "*" else range(1, spec.max_operand + 1)
        options += [(symbol, k) for k in operands if 0 <= apply(value, symbol, k) <= spec.max_value]
    return options


def random_chain(rng: random.Random, spec: TaskSpec) -> Chain:
    count = rng.randint(spec.min_ops, spec.max_ops)
    while True:
        start = rng.randint(1, spec.max_operand)
        value, ops = start, []
        for _ in range(count):
            options = _choices(value, spec)
            if not options:
                break
            symbol = rng.choice(sorted({s for s, _ in options}))  # operations equally likely
            operand = rng.choice([k for s, k in options if s == symbol])
            ops.append((symbol, operand))
            value = apply(value, symbol, operand)
        if len(ops) == count:
            return Chain(start, tuple(ops))


def iter_chains(spec: TaskSpec, *, unique: bool = True) -> Iterator[Chain]:
    """Chains of ``spec.split`` forever (or until the distinct ones run out), seeded by ``spec``."""
    rng = random.Random(f"pumsearch-testbed:{spec.seed}:{spec.split}")
    seen: set[str] = set()
    misses = 0
    while misses < 20_000:
        chain = random_chain(rng, spec)
        question = chain.question()
        if split_of(question) != spec.split or (unique and question in seen):
            misses += 1
            continue
        misses = 0
        seen.add(question)
        yield chain


def generate(spec: TaskSpec) -> list[Chain]:
    chains = []
    for chain in iter_chains(spec):
        chains.append(chain)
        if len(chains) == spec.n:
            return chains
    raise ValueError(
        f"only {len(chains)} distinct {spec.split} chains exist for this spec; ask for fewer (n)"
    )


def to_problem(chain: Chain, spec: TaskSpec, index: int, rng: random.Random | None = None) -> Problem:
    return Problem(
        id=f"testbed-{spec.split}-s{spec.seed}-{index}",
        question=chain.question(),
        answer=str(chain.answer),
        metadata={
            "source": "testbed",
            "start": chain.start,
            "ops": [list(op) for op in chain.ops],
            "gold_solution": chain.solution(rng, spec.detours),
        },
    )


def testbed_problems(spec: str | TaskSpec) -> list[Problem]:
    """The data set a spec names, as Problems with reference answers and gold solutions."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    rng = random.Random(f"pumsearch-testbed-detours:{spec.seed}")
    return [to_problem(chain, spec, i, rng) for i, chain in enumerate(generate(spec))]


testbed_problems.__test__ = False  # type: ignore[attr-defined]  # a loader, not a test, whatever pytest thinks


def parse_question(question: str) -> Chain | None:
    """The chain a testbed question asks about, or None when the text is not one."""
    parts = [p.strip() for p in question.strip().rstrip(".?").split(",")]
    words = parts[0].split() if parts else []
    if len(words) != 2 or words[0].lower() != "start" or not _is_int(words[1]):
        return None
    ops = []
    for part in parts[1:]:
        words = part.split()
        if len(words) != 2 or words[0].lower() not in WORD_TO_SYMBOL or not _is_int(words[1]):
            return None
        ops.append((WORD_TO_SYMBOL[words[0].lower()], int(words[1])))
    return Chain(int(parts[0].split()[1]), tuple(ops)) if ops else None


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


__all__ = [
    "NAMED_CONFIGS",
    "SOLUTION_TOKEN_CAPS",
    "Chain",
    "TaskSpec",
    "generate",
    "iter_chains",
    "parse_question",
    "parse_spec",
    "random_chain",
    "split_of",
    "testbed_problems",
]
