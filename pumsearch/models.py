"""Models by name, for every layer that loads one: backends, scorers and PUM training.

- **Names.** A model is a path, a hub name, or an alias under a registered prefix (the testbed
  registers ``testbed:``, so ``testbed:weak`` names a shipped policy). ``resolve_model_name`` turns
  an alias into its path; a prefix may also name the scorer its models get when none is named.
- **Loading.** ``load_pretrained`` (tokenizer and model) and ``load_tokenizer``, with one clear line
  for a missing path, a directory without a model, or a hub name that cannot be fetched; remote
  code runs only when asked for.
- **Where and how.** ``resolve_device`` (``auto``, a CUDA device that is not there) and
  ``resolve_dtype`` (names and aliases; ``auto`` is bfloat16 on CUDA, float32 elsewhere;
  ``bf16-matmul`` keeps float32 but for the linear layers' matrix products, ``use_bf16_matmuls``).
- **Seeds.** ``hash_seed``: a request's seed and a sample's index give the sample its own seed, so
  draws never depend on what else shares a batch (every backend derives the same ones).
- **CPU threads.** ``use_cpu_threads`` (``--threads``): how many threads torch computes with, set
  before torch starts its thread pools (benchmarks/bench_threads.py measured the default).

torch and transformers are imported inside the functions: importing this module is light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumsearch.registry import Entry, Registry


class ModelLoadError(ValueError):
    """The model could not be found or loaded (the message says what to fix)."""


# -- aliases under registered prefixes ------------------------------------------------------------
DefaultScorer = Callable[[str], "tuple[str, str | None] | None"]


@dataclass(frozen=True)
class ModelPrefix(Entry):
    """``<name>:<rest>`` names a model: ``target(rest)`` is its path (ValueError for an unknown rest).
    ``default_scorer(model)``, where set, is (scorer, scorer model) for a model of this family given
    by any spelling (alias or path), or None."""

    default_scorer: DefaultScorer | None = None


MODEL_PREFIXES: Registry[ModelPrefix] = Registry("model prefix")


def register_model_prefix(prefix: str, resolve: Callable[[str], str], *, help: str,
                          default_scorer: DefaultScorer | None = None, replace: bool = False) -> None:
    """Make ``<prefix>:<rest>`` name the model at ``resolve(rest)`` wherever a model is named."""
    if not prefix or ":" in prefix:
        raise ValueError(f"a model prefix must be a non-empty name without ':' (got {prefix!r})")
    MODEL_PREFIXES.add(ModelPrefix(prefix, help, resolve, default_scorer=default_scorer), replace=replace)


def is_alias(name: str | None) -> bool:
    """Whether ``name`` is ``<prefix>:<rest>`` under a registered prefix."""
    prefix, sep, _ = (name or "").partition(":")
    return bool(sep) and prefix in MODEL_PREFIXES


def resolve_model_name(name: str) -> str:
    """An alias's path (the prefix's resolver raises ValueError for an unknown alias); any other
    name unchanged."""
    if not is_alias(name):
        return name
    prefix, _, rest = name.partition(":")
    return str(MODEL_PREFIXES.get(prefix).resolve()(rest))


def default_scorer_for(model: str | None) -> tuple[str, str | None] | None:
    """The scorer a registered model family brings along when no scorer is named: the first answer
    of the prefixes' ``default_scorer`` rules, or None."""
    if not model:
        return None
    for entry in MODEL_PREFIXES:
        found = entry.default_scorer(model) if entry.default_scorer is not None else None
        if found is not None:
            return found
    return None


# -- locating and loading --------------------------------------------------------------------------
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto", "bf16-matmul": "bf16-matmul"}
BF16_MATMUL = "bf16-matmul"


def resolve_dtype(name: str, device: str) -> Any:
    """The dtype a model's weights load in (``bf16-matmul`` loads float32: ``use_bf16_matmuls``
    converts the linear layers afterwards)."""
    import torch

    key = DTYPES.get(name.lower())
    if key is None:
        raise ModelLoadError(f"unknown dtype {name!r}: use float32, bfloat16, float16, bf16-matmul or auto")
    if key == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return torch.float32 if key == BF16_MATMUL else getattr(torch, key)


def use_bf16_matmuls(model: Any) -> int:
    """Every ``nn.Linear`` of ``model`` computes in bfloat16 (pumsearch/bf16.py); attention, norms
    and the KV cache stay float32. Returns how many layers it converted."""
    import torch

    from pumsearch.bf16 import BF16Linear

    converted = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(module, name, BF16Linear(child))
                converted += 1
    return converted


# torch's device types (a name, optionally ":index"); checked before anything loads
_DEVICE = re.compile(r"(auto|cpu|mps|meta|(cuda|xpu|hpu|npu|xla|privateuseone)(:\d+)?)")


def check_device_name(device: str, flag: str = "--device") -> None:
    """Refuse a device name torch would reject, before a model spends a minute loading."""
    if not _DEVICE.fullmatch(device):
        raise ModelLoadError(f"unknown device {device!r} ({flag}): use cpu, cuda, cuda:N, mps or auto")


def resolve_device(device: str) -> str:
    import torch

    check_device_name(device)
    apply_cpu_threads()  # every model load resolves its device first: torch's pools start after this
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA GPU is visible: use --device cpu")
    return device


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def check_model_location(name: str) -> None:
    """Clear errors for a missing path, a directory that holds no model, or weights cut short."""
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model path {name} does not exist")
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelLoadError(f"{name} is not a model directory (no config.json in it)")
        for weights in sorted(path.glob("*.safetensors")) if path.is_dir() else []:
            check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file that is cut short or not safetensors at all (an interrupted
    download or copy), naming the file, before a loader fails on it with a traceback. The format:
    8 bytes of header length, a JSON header giving each tensor's byte range, then the data."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        try:
            header = json.loads(f.read(length)) if 0 < length <= size - 8 else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    tensors = [v for k, v in header.items() if k != "__metadata__"] if isinstance(header, dict) else None
    try:
        needed = 8 + length + max((int(t["data_offsets"][1]) for t in tensors or []), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        tensors = None
    if tensors is None:
        raise ModelLoadError(f"{path} is corrupt (not a safetensors file): download or save it again")
    if needed > size:
        raise ModelLoadError(f"{path} is truncated ({size:,} bytes; its header describes {needed:,}): download "
                             "or save it again")


def load_pretrained(name: str, *, dtype: Any, device: str, trust_remote_code: bool = False,
                    model_class: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """Load a tokenizer and model from a path or hub name, turning hub failures into clear errors.
    ``dtype``: a torch dtype, or a name (``resolve_dtype``; ``bf16-matmul`` included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_location(name)
    model_class = model_class or AutoModelForCausalLM
    bf16_matmul = isinstance(dtype, str) and DTYPES.get(dtype.lower()) == BF16_MATMUL
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
        model = model_class.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        if looks_like_path(name):
            raise ModelLoadError(f"could not load the model at {name}: {err}") from None
        raise ModelLoadError(
            f"could not load {name!r} from the Hugging Face hub (offline, or no such model?). "
            "Download it first or pass a local path."
        ) from None
    if bf16_matmul:
        use_bf16_matmuls(model)
    model.to(device)
    model.eval()
    return tokenizer, model


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> Any:
    """A tokenizer alone, for a model that runs elsewhere (a server renders no chat prompts for us).
    ``name`` may be a GGUF file (what llama.cpp servers load): its tokenizer and chat template are
    read from the file's metadata."""
    from transformers import AutoTokenizer

    try:
        if is_gguf(name):
            return gguf_tokenizer(Path(name).expanduser())
        check_model_location(name)
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"could not load the tokenizer {name!r} (needed for chat prompts): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; "
            "pass --tokenizer with a local path"
        ) from None


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def gguf_tokenizer(path: Path) -> Any:
    """The tokenizer stored in a GGUF file (transformers reads it; the ``gguf`` package must be
    installed). Reading it takes seconds (gguf-py parses every token string), so the converted
    tokenizer is saved in the cache (``gguf_tokenizer_cache``) and loaded from there next time."""
    from transformers import AutoTokenizer

    if not path.is_file():
        raise ModelLoadError(f"GGUF file {path} does not exist")
    cache = gguf_tokenizer_cache(path)
    if (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cache))
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the time
        save_atomically(tokenizer, cache)
    return tokenizer


def default_cache_dir() -> Path:
    """Where pumsearch keeps what it converted once: $XDG_CACHE_HOME/pumsearch, else ~/.cache/pumsearch."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pumsearch"


def gguf_tokenizer_cache(path: Path) -> Path:
    """The cache directory of ``path``'s tokenizer, named by the file's absolute path, size and
    modification time, so a file rewritten in place is read again."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return default_cache_dir() / "gguf-tokenizers" / f"{path.stem}-{key}"


def save_atomically(tokenizer: Any, target: Path) -> None:
    """save_pretrained into a temporary sibling renamed to ``target``: a reader never sees half a
    tokenizer, and of two runs saving at once the first rename wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        with contextlib.suppress(OSError):  # another run saved it first
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- CPU threads -----------------------------------------------------------------------------------
# Every core the process may use, with OpenMP's passive wait policy: a thread waiting for the others
# at one of a decode step's many parallel regions sleeps instead of spinning. Spinning threads made
# the README's first command take 45-622 s of backend time with 2 threads on the loaded 2-core
# machine against 10-30 s with 1 thread; passive waiting made 2 threads take 9-19 s there
# (benchmarks/bench_threads.py, benchmarks/RESULTS.md, "CPU threads").
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_wanted_threads: int | None = None


def default_cpu_threads() -> int:
    """OMP_NUM_THREADS where the environment sets it, else every core this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) >= 1:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_threads(threads: int | None) -> int:
    """Compute with ``threads`` CPU threads (None: ``default_cpu_threads()``). Before torch is
    imported this sets the variables torch's OpenMP and MKL read when they start (so importing it
    stays lazy), with the passive wait policy unless the environment names one; the intra- and
    inter-op counts are set through torch before its first operation, by ``apply_cpu_threads``
    (called here when torch is loaded, else when a device is resolved)."""
    global _wanted_threads
    n = default_cpu_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"--threads must be at least 1 (got {n})")
    _wanted_threads = n
    if "torch" not in sys.modules:  # OpenMP reads its wait policy once, when torch loads it
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(n)
    if "torch" in sys.modules:
        apply_cpu_threads()
    return n


def apply_cpu_threads() -> None:
    """Hand the count ``use_cpu_threads`` chose to torch (nothing when none was chosen). The
    inter-op pool can be sized only before its first use: later it keeps its size."""
    if _wanted_threads is None:
        return
    import torch

    if torch.get_num_threads() != _wanted_threads:
        torch.set_num_threads(_wanted_threads)
    if torch.get_num_interop_threads() != _wanted_threads:
        # already started (a second command in one process): it keeps its size
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(_wanted_threads)


# -- seeds ------------------------------------------------------------------------------------------
def hash_seed(seed: int | None, index: int) -> int:
    """A per-sample seed from the request seed and the sample's index."""
    import numpy as np

    return int(np.random.SeedSequence([(seed or 0) & 0xFFFFFFFFFFFFFFFF, index]).generate_state(1, np.uint64)[0]
               & 0x7FFFFFFFFFFFFFFF)


__all__ = [
    "DTYPES",
    "MODEL_PREFIXES",
    "ModelLoadError",
    "ModelPrefix",
    "apply_cpu_threads",
    "check_device_name",
    "check_model_location",
    "check_safetensors",
    "default_scorer_for",
    "gguf_tokenizer",
    "hash_seed",
    "is_alias",
    "is_gguf",
    "load_pretrained",
    "load_tokenizer",
    "looks_like_path",
    "register_model_prefix",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_name",
    "use_bf16_matmuls",
    "use_cpu_threads",
]
