"""Fixtures for the viewer and analysis tests: trees from a real Best-of-N search (scripted policy),
hand-built trees, a run directory written the way a run writes it, and a headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pumsearch.api import asearch
from pumsearch.backends.scripted import ScriptedGenerator
from pumsearch.scorers import load_scorer
from pumsearch.search.config import SearchConfig
from pumsearch.search.problem import Problem
from pumsearch.search.result import SearchResult, make_failed_record, make_record, tree_file_name
from pumsearch.search.tree import ROOT, SearchTree

PLANTED = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
HOSTILE_QUESTION = "What is 2 + 3? </script><script>window.__pwned = 3</script>"


def hostile_policy(question: str, done: tuple[str, ...], rng: np.random.Generator) -> str:
    """Three steps; the second plants markup that must show as text; answers 5 (right) or 7."""
    answer = ("5", "7", "7")[int(rng.integers(0, 3))]
    steps = [f"Step 1: start from {int(rng.integers(0, 10))}.", f"Step 2: {PLANTED}",
             f"The answer is \\boxed{{{answer}}}."]
    return "\n\n".join(steps[len(done):])


def bon_search(problems: list[Problem], budget: int = 6, seed: int = 1) -> list[SearchResult]:
    """A real Best-of-N search through the engine, scored by the verifier."""
    config = SearchConfig(strategy="bon", budget=budget, seed=seed)
    outcomes = asyncio.run(asearch(problems, generator=ScriptedGenerator(hostile_policy),
                                   scorer=load_scorer("verifier"), config=config))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


def save_bon_tree(directory: Path, budget: int = 6) -> tuple[Path, SearchResult]:
    (result,) = bon_search([Problem("hostile/1", HOSTILE_QUESTION, "5")], budget=budget)
    path = result.tree.save(directory / "bon.tree.json", result.summary())
    return path, result


def write_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    """A run directory as a run writes it: trees/ and records.jsonl (make_record lines), two
    budgets, one failed problem, and a half-written last line."""
    problems = [Problem(f"toy/{i}", f"Question {i}: what is 2 + 3?", "5") for i in range(3)]
    records = []
    for budget in (2, 4):
        for result in bon_search(problems, budget=budget, seed=budget):
            tree_file = Path("trees") / f"b{budget}-{tree_file_name(result.problem.id)}"
            result.tree.save(run_dir / tree_file, result.summary())
            records.append(make_record(result, tree_file=str(tree_file), scorer="verifier", budget=budget,
                                       seed=budget, started_at=time.time()))
    broken = Problem("toy/broken", "Question broken?", "1")
    records.append(make_failed_record(broken, "backend gave up", strategy="bon", scorer="verifier", budget=4,
                                      seed=4, started_at=time.time()))
    lines = [json.dumps(r) for r in records]
    (run_dir / "records.jsonl").write_text("\n".join(lines) + '\n{"problem_id": "toy/half', encoding="utf-8")
    return records


def ranking_tree() -> tuple[SearchTree, dict[str, Any]]:
    """The small fixed tree whose metrics the tests compute by hand (see test_viz_analysis.py).

        root
        ├─ 1 ── 2  correct  prm 0.9 [0.5, 0.9]  orm 0.2
        │    └─ 3  wrong    prm 0.7 [0.1, 0.7]  orm 0.8
        ├─ 4       correct  prm 0.4 [0.4]       orm 0.6
        ├─ 5 ── 6  wrong    prm 0.7 [0.3, 0.7]  orm 0.1
        └─ 7 ── 8  (abandoned: never finished)
    """
    tree = SearchTree(Problem("fixed/1", "Fixed question?", "42"))
    tokens = {1: 3, 2: 5, 3: 6, 4: 7, 5: 2, 6: 4, 7: 9, 8: 4}

    def add(parent: int, name: str, node_id: int, **attrs: Any) -> int:
        node = tree.add_child(parent, name, num_tokens=tokens[node_id], finish_reason="step", **attrs)
        assert node == node_id
        return node

    def solution(parent: int, node_id: int, correct: bool, prm: list[float], orm: float) -> None:
        add(parent, f"answer of {node_id}", node_id, terminal=True, answer="42" if correct else "41",
            correct=correct, scores={"prm": prm[-1], "orm": orm}, step_scores={"prm": prm})

    add(ROOT, "a", 1)
    solution(1, 2, True, [0.5, 0.9], 0.2)
    solution(1, 3, False, [0.1, 0.7], 0.8)
    solution(ROOT, 4, True, [0.4], 0.6)
    add(ROOT, "e", 5)
    solution(5, 6, False, [0.3, 0.7], 0.1)
    add(ROOT, "g", 7)
    add(7, "h", 8)
    result = {"strategy": "hand", "answer": "42", "chosen_node": 2, "chosen_path": [1, 2], "correct": True,
              "cut_short": False, "counters": {"generated_tokens": 40},
              "candidates": [{"node": n, "answer": tree[n]["answer"], "score": None,
                              "correct": tree[n]["correct"]} for n in (2, 3, 4, 6)]}
    return tree, result


def big_tree(branching: int = 4, depth: int = 6, seed: int = 0) -> tuple[SearchTree, dict[str, Any]]:
    """A full tree (branching**1 + ... + branching**depth nodes; 5460 for 4 and 6) with scores from
    two scorers on every node, like a beam search with a step PRM would record."""
    rng = np.random.default_rng(seed)
    tree = SearchTree(Problem("big/1", "A problem searched widely.", "3"))
    frontier = [ROOT]
    for level in range(1, depth + 1):
        nxt = []
        for parent in frontier:
            for k in range(branching):
                last = level == depth
                node = tree.add_child(parent, f"Step {level}.{k}: try value {int(rng.integers(0, 100))}.",
                                      num_tokens=int(rng.integers(5, 40)),
                                      finish_reason="eos" if last else "step",
                                      scores={"prm": float(rng.random()), "pum": float(rng.normal(0, 2))},
                                      visits=int(rng.integers(0, 5)), value_sum=float(rng.random()))
                if last:
                    ok = bool(rng.random() < 0.3)
                    tree[node].update(terminal=True, answer="3" if ok else "4", correct=ok)
                nxt.append(node)
        frontier = nxt
    best = max(tree.terminals(), key=lambda n: tree[n]["scores"]["prm"])
    result = {"strategy": "beam", "answer": tree[best]["answer"], "chosen_node": best,
              "chosen_path": tree.path(best), "correct": tree[best]["correct"], "cut_short": False,
              "candidates": [],
              "counters": {"generated_tokens": sum(tree[n]["num_tokens"] for n in tree.graph)}}
    return tree, result


# -- the browser ------------------------------------------------------------------------------------
SETUP_HINT = "run `scripts/setup.sh dev` (apt-get install chromium chromium-driver; pip install selenium)"


def browser_or_skip() -> Iterator[Any]:
    """Headless Chromium through chromedriver. Skips with the reason when the browser is missing,
    unless PUMSEARCH_REQUIRE_BROWSER=1 (CI after setup), where a missing browser fails."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    reason = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        reason = f"selenium is not installed: {SETUP_HINT}"
    if reason is None and (chromium is None or driver_path is None):
        reason = f"no chromium or chromedriver on PATH: {SETUP_HINT}"
    if reason is not None:
        if os.environ.get("PUMSEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,860", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):  # no network
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
