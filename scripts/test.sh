#!/usr/bin/env bash
# The test command of the README (and of CI): every test, the slow ones included; arguments go to
# pytest (`bash scripts/test.sh -m "not slow"` skips the tests marked slow).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m pytest -q -rs -p no:cacheprovider "$@"  # -rs: say why a test was skipped
