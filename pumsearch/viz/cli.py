"""``pumsearch tree show|html|stats|rank|graphml``: look at recorded search trees (docs/viewer.md).

Only typer and rich are imported here; the viewer and analyses load inside the commands.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from pumsearch.cli_common import compact_table, console, fail, user_errors
from pumsearch.cli_options import UsageError

tree_app = typer.Typer(help="Inspect saved search trees.", no_args_is_help=True)


@tree_app.command("show")
def tree_show(
    file: Annotated[Path, typer.Argument(help="A saved tree (.tree.json).")],
    width: Annotated[int, typer.Option(help="Characters of step text per line.")] = 80,
) -> None:
    """Print a saved tree as an indented outline: step text, scores, finish reasons."""
    from pumsearch.search.tree import load_tree

    try:
        tree, result = load_tree(file)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
        return
    console.print(f"[bold]problem:[/] {escape(tree.problem.question)}", highlight=False)
    chosen = set(result.get("chosen_path", [])) if result else set()
    for line in tree_outline(tree, width, chosen):
        console.print(line, highlight=False, markup=False)


def tree_outline(tree: Any, width: int, chosen: set[int]) -> list[str]:
    from pumsearch.search.tree import ROOT

    lines: list[str] = []
    stack = [(child, 1) for child in reversed(tree.children(ROOT))]
    while stack:
        node, depth = stack.pop()
        attrs = tree[node]
        text = " ".join(attrs["text"].split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        scores = " ".join(f"{k}={v:.3f}" for k, v in attrs["scores"].items())
        tags = [attrs["finish_reason"] or ""]
        if attrs["terminal"]:
            tags.append(f"answer={attrs['answer']}")
        if attrs["correct"] is not None:
            tags.append("correct" if attrs["correct"] else "wrong")
        if attrs.get("visits"):  # MCTS trees only
            tags.append(f"visits={attrs['visits']}")
        mark = "*" if node in chosen else "-"
        tag_text = " ".join(t for t in tags if t)
        lines.append(f"{'  ' * (depth - 1)}{mark} [{node}] {text}  ({tag_text}) {scores}".rstrip())
        stack.extend((child, depth + 1) for child in reversed(tree.children(node)))
    return lines


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """A file that cannot be written (a read-only or missing directory) is the user's to fix."""
    try:
        yield
    except OSError as err:
        raise UsageError(f"cannot write {out} ({err.strerror or err}): choose another -o") from None


# -- tree viewer and analyses (docs/viewer.md) ------------------------------------------------------
TreeFiles = Annotated[list[Path] | None, typer.Argument(help="Saved trees (.tree.json).", show_default=False)]


def _load_trees(files: list[Path] | None) -> list[tuple[Any, Any, Path]]:
    from pumsearch.search.tree import load_tree

    if not files:
        raise UsageError("give at least one tree file (.tree.json)")
    loaded = []
    for file in files:
        try:
            tree, result = load_tree(file)
        except ValueError as err:  # say which of several files is at fault
            raise UsageError(str(err) if str(file) in str(err) else f"{file}: {err}") from None
        loaded.append((tree, result, file))
    return loaded


@tree_app.command("html")
def tree_html(
    files: TreeFiles = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file to write.")] = None,
    run: Annotated[Path | None, typer.Option(
        "--run", help="A run directory (records.jsonl): write an index page, and a page per tree beside it "
                      "(default -o: DIR/viewer/index.html).")] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write a self-contained HTML viewer for trees, or an index over a run's problems (--run)."""
    from pumsearch.viz.html import render_trees_html
    from pumsearch.viz.run_index import write_run_index

    try:
        if run is not None:
            if files:
                raise UsageError("give either tree files or --run DIR, not both")
            index, counts = write_run_index(run, out or run / "viewer" / "index.html")
            console.print(f"index of {counts['rows']} problems ({counts['pages']} tree pages, "
                          f"{counts['missing_trees']} trees missing) written to [bold]{index}[/]")
            return
        loaded = _load_trees(files)
        if out is None:
            raise UsageError("say where to write the page: -o OUT.html")
        page = render_trees_html([(t, r, f.name) for t, r, f in loaded], title)
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(page, encoding="utf-8")
    except user_errors() as err:
        fail(str(err))
        return
    console.print(f"viewer for {len(loaded)} tree(s) written to [bold]{out}[/]")


@tree_app.command("stats")
def tree_stats_cmd(
    files: TreeFiles = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full statistics as JSON.")] = False,
) -> None:
    """Tree shape (depth, branching), where correct and wrong solutions part, tokens on abandoned branches."""
    from pumsearch.viz.analysis import combine_stats, tree_stats

    try:
        per_tree = [tree_stats(tree, result) for tree, result, _ in _load_trees(files)]
    except user_errors() as err:
        fail(str(err))
        return
    total = combine_stats(per_tree)
    if as_json:
        sys.stdout.write(json.dumps({"trees": per_tree, "total": total}, default=str) + "\n")
        return
    print_stats(per_tree, total)


STATS_COLUMNS = ("problem", "nodes", "depth", "mean\nbranch", "solutions", "correct", "wrong", "diverge\nat",
                 "tokens", "tokens\nabandoned")


def print_stats(per_tree: list[dict[str, Any]], total: dict[str, Any]) -> None:
    table = compact_table(STATS_COLUMNS, text=("problem",), title="trees")
    overall = {**total, "problem_id": "all", "max_depth": max((p["max_depth"] for p in per_tree), default=0)}
    for s in [*per_tree, overall]:
        table.add_row(Text(s["problem_id"]), str(s["nodes"]), str(s["max_depth"]), _num(s["mean_branching"]),
                      str(s["solutions"]), str(s["correct_solutions"]), str(s["wrong_solutions"]),
                      _num(s["mean_divergence_depth"]), str(s["tokens_total"]), str(s["tokens_abandoned"]))
    console.print(table)
    console.print("mean branch: children per inner node; diverge at: mean shared steps where a wrong solution "
                  "leaves the nearest correct one; tokens abandoned: on branches no solution ends in",
                  highlight=False, markup=False)
    labels = {"depth_distribution": "nodes per depth", "branching_distribution": "children per inner node",
              "divergence_depths": "shared steps when a wrong solution leaves the nearest correct one"}
    for key, label in labels.items():
        dist = ", ".join(f"{k}: {v}" for k, v in total[key].items()) or "none"
        console.print(f"[bold]{label}:[/] {dist}", highlight=False)
    console.print(f"[bold]abandoned tokens:[/] {total['tokens_abandoned']} of {total['tokens_total']} "
                  f"({100 * total['abandoned_token_share']:.1f}%)", highlight=False)


def _names(found: list[str]) -> str:
    return ", ".join(found) or "no scores"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


RANK_COLUMNS = ("problem", "candidates", "correct", "worst\ncorrect\npct", "best\nwrong\npct", "pairwise\nacc")


@tree_app.command("rank")
def tree_rank(
    files: TreeFiles = None,
    scorer: Annotated[str | None, typer.Option("--scorer", help="Scorer identity as stored in the tree "
                                                                "(default: the only one there is).")] = None,
    aggregate: Annotated[str, typer.Option(help="Step scores to one value: last, min, prod, mean.")] = "last",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """How well a scorer ranks recorded candidates (rank percentiles, pairwise accuracy)."""
    from dataclasses import asdict

    from pumsearch.viz.analysis import combine_rankings, rank_tree, scorers_in

    try:
        loaded = _load_trees(files)
        found = sorted({name for tree, _, _ in loaded for name in scorers_in(tree)})
        if scorer is None:
            if len(found) != 1:
                raise UsageError(f"name the scorer with --scorer; these trees hold: {_names(found)}")
            scorer = found[0]
        elif scorer not in found:
            raise UsageError(f"no node is scored by {scorer!r}; these trees hold: {_names(found)}")
        rows = [rank_tree(tree, result, scorer, aggregate) for tree, result, _ in loaded]
    except user_errors() as err:
        fail(str(err))
        return
    total = combine_rankings(rows)
    if as_json:
        report = {"scorer": scorer, "aggregate": aggregate, "problems": [asdict(r) for r in rows],
                  "mean": total}
        sys.stdout.write(json.dumps(report) + "\n")
        return
    table = compact_table(RANK_COLUMNS, text=("problem",),
                          title=f"ranking quality of {scorer} ({aggregate} aggregation; percentile = rank / n)")
    for r in rows:
        table.add_row(Text(r.problem_id), str(r.candidates), str(r.correct), _num(r.worst_correct_percentile),
                      _num(r.best_wrong_percentile), _num(r.pairwise_accuracy))
    means = (total[k] for k in ("worst_correct_percentile", "best_wrong_percentile", "pairwise_accuracy"))
    table.add_row("mean", "", "", *(_num(v) for v in means))
    console.print(table)
    console.print(f"pairwise accuracy over {total['pairwise_accuracy_problems']} problems with both correct "
                  f"and wrong candidates; {total['all_correct_problems']} all correct, "
                  f"{total['all_wrong_problems']} all wrong", highlight=False)


@tree_app.command("graphml")
def tree_graphml(
    file: Annotated[Path, typer.Argument(help="A saved tree (.tree.json).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .graphml file to write.")],
) -> None:
    """Export a tree as GraphML (Gephi, networkx); dict and list attributes become JSON strings."""
    from pumsearch.viz.analysis import export_graphml

    try:
        ((tree, _, _),) = _load_trees([file])
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            export_graphml(tree, out)
    except user_errors() as err:
        fail(str(err))
        return
    console.print(f"{len(tree)} nodes written to [bold]{out}[/]")
