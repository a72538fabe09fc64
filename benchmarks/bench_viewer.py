"""How the tree viewer copes with big trees, in headless Chromium (selenium + chromedriver).

For full trees of growing size it measures: writing the HTML (Python), the file size, opening the
page (navigation until the viewer says it is ready: parse, layout and first draw of the opening
view), and "expand all" (layout and drawing of every node, forced to finish by reading the
drawing's bounding box). Run from the repository root:

    python benchmarks/bench_viewer.py            # sizes 1365, 5460, 21844 (branching 4, depth 5-7)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package and its test fixtures

from pumsearch.viz.html import render_trees_html  # noqa: E402
from tests.helpers_viz import big_tree  # noqa: E402


def driver():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,860",
                "--proxy-server=127.0.0.1:9"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def measure(browser, depth: int, workdir: Path, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    tree, result = big_tree(branching=4, depth=depth)
    started = time.perf_counter()
    page = render_trees_html([(tree, result, "big")])
    render_s = time.perf_counter() - started
    path = workdir / f"big-{depth}.html"
    path.write_text(page, encoding="utf-8")
    opens, expands, shown = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        browser.get(path.as_uri())
        browser.execute_script("return 1")
        while browser.execute_script("return document.body.dataset.ready") != "1":
            time.sleep(0.005)
        opens.append(time.perf_counter() - started)
        shown = browser.execute_script("return document.querySelectorAll('#nodes g.node').length")
        expands.append(browser.execute_script(
            "const t = performance.now(); document.getElementById('expand-all').click();"
            "document.getElementById('viewport').getBBox(); document.body.offsetHeight;"
            "return (performance.now() - t) / 1000;"))
    return {"nodes": len(tree), "html_mb": len(page.encode()) / 1e6, "render_s": render_s,
            "open_s": min(opens), "shown": shown, "expand_all_s": min(expands)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 6, 7])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    browser = driver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print("| nodes | HTML MB | write HTML s | open page s (nodes drawn) | expand all s |")
            print("|---:|---:|---:|---:|---:|")
            for depth in args.depths:
                r = measure(browser, depth, Path(tmp), args.repeats)
                print(f"| {r['nodes']} | {r['html_mb']:.2f} | {r['render_s']:.2f} | "
                      f"{r['open_s']:.2f} ({r['shown']}) | {r['expand_all_s']:.2f} |", flush=True)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
