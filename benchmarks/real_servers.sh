#!/usr/bin/env bash
# pumsearch against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's
# `python -m llama_cpp.server` serving the embedded SmolLM2 GGUF with one thread (issue 18).
#
# Installs llama-cpp-python[server] into its own venv (it compiles llama.cpp: 10-30 minutes on two
# cores; done once, skipped when the venv already imports it), starts the server behind a recording
# proxy (benchmarks/llama_server_check.py), runs `pumsearch solve` with bon, beam, dvts and mcts
# (bon and beam twice, mirrored, for the wall-time ratio) and a small `pumsearch run`, and
# checks each against what the server did: finish reasons (the
# server's own log tells an end of sequence from a stop string), counters against its `usage`,
# cached tokens unknown while its log shows prefix reuse, one request in flight, answers graded.
# Prints one line per run and the beam/BoN wall-time ratio; exits 1 on any mismatch.
# Not part of the test suite.
#
#   benchmarks/real_servers.sh                 # everything
#   LLAMA_VENV=/tmp/llama-venv LLAMA_CPP_PYTHON=/path/llama_cpp_python-0.3.36.tar.gz benchmarks/real_servers.sh
#
# Environment: PYTHON (the python with pumsearch; default: python3; its `pumsearch` script next to
# it is used, else the one on PATH), LLAMA_VENV (where
# llama-cpp-python goes), LLAMA_CPP_PYTHON (what pip installs; default the PyPI release below),
# PORT (default 8731; the proxy takes PORT+1), BUDGET (default 4), MAX_TOKENS (default 192),
# OUT (working directory; default a new temporary one).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
PUMSEARCH="$(dirname "$(command -v "$PYTHON")")/pumsearch"
[[ -x "$PUMSEARCH" ]] || PUMSEARCH=pumsearch
LLAMA_VENV="${LLAMA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pumsearch/llama-cpp-server-venv}"
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-llama-cpp-python==0.3.36}"
PORT="${PORT:-8731}"
PROXY_PORT=$((PORT + 1))
BUDGET="${BUDGET:-4}"
MAX_TOKENS="${MAX_TOKENS:-192}"
OUT="${OUT:-$(mktemp -d -t pumsearch-real-servers.XXXXXX)}"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1  # no model hub: the tokenizer comes from the GGUF the server names
mkdir -p "$OUT"

# -- the server's venv ---------------------------------------------------------------------------
if ! "$LLAMA_VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "installing $LLAMA_CPP_PYTHON[server] into $LLAMA_VENV (compiles llama.cpp; log: $OUT/install.log)"
    python3 -m venv "$LLAMA_VENV"
    # the multimodal library is not needed to serve a text model, and is a third of the compile
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        nice -n 10 "$LLAMA_VENV/bin/pip" install "$LLAMA_CPP_PYTHON[server]" >"$OUT/install.log" 2>&1 \
        || { echo "installing llama-cpp-python failed: see $OUT/install.log" >&2; exit 1; }
fi
echo "llama-cpp-python $("$LLAMA_VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)') in $LLAMA_VENV"

# -- the server, behind the recording proxy ------------------------------------------------------
GGUF="$("$PYTHON" -c 'from pumsearch.backends.embedded import find_gguf; print(find_gguf())')"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
nice -n 10 "$LLAMA_VENV/bin/python" -m llama_cpp.server --model "$GGUF" \
    --n_threads 1 --n_threads_batch 1 --n_ctx 4096 --host 127.0.0.1 --port "$PORT" --seed 0 --verbose true \
    >"$OUT/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "the server exited: see $OUT/server.log" >&2; exit 1; }
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "the server did not answer in 120 s" >&2; exit 1; }

proxy() {  # a fresh proxy log per run: $1 = the log
    "$PYTHON" "$here/llama_server_check.py" proxy --port "$PROXY_PORT" --upstream "http://127.0.0.1:$PORT" --log "$1" &
    pids+=($!)
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PROXY_PORT/v1/models" >/dev/null && return; sleep 0.2; done
    echo "the proxy did not start" >&2; exit 1
}
stop_proxy() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

common=(--backend openai --url "http://127.0.0.1:$PROXY_PORT" --budget "$BUDGET" --max-tokens "$MAX_TOKENS"
        --max-step-tokens 96 --seed 0 --threads 1)
QUESTION="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her friends in May. How many clips did Natalia sell altogether in April and May?"
status=0
walls=()  # strategy=seconds, in the order run
# bon and beam twice, in mirrored order, so a burst of load on the shared machine hits both alike
for strategy in bon beam dvts mcts beam bon; do
    name="$strategy.${#walls[@]}"
    proxy "$OUT/$name.proxy.jsonl"
    mark=$(wc -l <"$OUT/server.log")
    "$PUMSEARCH" solve "$QUESTION" --answer 72 --strategy "$strategy" --scorer verifier "${common[@]}" \
        --tree-out "$OUT/$name.tree.json" --json >"$OUT/$name.record.json" 2>"$OUT/$name.stderr" \
        || { echo "  $strategy: solve failed (exit $?): $(tail -1 "$OUT/$name.stderr")"; status=1; stop_proxy; continue; }
    walls+=("$strategy=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["counters"]["wall_time"])' \
        "$OUT/$name.record.json")")
    stop_proxy
    tail -n +"$((mark + 1))" "$OUT/server.log" >"$OUT/$name.server.log"
    "$PYTHON" "$here/llama_server_check.py" check --records "$OUT/$name.record.json" \
        --proxy-log "$OUT/$name.proxy.jsonl" --server-log "$OUT/$name.server.log" || status=1
done

# a small run: three GSM8K problems, searched together (the server still gets one request at a time)
head -3 "$("$PYTHON" -c 'import pumsearch, pathlib; print(pathlib.Path(pumsearch.__file__).parent / "data/gsm8k_test.jsonl")')" \
    >"$OUT/gsm8k3.jsonl"
proxy "$OUT/run.proxy.jsonl"
mark=$(wc -l <"$OUT/server.log")
if "$PUMSEARCH" run --dataset "$OUT/gsm8k3.jsonl" --out "$OUT/run" --strategy beam --scorer verifier \
        "${common[@]}" >"$OUT/run.stdout" 2>"$OUT/run.stderr"; then
    stop_proxy
    tail -n +"$((mark + 1))" "$OUT/server.log" >"$OUT/run.server.log"
    "$PYTHON" "$here/llama_server_check.py" check --records "$OUT/run/records.jsonl" \
        --proxy-log "$OUT/run.proxy.jsonl" --server-log "$OUT/run.server.log" || status=1
else
    echo "  run: failed (exit $?): $(tail -1 "$OUT/run.stderr")"; status=1; stop_proxy
fi

"$PYTHON" - "${walls[@]}" <<'PY'
import sys
from collections import defaultdict
wall = defaultdict(list)
for arg in sys.argv[1:]:
    strategy, seconds = arg.split("=")
    wall[strategy].append(float(seconds))
print("search wall seconds:", "; ".join(f"{k} {' + '.join(f'{v:.1f}' for v in vs)}" for k, vs in wall.items()))
if wall["bon"] and wall["beam"]:
    print(f"beam/bon = {sum(wall['beam']) / sum(wall['bon']):.2f}")
PY
echo "outputs in $OUT"
exit "$status"
