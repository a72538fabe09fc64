"""SearchTree: building, reading, the JSON file format and GraphML export."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from pumsearch.search.problem import Problem
from pumsearch.search.tree import ROOT, SearchTree, load_tree


def _tree() -> SearchTree:
    tree = SearchTree(Problem("p/1", "What is 2 + 3?", "5", {"level": 1}))
    a = tree.add_child(ROOT, "2 + 3 = 5", finish_reason="step", num_tokens=4, token_ids=[1, 2, 3, 4])
    b = tree.add_child(
        a, "\\boxed{5}", finish_reason="eos", num_tokens=3, token_ids=[5, 6, 7], terminal=True, answer="5"
    )
    tree.add_child(ROOT, "2 + 3 = 6", finish_reason="step", num_tokens=4)
    tree[b]["scores"]["prm:qwen:x"] = 0.9
    tree[b]["step_scores"]["prm:qwen:x"] = [0.8, 0.9]
    return tree


def test_paths_steps_and_prefix_ids():
    tree = _tree()
    assert tree.path(2) == [1, 2]
    assert tree.steps(2) == ("2 + 3 = 5", "\\boxed{5}")
    assert tree.prefix_token_ids(2) == [1, 2, 3, 4, 5, 6, 7]
    assert tree.prefix_token_ids(3) is None
    assert tree.children(ROOT) == [1, 3]
    assert tree.parent(2) == 1 and tree.parent(ROOT) is None
    assert tree.terminals() == [2]
    assert sorted(tree.leaves()) == [2, 3]
    assert tree[2]["depth"] == 2


def test_json_round_trip(tmp_path):
    tree = _tree()
    path = tree.save(tmp_path / "t.tree.json", {"answer": "5"})
    raw = json.loads(path.read_text())
    assert raw["format"] == "pumsearch-tree" and raw["version"] == 1
    assert raw["problem"]["id"] == "p/1"
    assert {"source": 0, "target": 1} in [
        {k: e[k] for k in ("source", "target")} for e in raw["graph"]["edges"]
    ]
    loaded, result = load_tree(path)
    assert result == {"answer": "5"}
    assert loaded.problem == tree.problem
    assert nx.utils.graphs_equal(loaded.graph, tree.graph)
    assert dict(loaded.graph.nodes(data=True)) == dict(tree.graph.nodes(data=True))
    new = loaded.add_child(3, "more")  # ids continue after the largest one
    assert new == 4


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a pumsearch tree"):
        load_tree(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tree(bad)
    with pytest.raises(FileNotFoundError):
        load_tree(tmp_path / "missing.json")


def test_graphml_export_keeps_nested_attributes_as_json(tmp_path):
    path = _tree().save_graphml(tmp_path / "t.graphml")
    graph = nx.read_graphml(path)
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3
    assert json.loads(graph.nodes["2"]["step_scores"]) == {"prm:qwen:x": [0.8, 0.9]}
    assert graph.nodes["2"]["text"] == "\\boxed{5}"
