"""The viewer and the run index in headless Chromium (selenium + Debian's chromedriver, no network).

Skipped, with the reason, where the browser is not installed (scripts/setup.sh dev installs it);
PUMSEARCH_REQUIRE_BROWSER=1 turns the skip into a failure. With PUMSEARCH_DOC_SCREENSHOTS=1 the
screenshots are also copied to docs/images/ (how the ones in docs/viewer.md were made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pumsearch.cli import app
from tests.helpers_viz import (
    HOSTILE_QUESTION,
    PLANTED,
    big_tree,
    browser_or_skip,
    open_page,
    ranking_tree,
    save_bon_tree,
    write_run_dir,
)

DOC_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
runner = CliRunner()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_or_skip()


def screenshot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # a real, non-blank picture
    if os.environ.get("PUMSEARCH_DOC_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_IMAGES / name)
    return path


def js(browser: Any, script: str) -> Any:
    return browser.execute_script(script)


def shown_nodes(browser: Any) -> set[int]:
    return set(js(browser, "return Array.from(document.querySelectorAll('#nodes g.node'))"
                          ".map(g => Number(g.dataset.node))"))


def click(browser: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, selector).click()


def text_of(browser: Any, selector: str) -> str:
    return js(browser, f"return document.querySelector({selector!r}).textContent")


def write_page(tmp_path: Path, *trees: Path, name: str = "view.html") -> Path:
    out = tmp_path / name
    done = runner.invoke(app, ["tree", "html", *map(str, trees), "-o", str(out)])
    assert done.exit_code == 0, done.output
    return out


def test_click_collapse_and_planted_markup_in_a_real_search_tree(browser: Any, tmp_path: Path) -> None:
    tree_file, result = save_bon_tree(tmp_path, budget=6)
    open_page(browser, write_page(tmp_path, tree_file))
    tree = result.tree

    # the planted <script> and onerror never ran, and nothing was fetched from anywhere
    assert js(browser, "return window.__pwned === undefined")
    assert js(browser, "return document.querySelectorAll('img').length") == 0
    assert js(browser, "return document.scripts.length") == 2
    assert js(browser, "return performance.getEntriesByType('resource').length") == 0
    assert text_of(browser, "#panel .question") == HOSTILE_QUESTION  # shown as text, not markup

    # a Best-of-N tree this small opens fully; the chosen solution is selected
    assert shown_nodes(browser) == set(tree.graph.nodes)
    assert text_of(browser, "#panel h2:nth-of-type(2)") == f"Node {result.chosen_node}"

    # click the planted step of another solution: the panel shows its whole prefix, as text
    first_chain = tree.children(0)[0]
    planted_node = tree.children(first_chain)[0]
    click(browser, f'g.node[data-node="{planted_node}"] .mark')
    assert text_of(browser, "#panel h2:nth-of-type(2)") == f"Node {planted_node}"
    steps = js(browser, "return Array.from(document.querySelectorAll('#prefix li pre'))"
                        ".map(p => p.textContent)")
    assert steps == list(tree.steps(planted_node))
    assert text_of(browser, "#prefix li.current pre") == f"Step 2: {PLANTED}"
    assert text_of(browser, f'g.node[data-node="{planted_node}"] text.label').startswith("Step 2: <script>")
    assert js(browser, "return window.__pwned === undefined")

    # collapse the first solution below its first step, then open it again
    below = {planted_node, *tree.children(planted_node)}
    click(browser, f'g.toggle[data-node="{first_chain}"]')
    assert not below & shown_nodes(browser)
    assert text_of(browser, f'g.node[data-node="{first_chain}"] .hidden-count').strip() == f"+{len(below)}"
    screenshot(browser, tmp_path, "viewer-collapsed.png")
    click(browser, f'g.toggle[data-node="{first_chain}"]')
    assert below <= shown_nodes(browser)

    click(browser, f'g.node[data-node="{result.chosen_node}"] .mark')
    screenshot(browser, tmp_path, "viewer-bon.png")


@pytest.mark.slow
def test_thousands_of_nodes_open_collapsed_and_expand_on_demand(browser: Any, tmp_path: Path) -> None:
    tree, result = big_tree(branching=4, depth=6)  # 5460 steps
    path = tree.save(tmp_path / "big.tree.json", result)
    open_page(browser, write_page(tmp_path, path))
    total = len(tree)
    shown = shown_nodes(browser)
    assert 0 < len(shown) <= 400 + 6  # the opening budget, plus the chosen path's own children
    assert set(result["chosen_path"]) <= shown
    assert text_of(browser, "#status") == f"{len(shown)} of {total} nodes shown"
    screenshot(browser, tmp_path, "viewer-large.png")

    # colour by the other scorer: its range is not [0, 1], so the legend shows its own min and max
    pum = [tree[n]["scores"]["pum"] for n in tree.graph if n]
    js(browser, "const s = document.getElementById('scorer-select'); s.value = 'pum';"
                "s.dispatchEvent(new Event('change'))")
    legend = js(browser, "return Array.from(document.querySelectorAll('#legend .legend-item'))"
                         ".map(e => e.textContent)")
    assert legend[:2] == [f"{min(pum):.4f}", f"{max(pum):.4f}"]

    click(browser, "#expand-all")
    assert len(shown_nodes(browser)) == total
    deepest = max(tree.graph.nodes, key=lambda n: tree[n]["depth"])
    js(browser, f"window.pumsearchViewer.select({deepest})")
    assert js(browser, "return document.querySelectorAll('#prefix li').length") == tree[deepest]["depth"]
    click(browser, "#collapse-default")  # back to the opening view, keeping the selected node in sight
    again = shown_nodes(browser)
    assert shown <= again and deepest in again and len(again) <= len(shown) + 4 * tree[deepest]["depth"]


def test_several_trees_on_one_page(browser: Any, tmp_path: Path) -> None:
    bon_file, _ = save_bon_tree(tmp_path)
    fixed, fixed_result = ranking_tree()
    fixed_file = fixed.save(tmp_path / "fixed.tree.json", fixed_result)
    open_page(browser, write_page(tmp_path, bon_file, fixed_file))
    assert text_of(browser, "#panel h2") == "Problem hostile/1"
    js(browser, "const s = document.getElementById('tree-select'); s.value = '1';"
                "s.dispatchEvent(new Event('change'))")
    assert text_of(browser, "#panel h2") == "Problem fixed/1"
    assert shown_nodes(browser) == set(fixed.graph.nodes)
    # a correct and a wrong solution are marked as such
    classes = js(browser, "return Array.from(document.querySelectorAll('#nodes g.node'))"
                          ".map(g => [Number(g.dataset.node), g.getAttribute('class')])")
    marks = {node: cls.split() for node, cls in classes}
    assert "correct" in marks[2] and "correct" in marks[4] and "wrong" in marks[3] and "wrong" in marks[6]


def test_run_index_filters_and_links_to_tree_pages(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    run_dir = tmp_path / "bon-sweep"
    records = write_run_dir(run_dir)
    index = tmp_path / "site" / "index.html"
    done = runner.invoke(app, ["tree", "html", "--run", str(run_dir), "-o", str(index)])
    assert done.exit_code == 0, done.output
    open_page(browser, index)

    def rows() -> list[tuple[str, str]]:
        return js(browser, "return Array.from(document.querySelectorAll('#rows tr'))"
                           ".map(r => [r.dataset.problem, r.className])")

    assert len(rows()) == len(records)
    assert "1 unreadable record line(s) skipped" in text_of(browser, "#summary")
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("wrong")
    wrong = [r for r in records if r["status"] == "ok" and r["correct"] is False]
    assert [cls for _, cls in rows()] == ["wrong"] * len(wrong)
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    Select(browser.find_element(By.ID, "f-budget")).select_by_value("2")
    assert sorted(p for p, _ in rows()) == sorted(r["problem_id"] for r in records if r["budget"] == 2)
    Select(browser.find_element(By.ID, "f-budget")).select_by_value("*")
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("failed")
    assert rows() == [["toy/broken", "failed"]]
    assert "open tree" not in text_of(browser, "#rows")
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    screenshot(browser, tmp_path, "viewer-index.png")

    first = records[0]
    click(browser, f'tr[data-problem="{first["problem_id"]}"] a.tree-link')
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return document.title.startsWith('pumsearch tree') && document.body.dataset.ready === '1'"))
    assert text_of(browser, "#panel h2") == f"Problem {first['problem_id']}"
