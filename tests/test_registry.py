"""The registries: lookup, refusal, lazy references, the testbed registering itself, and help texts
and docs that name every registered backend, scorer and PRM format."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pumsearch
from pumsearch.cli import app
from pumsearch.datasets import DATASET_PREFIXES, load_problems
from pumsearch.models import MODEL_PREFIXES, default_scorer_for, is_alias, resolve_model_name
from pumsearch.registry import BACKENDS, SCORERS, Entry, Registry
from pumsearch.scorers import ScorerError, load_scorer, scorer_names
from pumsearch.scorers.prm import PRM_FORMATS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_a_registry_finds_lists_and_refuses_by_name() -> None:
    toys: Registry[Entry] = Registry("toy")
    toys.add(Entry("a", "the first", 1))
    toys.add(Entry("b", "the second", 2))
    toys.add(Entry("c", "a hidden one", 3, hidden=True))
    assert toys.get("b").resolve() == 2 and toys.get("c").resolve() == 3  # hidden ones still load
    assert toys.names() == ["a", "b"] and toys.names(hidden=True) == ["a", "b", "c"]
    assert toys.choices() == "a or b" and toys.describe() == [("a", "the first"), ("b", "the second")]
    with pytest.raises(KeyError, match="unknown toy 'z': use one of a, b"):
        toys.get("z", error=KeyError)
    with pytest.raises(ValueError, match="'a' is registered already"):
        toys.add(Entry("a", "again", 4))
    toys.add(Entry("a", "replaced", 5), replace=True)
    assert toys.get("a").resolve() == 5
    for bad in (Entry("", "no name", 0), Entry("d", "", 0), Entry("d", "two\nlines", 0)):
        with pytest.raises(ValueError):
            toys.add(bad)


def test_a_reference_is_imported_only_when_it_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "registry_probe_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = Entry("probe", "a lazily imported target", "registry_probe_module:VALUE")
    assert "registry_probe_module" not in sys.modules
    assert entry.resolve() == 42 and "registry_probe_module" in sys.modules
    monkeypatch.delitem(sys.modules, "registry_probe_module")
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        Entry("bad", "a broken reference", "no-colon-here").resolve()


def test_the_built_ins_are_registered_in_their_order() -> None:
    assert scorer_names() == ["pum", "prm", "orm", "verifier", "rollout", "confidence", "testbed-prm"]
    assert BACKENDS.names() == ["transformers", "sglang", "sglang-server", "openai"]
    assert BACKENDS.get("scripted").hidden and BACKENDS.names(hidden=True)[-1] == "scripted"
    assert PRM_FORMATS.names() == ["qwen", "shepherd", "rlhflow"]
    with pytest.raises(ScorerError, match="unknown scorer 'nope': use one of pum, prm, orm, verifier, rollout, "
                                          "confidence, testbed-prm"):
        load_scorer("nope")
    with pytest.raises(ScorerError, match="unknown --prm-format 'x': use one of qwen, shepherd, rlhflow"):
        load_scorer("prm", model="/nowhere", prm_format="x")


def test_the_testbed_registers_its_models_data_sets_and_scorer_from_its_own_package() -> None:
    assert SCORERS.get("testbed-prm").target == "pumsearch.testbed.scorers:TestbedPRM"
    assert DATASET_PREFIXES.get("testbed").resolve().__module__ == "pumsearch.testbed"
    assert MODEL_PREFIXES.get("testbed").default_scorer is pumsearch.testbed.default_scorer_for
    assert is_alias("testbed:weak") and not is_alias("Qwen/Qwen2.5-1.5B") and not is_alias("other:thing")
    assert resolve_model_name("testbed:weak") == str(pumsearch.testbed.POLICY_DIR / "weak")
    assert resolve_model_name("some/hub-model") == "some/hub-model"
    with pytest.raises(ValueError, match="unknown testbed policy 'medium'"):
        resolve_model_name("testbed:medium")
    assert default_scorer_for("testbed:strong") == pumsearch.testbed.default_scorer_for("testbed:strong")
    assert default_scorer_for("some/hub-model") is None and default_scorer_for(None) is None
    assert [p.id for p in load_problems("testbed:small", limit=2)] == [p.id for p in
                                                                       pumsearch.testbed.testbed_problems("small")[:2]]


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={**os.environ, "COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["solve", "run", "sweep"])
def test_every_registered_backend_and_scorer_is_in_the_help(command: str) -> None:
    text = _help(command)
    for name in BACKENDS.names():
        assert name in text, (command, name)
    if command == "solve":
        for name in [*SCORERS.names(), *PRM_FORMATS.names()]:
            assert name in text, (command, name)


def test_the_score_command_names_every_scorer() -> None:
    text = _help("score")
    assert all(name in text for name in [*SCORERS.names(), *PRM_FORMATS.names()])


def _named_in(doc: str, names: list[str]) -> list[str]:
    """The names that docs/<doc> never writes as code (`name` or `name --flag ...`)."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    return [n for n in names if not re.search(rf"`{re.escape(n)}[` ]", text)]


def test_the_docs_name_every_registered_backend_scorer_and_format() -> None:
    assert _named_in("api.md", [*SCORERS.names(), *BACKENDS.names()]) == []
    assert _named_in("scorers.md", [*SCORERS.names(), *PRM_FORMATS.names()]) == []
    assert _named_in("backends.md", BACKENDS.names()) == []
