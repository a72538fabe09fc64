"""The search tree: one node per reasoning step, the root is the empty prefix.

Stored as a networkx DiGraph with integer node ids and plain-JSON node attributes, so a saved tree
is readable by anything that reads node-link JSON. File format (documented in docs/tree-format.md):

    {"format": "pumsearch-tree", "version": 1, "problem": {...}, "result": {...} | null,
     "graph": <networkx node-link data written with edges="edges">}
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from pumsearch.search.problem import Problem

TREE_FORMAT = "pumsearch-tree"
TREE_VERSION = 1
ROOT = 0


def _new_node_attrs(**overrides: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "text": "",
        "depth": 0,
        "finish_reason": None,  # "step" | "eos" | "length" | None (root)
        "num_tokens": 0,
        "token_ids": None,
        "terminal": False,  # a complete solution ends here
        "answer": None,  # extracted final answer, for terminal nodes
        "correct": None,  # graded against the reference, where known
        "scores": {},  # scorer identity -> value of the prefix ending here
        "step_scores": {},  # scorer identity -> per-step values (step PRMs)
        "logprob": None,  # the step's log-probability (sum over its tokens), where the search asked for it
        "token_confidences": None,  # each token's confidence (DeepConf C_i), where the scorer reads them
        "token_logprobs": None,  # each sampled token's log-probability, where the scorer reads them
    }
    attrs.update(overrides)
    return attrs


class SearchTree:
    """A problem's search tree. Strategies add nodes through the SearchContext. ``node_defaults``:
    attributes a strategy gives every node of its trees (its ``Strategy.node_defaults``)."""

    def __init__(self, problem: Problem, graph: nx.DiGraph | None = None, *,
                 node_defaults: Mapping[str, Any] | None = None) -> None:
        self.problem = problem
        self.node_defaults = dict(node_defaults or {})
        self.graph = graph if graph is not None else nx.DiGraph()
        if graph is None:
            self.graph.add_node(ROOT, **self._new_node_attrs())
        self._next_id = max(self.graph.nodes, default=-1) + 1

    def _new_node_attrs(self, **overrides: Any) -> dict[str, Any]:
        return _new_node_attrs(**{**copy.deepcopy(self.node_defaults), **overrides})

    # -- building -------------------------------------------------------------------------------
    def add_child(self, parent: int, text: str, **attrs: Any) -> int:
        node = self._next_id
        self._next_id += 1
        depth = self.graph.nodes[parent]["depth"] + 1
        self.graph.add_node(node, **self._new_node_attrs(text=text, depth=depth, **attrs))
        self.graph.add_edge(parent, node)
        return node

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __getitem__(self, node: int) -> dict[str, Any]:
        return self.graph.nodes[node]

    def parent(self, node: int) -> int | None:
        preds = list(self.graph.predecessors(node))
        return preds[0] if preds else None

    def children(self, node: int) -> list[int]:
        return sorted(self.graph.successors(node))

    def path(self, node: int) -> list[int]:
        """Node ids from the root's first child down to ``node`` (the root itself excluded)."""
        out = []
        while node != ROOT:
            out.append(node)
            parent = self.parent(node)
            if parent is None:
                raise ValueError(f"node {node} is not connected to the root")
            node = parent
        return out[::-1]

    def steps(self, node: int) -> tuple[str, ...]:
        return tuple(self.graph.nodes[n]["text"] for n in self.path(node))

    def prefix_token_ids(self, node: int) -> list[int] | None:
        """Concatenated token ids of the steps to ``node``; None if any step lacks them."""
        ids: list[int] = []
        for n in self.path(node):
            step_ids = self.graph.nodes[n]["token_ids"]
            if step_ids is None:
                return None
            ids.extend(step_ids)
        return ids

    def terminals(self) -> list[int]:
        return [n for n, d in self.graph.nodes(data=True) if d["terminal"]]

    def leaves(self) -> list[int]:
        return [n for n in self.graph.nodes if self.graph.out_degree(n) == 0 and n != ROOT]

    def iter_nodes(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(self.graph.nodes(data=True))

    # -- files ----------------------------------------------------------------------------------
    def to_json(self, result: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": TREE_FORMAT,
            "version": TREE_VERSION,
            "problem": self.problem.to_dict(),
            "result": result,
            "graph": nx.node_link_data(self.graph, edges="edges"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchTree:
        if not isinstance(data, dict):
            raise ValueError(f"not a pumsearch tree (a JSON {type(data).__name__}, not an object)")
        if data.get("format") != TREE_FORMAT:
            raise ValueError(f"not a pumsearch tree (format is {data.get('format')!r})")
        if data.get("version") != TREE_VERSION:
            raise ValueError(f"unsupported tree version {data.get('version')!r}; this build reads {TREE_VERSION}")
        graph = nx.node_link_graph(data["graph"], directed=True, edges="edges")
        return cls(Problem.from_dict(data["problem"]), graph)

    def save(self, path: str | Path, result: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(result), ensure_ascii=False))
        tmp.replace(path)  # atomic: a crash never leaves half a tree
        return path

    def save_graphml(self, path: str | Path) -> Path:
        """GraphML keeps only scalars, so dict and list attributes are written as JSON strings."""
        flat = nx.DiGraph()
        for node, attrs in self.graph.nodes(data=True):
            flat.add_node(node, **{k: _graphml_value(v) for k, v in attrs.items() if v is not None})
        flat.add_edges_from(self.graph.edges)
        path = Path(path)
        nx.write_graphml(flat, path)
        return path


def _graphml_value(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def load_tree(path: str | Path) -> tuple[SearchTree, dict[str, Any] | None]:
    """Read a tree file; returns the tree and the stored result summary (or None)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no tree file at {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    return SearchTree.from_json(data), data.get("result")
