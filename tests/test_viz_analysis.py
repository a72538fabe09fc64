"""Tree analyses, ranking metrics (against values worked out by hand), GraphML export, the HTML
writers' escaping, and the tree commands' output and errors. The browser tests are in
test_viz_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest
from typer.testing import CliRunner

from pumsearch.cli import app
from pumsearch.search.tree import ROOT, SearchTree, load_tree
from pumsearch.viz.analysis import (
    combine_rankings,
    combine_stats,
    rank_tree,
    ranking_metrics,
    tree_stats,
)
from pumsearch.viz.html import render_trees_html, script_safe_json
from pumsearch.viz.run_index import read_records, write_run_index
from tests.helpers_viz import PLANTED, ranking_tree, save_bon_tree, write_run_dir

runner = CliRunner()


def _save(tmp_path: Path, tree: SearchTree, result: dict, name: str = "fixed.tree.json") -> Path:
    return tree.save(tmp_path / name, result)


# -- ranking quality: the fixed tree of helpers_viz.ranking_tree, worked out by hand ---------------
# candidates 2 (correct), 3 (wrong), 4 (correct), 6 (wrong): n = 4, c = 2.
#  prm, last:  2: 0.9 | 3: 0.7, 6: 0.7 (tied, positions 2-3) | 4: 0.4
#     worst correct = node 4 at position 4 -> 4/4; best wrong = first of the tie, 2 -> 2/4
#     pairs (2,3) (2,6) won, (4,3) (4,6) lost -> 2/4
#  prm, min:   2: 0.5 | 4: 0.4 | 6: 0.3 | 3: 0.1  -> worst correct 2/4, best wrong 3/4, pairs 4/4
#  orm:        3: 0.8 | 4: 0.6 | 2: 0.2 | 6: 0.1  -> worst correct 3/4, best wrong 1/4,
#     pairs (2,3) lost (2,6) won (4,3) lost (4,6) won -> 2/4
@pytest.mark.parametrize(("scorer", "aggregate", "expected"), [
    ("prm", "last", (1.0, 0.5, 0.5)),
    ("prm", "min", (0.5, 0.75, 1.0)),
    ("orm", "last", (0.75, 0.25, 0.5)),
])
def test_ranking_metrics_on_the_fixed_tree(scorer: str, aggregate: str, expected: tuple) -> None:
    tree, result = ranking_tree()
    quality = rank_tree(tree, result, scorer, aggregate)
    assert (quality.candidates, quality.correct, quality.skipped) == (4, 2, 0)
    got = (quality.worst_correct_percentile, quality.best_wrong_percentile, quality.pairwise_accuracy)
    assert got == pytest.approx(expected)


def test_ties_between_correct_and_wrong_count_against_the_scorer() -> None:
    tied = ranking_metrics([(0.5, True), (0.5, False), (0.1, False)])
    # the tie occupies positions 1-2: the correct one is taken at 2, the wrong one at 1; pair credit 1/2
    assert tied.worst_correct_percentile == pytest.approx(2 / 3)
    assert tied.best_wrong_percentile == pytest.approx(1 / 3)
    assert tied.pairwise_accuracy == pytest.approx((0.5 + 1.0) / 2)


def test_a_perfect_scorer_reaches_c_over_n_and_the_next_position() -> None:
    perfect = ranking_metrics([(0.9, True), (0.8, True), (0.3, False), (0.2, False), (0.1, False)])
    assert (perfect.worst_correct_percentile, perfect.best_wrong_percentile, perfect.pairwise_accuracy) == (
        pytest.approx(2 / 5), pytest.approx(3 / 5), 1.0)


def test_one_sided_problems_leave_undefined_metrics_out_of_the_means() -> None:
    tree, result = ranking_tree()
    all_right = ranking_metrics([(0.3, True), (0.2, True)], "all-right")
    assert all_right.best_wrong_percentile is None and all_right.pairwise_accuracy is None
    mean = combine_rankings([rank_tree(tree, result, "prm"), all_right])
    assert mean["pairwise_accuracy"] == pytest.approx(0.5)  # only the fixed tree has pairs
    assert mean["pairwise_accuracy_problems"] == 1
    assert mean["worst_correct_percentile"] == pytest.approx((1.0 + 1.0) / 2)  # all-right: 2/2
    assert mean["all_correct_problems"] == 1


def test_candidates_without_a_score_or_a_verdict_are_skipped() -> None:
    tree, result = ranking_tree()
    del tree[4]["scores"]["orm"]
    tree[6]["correct"] = None
    quality = rank_tree(tree, result, "orm")
    # left: 2 (correct, 0.2) and 3 (wrong, 0.8)
    assert (quality.candidates, quality.skipped) == (2, 2)
    assert (quality.worst_correct_percentile, quality.best_wrong_percentile, quality.pairwise_accuracy) == (
        1.0, 0.5, 0.0)


# -- tree statistics ---------------------------------------------------------------------------
def test_tree_stats_on_the_fixed_tree() -> None:
    tree, result = ranking_tree()
    stats = tree_stats(tree, result)
    assert stats["nodes"] == 8 and stats["leaves"] == 5 and stats["solutions"] == 4
    assert (stats["correct_solutions"], stats["wrong_solutions"]) == (2, 2)
    assert stats["depth_distribution"] == {1: 4, 2: 4}
    assert stats["branching_distribution"] == {1: 2, 2: 1, 4: 1}  # nodes 5, 7 | node 1 | the root
    assert stats["mean_branching"] == pytest.approx(8 / 4)
    assert stats["tokens_total"] == 3 + 5 + 6 + 7 + 2 + 4 + 9 + 4
    assert stats["tokens_abandoned"] == 9 + 4  # nodes 7 and 8 never reach a solution
    assert stats["tokens_chosen_path"] == 3 + 5
    # wrong 3 leaves correct 2 after sharing node 1; wrong 6 shares nothing with a correct one
    assert [(d["wrong_node"], d["shared_node"], d["shared_depth"]) for d in stats["divergences"]] == [
        (3, 1, 1), (6, ROOT, 0)]
    assert stats["mean_divergence_depth"] == pytest.approx(0.5)
    assert [f["node"] for f in stats["forks"]] == [1, ROOT]


def test_combined_stats_add_up(tmp_path: Path) -> None:
    tree, result = ranking_tree()
    one = tree_stats(tree, result)
    both = combine_stats([one, one])
    assert both["nodes"] == 16 and both["depth_distribution"] == {1: 8, 2: 8}
    assert both["abandoned_token_share"] == pytest.approx(13 / 40)


def test_stats_of_a_real_best_of_n_tree(tmp_path: Path) -> None:
    path, result = save_bon_tree(tmp_path, budget=6)
    tree, summary = load_tree(path)
    stats = tree_stats(tree, summary)
    # Best-of-N: six chains of three steps from the root, every one finished and graded
    assert stats["nodes"] == 18 and stats["branching_distribution"] == {1: 12, 6: 1}
    assert stats["solutions"] == 6 and stats["tokens_abandoned"] == 0
    right = sum(1 for c in result.candidates if c.correct)
    assert stats["correct_solutions"] == right and stats["wrong_solutions"] == 6 - right
    assert stats["tokens_total"] == result.counters.generated_tokens


# -- export and HTML escaping ------------------------------------------------------------------
def test_graphml_round_trip_keeps_text_and_scores(tmp_path: Path) -> None:
    path, result = save_bon_tree(tmp_path)
    out = tmp_path / "tree.graphml"
    assert runner.invoke(app, ["tree", "graphml", str(path), "-o", str(out)]).exit_code == 0
    graph = nx.read_graphml(out)
    assert graph.number_of_nodes() == len(result.tree) and graph.number_of_edges() == len(result.tree) - 1
    chosen = str(result.chosen_node)
    assert json.loads(graph.nodes[chosen]["scores"]) == result.tree[result.chosen_node]["scores"]
    assert any(PLANTED in attrs.get("text", "") for _, attrs in graph.nodes(data=True))


def test_embedded_json_cannot_close_its_script_element() -> None:
    text = script_safe_json({"t": "</script><script>alert(1)</script> & <!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "</script><script>alert(1)</script> & <!--"}


def test_viewer_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    path, _ = save_bon_tree(tmp_path)
    tree, result = load_tree(path)
    page = render_trees_html([(tree, result, "bon.tree.json")])
    assert len(re.findall(r"<script\b", page)) == 2  # the data block and the viewer, nothing planted
    assert "window.__pwned" in page  # the planted text is there, but only inside the escaped JSON
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from anywhere
    assert "default-src 'none'" in page


def test_non_finite_scores_render_as_null(tmp_path: Path) -> None:
    tree, result = ranking_tree()
    tree[2]["scores"]["prm"] = float("nan")
    tree[3]["step_scores"]["prm"] = [float("inf"), 0.7]
    page = render_trees_html([(tree, result, "nan")])
    data = re.search(r'<script type="application/json" id="pumsearch-data">(.*?)</script>', page, re.S)
    def no_constants(name: str) -> None:  # browsers' JSON.parse rejects NaN and Infinity
        raise AssertionError(f"{name} in the embedded JSON")

    payload = json.loads(data.group(1), parse_constant=no_constants)
    nodes = {n["id"]: n for n in payload["trees"][0]["nodes"]}
    assert nodes[2]["scores"]["prm"] is None and nodes[3]["step_scores"]["prm"] == [None, 0.7]


# -- run index (the page itself is driven in the browser tests) --------------------------------
def test_run_index_reads_records_and_writes_a_page_per_tree(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    written = write_run_dir(run_dir)
    records, bad = read_records(run_dir)
    assert len(records) == len(written) == 7 and bad == 1  # the half-written last line
    _, counts = write_run_index(run_dir, tmp_path / "site" / "index.html")
    assert counts == {"rows": 7, "pages": 6, "missing_trees": 0, "unreadable_lines": 1}
    assert len(list((tmp_path / "site" / "trees").glob("*.html"))) == 6


# -- the commands ---------------------------------------------------------------------------------
def test_rank_command_prints_the_hand_computed_metrics(tmp_path: Path) -> None:
    tree, result = ranking_tree()
    path = _save(tmp_path, tree, result)
    out = runner.invoke(app, ["tree", "rank", str(path), "--scorer", "prm", "--aggregate", "min", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    (row,) = report["problems"]
    assert (row["worst_correct_percentile"], row["best_wrong_percentile"], row["pairwise_accuracy"]) == (
        0.5, 0.75, 1.0)
    table = runner.invoke(app, ["tree", "rank", str(path), "--scorer", "orm"])
    assert table.exit_code == 0 and "0.750" in table.stdout and "0.250" in table.stdout


def test_stats_command_json_and_table(tmp_path: Path) -> None:
    tree, result = ranking_tree()
    path = _save(tmp_path, tree, result)
    out = runner.invoke(app, ["tree", "stats", str(path), str(path), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["total"]["nodes"] == 16 and report["total"]["tokens_abandoned"] == 26
    table = runner.invoke(app, ["tree", "stats", str(path)], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "abandoned tokens: 13 of 40 (32.5%)" in table.stdout


def test_html_commands_write_pages(tmp_path: Path) -> None:
    path, _ = save_bon_tree(tmp_path)
    out = tmp_path / "view.html"
    assert runner.invoke(app, ["tree", "html", str(path), str(path), "-o", str(out)]).exit_code == 0
    assert out.read_text().count('"problem":') == 2
    run_dir = tmp_path / "run"
    write_run_dir(run_dir)
    done = runner.invoke(app, ["tree", "html", "--run", str(run_dir)])
    assert done.exit_code == 0, done.output
    assert (run_dir / "viewer" / "index.html").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["tree", "stats", "missing.tree.json"], "no tree file at missing.tree.json"),
    (["tree", "html", "{fixed}"], "-o OUT.html"),
    (["tree", "html"], "give at least one tree file"),
    (["tree", "html", "--run", "{tmp}"], "no records.jsonl in"),
    (["tree", "html", "--run", "{tmp}", "{fixed}"], "either tree files or --run"),
    (["tree", "rank", "{fixed}", "--scorer", "verifier"],
     "no node is scored by 'verifier'; these trees hold: orm, prm"),
    (["tree", "rank", "{fixed}"], "name the scorer with --scorer"),
    (["tree", "rank", "{fixed}", "--scorer", "prm", "--aggregate", "median"], "unknown aggregate 'median'"),
    (["tree", "stats", "{notjson}"], "is not valid JSON"),
    (["tree", "html", "{fixed}", "{other}", "-o", "{tmp}/o.html"], "other.json: not a pumsearch tree"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    tree, result = ranking_tree()
    fixed = _save(tmp_path, tree, result)
    notjson = tmp_path / "x.tree.json"
    notjson.write_text("{")
    other = tmp_path / "other.json"
    other.write_text('{"format": "something-else"}')
    args = [a.format(fixed=fixed, tmp=tmp_path, notjson=notjson, other=other) for a in args]
    out = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert out.exit_code == 2, out.output
    assert message in out.output and "Traceback" not in out.output
