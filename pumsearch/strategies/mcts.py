"""MCTS over reasoning steps with PUCT selection, batched through virtual loss.

One round: ``--mcts-parallel`` simulations each descend from the root by
Q + c_puct * P * sqrt(N_parent) / (1 + N_child) to a leaf, adding a virtual loss (one visit of
value 0) along their path so the next simulation of the round tends elsewhere. Then every
selected open leaf is expanded by ``--expansions`` children in ONE ``ctx.expand``, the new
children are scored in ONE ``ctx.score``, the virtual losses are released and the values backed
up. A selected leaf that is already finished is re-evaluated with its stored value (no cost).

- Value of a new prefix: the scorer's aggregated score; with ``--terminal-reward verifier`` a
  finished prefix gets its ground truth instead (correct -> the top of the value range, wrong ->
  the bottom), where the reference answer is known.
- Q = mean of all values backed up through the node. Values of ``unbounded`` scorers (the PUM's)
  are min-max normalised over every value this problem's search has seen (the running range,
  via ``ctx.normalise``); since the scaling is affine, the normalised mean is the mean of the
  normalised values. Probability scorers are used as they are.
- P (``--priors``): ``logprob`` asks the backend for each step's log-probability (every built-in
  backend returns it: transformers from its logits, SGLang and OpenAI-compatible servers when
  asked) and sets P proportional to exp(logprob / tokens), the step's per-token probability (so
  long steps are not penalised for their length), normalised over the siblings; ``uniform`` (or a
  backend that returns none, such as the scripted test backend) gives every sibling 1/k.
- Node statistics (tree attributes): ``visits`` = own evaluations + the children's visits,
  ``value_sum`` likewise, ``mcts_value`` = the node's own value, ``evaluations``,
  ``virtual_loss`` (0 once a round ends).
- Budget: N x --mcts-steps-per-solution step expansions (one per generated step). A round never
  selects more open leaves than the budget left can expand.
- Answer: with no --select, the most-visited path (children by visits, then Q) when it ends at a
  finished prefix, else the best-scored finished prefix; --select best|majority|weighted picks
  over every finished prefix.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pumsearch.search.budget import BudgetExhausted
from pumsearch.search.context import SearchContext
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult
from pumsearch.search.tree import ROOT, SearchTree
from pumsearch.strategies.base import Strategy, StrategyError, StrategySettings

MAX_IDLE_ROUNDS = 64  # rounds in a row that only revisit finished leaves before the search gives up


@dataclass(frozen=True)
class MCTSSettings(StrategySettings):
    c_puct: float = field(default=1.0, metadata={"help": "PUCT exploration constant."})
    expansions: int = field(default=2, metadata={"help": "Children per expanded leaf."})
    mcts_steps_per_solution: int = field(default=8, metadata={"help": "S: step expansions per unit of budget."})
    terminal_reward: Literal["scorer", "verifier"] = field(default="scorer", metadata={
        "help": "Value of a finished prefix: scorer or verifier (ground truth; needs the reference answer)."})
    mcts_parallel: int = field(default=4, metadata={"help": "Simulations selected per batched round."})
    priors: Literal["logprob", "uniform"] = field(default="logprob", metadata={
        "help": "PUCT priors: logprob (each step's per-token probability under the policy) or uniform."})


def step_priors(tree: SearchTree, children: list[int], how: str) -> list[float]:
    """PUCT priors of sibling steps: proportional to exp(logprob / tokens), each step's per-token
    probability under the policy (``logprob``), else (``uniform``, or a step without a recorded
    log-probability) 1/k each."""
    attrs = [tree[c] for c in children]
    if how == "uniform" or any(a["logprob"] is None for a in attrs):
        return [1.0 / len(children)] * len(children)
    per_token = [a["logprob"] / max(a["num_tokens"], 1) for a in attrs]
    top = max(per_token)
    weights = [math.exp(v - top) for v in per_token]
    return [w / sum(weights) for w in weights]


def virtual_loss(attrs: dict[str, Any]) -> int:
    return int(attrs.get("virtual_loss", 0))


class MCTS(Strategy):
    name: ClassVar[str] = "mcts"
    requires_scorer: ClassVar[bool] = True
    budget_unit: ClassVar[str] = "step expansions"
    Settings: ClassVar[type[StrategySettings]] = MCTSSettings
    settings: MCTSSettings
    # every node's statistics (the rest: mcts_value, evaluations and virtual_loss, set as the search goes)
    node_defaults: ClassVar[Mapping[str, Any]] = types.MappingProxyType({"visits": 0, "value_sum": 0.0})

    def validate(self, has_scorer: bool) -> None:
        super().validate(has_scorer)
        s = self.settings
        counts = {"--expansions": s.expansions, "--mcts-parallel": s.mcts_parallel,
                  "--mcts-steps-per-solution": s.mcts_steps_per_solution, "--max-depth": self.config.max_depth}
        for flag, value in counts.items():
            if value < 1:
                raise StrategyError(f"{flag} must be at least 1 (got {value})")
        if s.c_puct < 0:
            raise StrategyError(f"--c-puct must be 0 or more (got {s.c_puct})")
        if s.terminal_reward not in ("scorer", "verifier"):
            raise StrategyError(f"unknown --terminal-reward {s.terminal_reward!r}: use scorer or verifier")
        if s.priors not in ("logprob", "uniform"):
            raise StrategyError(f"unknown --priors {s.priors!r}: use logprob or uniform")

    def wants_logprobs(self) -> bool:
        return self.settings.priors == "logprob"

    def needs_reference(self) -> str | None:
        return "--terminal-reward verifier" if self.settings.terminal_reward == "verifier" else None

    def budget_limit(self) -> int:
        return self.config.budget * self.settings.mcts_steps_per_solution

    async def search(self, problem: Problem, ctx: SearchContext) -> SearchResult:
        run = _MctsRun(ctx, self.settings, self.config.select)
        reason = None
        try:
            await run.loop()
        except BudgetExhausted as err:  # the time limit: return the best so far
            reason = str(err)
            run.release_virtual_loss()
        result = await run.finish()
        result.cut_reason = reason
        return result


class _MctsRun:
    """One problem's search (the Strategy object is shared by all problems of a run)."""

    def __init__(self, ctx: SearchContext, settings: MCTSSettings, select: str | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.select = select
        self.tree = ctx.tree
        self.low = math.inf  # running range of raw values, for unbounded scorers
        self.high = -math.inf
        self.selected_paths: list[list[int]] = []
        self.tree[ROOT]["virtual_loss"] = 0

    # -- values ---------------------------------------------------------------------------------
    def normalised(self, raw: float) -> float:
        if self.ctx.scorer_value_kind == "probability":
            return raw
        return self.ctx.normalise([self.low, self.high, raw])[2]

    def value_range(self) -> tuple[float, float]:
        if self.ctx.scorer_value_kind == "probability" or self.low > self.high:
            return 0.0, 1.0
        return self.low, self.high

    def q(self, node: int) -> float:
        """Normalised mean value, counting virtual visits as value 0."""
        attrs = self.tree[node]
        if not attrs["visits"]:
            return 0.0
        mean = self.normalised(attrs["value_sum"] / attrs["visits"])
        return mean * attrs["visits"] / (attrs["visits"] + virtual_loss(attrs))

    def priors(self, children: list[int]) -> list[float]:
        return step_priors(self.tree, children, self.settings.priors)

    # -- selection ------------------------------------------------------------------------------
    def select_path(self) -> list[int]:
        path = [ROOT]
        node = ROOT
        while True:
            children = self.tree.children(node)
            if not children or self.tree[node]["terminal"]:
                return path
            n_parent = self.tree[node]["visits"] + virtual_loss(self.tree[node])
            priors = self.priors(children)

            def puct(i: int, children: list[int] = children, n_parent: int = n_parent,
                     priors: list[float] = priors) -> float:
                child = self.tree[children[i]]
                n_child = child["visits"] + virtual_loss(child)
                explore = self.settings.c_puct * priors[i] * math.sqrt(n_parent) / (1 + n_child)
                return self.q(children[i]) + explore

            node = children[max(range(len(children)), key=lambda i: (puct(i), -i))]
            path.append(node)

    def add_virtual_loss(self, path: list[int], amount: int) -> None:
        for node in path:
            self.tree[node]["virtual_loss"] = virtual_loss(self.tree[node]) + amount

    def release_virtual_loss(self) -> None:
        for path in self.selected_paths:
            self.add_virtual_loss(path, -1)
        self.selected_paths = []

    def select_round(self) -> tuple[list[list[int]], list[list[int]]]:
        """Up to --mcts-parallel simulations: paths to open leaves to expand, and to finished
        leaves to re-evaluate. Open leaves are capped by what the budget can still pay for."""
        affordable = self.ctx.budget.remaining // self.settings.expansions
        to_expand: list[list[int]] = []
        to_revisit: list[list[int]] = []
        for _ in range(self.settings.mcts_parallel):
            path = self.select_path()
            leaf = path[-1]
            if leaf == ROOT or not self.tree[leaf]["terminal"]:
                if len(to_expand) >= affordable or any(p[-1] == leaf for p in to_expand):
                    break  # nothing new to pay for: the round is full
                to_expand.append(path)
            else:
                to_revisit.append(path)
            self.selected_paths.append(path)
            self.add_virtual_loss(path, 1)
        return to_expand, to_revisit

    # -- the loop -------------------------------------------------------------------------------
    async def loop(self) -> None:
        idle = 0
        while idle < MAX_IDLE_ROUNDS:
            if self.ctx.budget.remaining < self.settings.expansions or not self.has_open_leaf():
                return
            to_expand, to_revisit = self.select_round()
            leaves = [p[-1] for p in to_expand]
            children = await self.ctx.expand(leaves, self.settings.expansions) if leaves else []
            new = [c for kids in children for c in kids]
            if new:
                await self.ctx.score(new)
            values = {c: await self.value_of(c) for c in new}
            self.release_virtual_loss()
            for c in new:
                self.backup(c, values[c])
            for path, kids in zip(to_expand, children, strict=True):
                if not kids:  # the leaf had no room left: the context marked it finished
                    to_revisit.append(path)
            for path in to_revisit:
                self.backup(path[-1], self.tree[path[-1]].get("mcts_value", self.value_range()[0]))
            idle = 0 if new else idle + 1

    def has_open_leaf(self) -> bool:
        return any(not attrs["terminal"] and not self.tree.children(n) for n, attrs in self.tree.iter_nodes())

    async def value_of(self, node: int) -> float:
        raw = self.ctx.node_score(node)
        raw = 0.0 if raw is None else raw
        if self.ctx.scorer_value_kind != "probability":
            self.low, self.high = min(self.low, raw), max(self.high, raw)
        if self.settings.terminal_reward == "verifier" and self.tree[node]["terminal"]:
            verdict = await self.ctx.grade(node)
            if verdict is not None:
                low, high = self.value_range()
                raw = high if verdict else low
        self.tree[node]["mcts_value"] = raw
        self.tree[node]["virtual_loss"] = 0
        return raw

    def backup(self, node: int, value: float) -> None:
        """The node's own evaluation, added to it and every ancestor (so Q is a mean)."""
        self.tree[node]["evaluations"] = self.tree[node].get("evaluations", 0) + 1
        current: int | None = node
        while current is not None:
            self.tree[current]["visits"] += 1
            self.tree[current]["value_sum"] += value
            current = self.tree.parent(current)

    # -- the answer -----------------------------------------------------------------------------
    def most_visited_leaf(self) -> int:
        node = ROOT
        while self.tree.children(node):
            node = max(self.tree.children(node), key=lambda c: (self.tree[c]["visits"], self.q(c), -c))
        return node

    async def finish(self) -> SearchResult:
        candidates = self.ctx.candidates()
        if self.select is not None:
            return await self.ctx.finish(candidates, self.select)
        leaf = self.most_visited_leaf()
        chosen = leaf if leaf != ROOT and self.tree[leaf]["terminal"] else None
        return await self.ctx.finish(candidates, "best", chosen_node=chosen)
