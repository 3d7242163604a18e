#!/usr/bin/env bash
# `lathe serve` against llama.cpp's llama-server on this machine's CPU or GPU, under the same load
# (bench/serve_load.py), one server after the other (never both at once), then one comparison
# table. Results go to docs/PERFORMANCE.md ("lathe serve vs llama-server").
#
#   bench/serve_vs_llama_server.sh [OUT_DIR]   (default: serve-out; CPU: ~10-15 minutes on 2 cores)
#
# Environment (defaults in brackets):
#   DEVICE [cpu] or cuda: both servers on the GPU (lathe --device cuda, llama-server -ngl 999; on
#   the GPU machine scripts/gpu-check.sh's serve stage sets this up)
#   MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf]   LATHE [build-cpu/lathe]   LLAMA_SERVER [CPU: built
#   by bench/llama_server_cpu.sh; CUDA: required]   PARALLEL [16] sequences at once   CTX [1024] tokens per sequence
#   THREADS [2]   PROMPTS [32] per run   CONCURRENCY ["1 4 16"]   RATES ["0.5 1"] Poisson req/s
#   QUIET_LOAD [0.7] / QUIET_WAIT [600]: before lathe bench and each server's runs, wait until
#   the 1-minute load average is below QUIET_LOAD, at most QUIET_WAIT seconds for the three waits
#   together, then measure anyway (the table prints the load average each part started at)   RUN_LIMIT [900] seconds for one server's runs
#
# The servers:
#   lathe serve -m MODEL --parallel P -c CTX -t THREADS            (-c is per sequence)
#   llama-server -m MODEL --parallel P -c P*CTX -t THREADS --cont-batching
#     (llama-server's -c is the whole KV cache, which it splits across its P slots, so P*CTX
#     gives each slot CTX tokens, as lathe's slots have.)
# The load (the same seeded request set for both; see bench/serve_load.py): prompts of 50-300
# words (log-normal, mean 120), outputs of 32-128 tokens (log-normal, mean 64, ignore_eos so each
# request generates exactly what it asks), greedy, streamed chat completions; closed loop at
# each CONCURRENCY, then Poisson arrivals at each RATE.
# Also lathe's single-stream decode, `lathe bench -m MODEL -p 0 -n 128 -r 3 -t THREADS`, beside
# lathe serve's concurrency-1 TPOT (what the server adds per token for one stream).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-serve-out}"
DEVICE="${DEVICE:-cpu}"
[ "$DEVICE" = cpu ] || [ "$DEVICE" = cuda ] || { printf 'error: DEVICE=%s: use cpu or cuda\n' "$DEVICE" >&2; exit 1; }
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LATHE_SRC="${LATHE:-$ROOT/build-cpu/lathe}"
PARALLEL="${PARALLEL:-16}" CTX="${CTX:-1024}" THREADS="${THREADS:-2}" PROMPTS="${PROMPTS:-32}"
CONCURRENCY="${CONCURRENCY:-1 4 16}" RATES="${RATES:-0.5 1}"
QUIET_LOAD="${QUIET_LOAD:-0.7}" QUIET_WAIT="${QUIET_WAIT:-600}" RUN_LIMIT="${RUN_LIMIT:-900}"
PY="${PYTHON:-python3}"
LOAD_ARGS=(--num-prompts "$PROMPTS" --seed 0 --input-mean 120 --input-sigma 0.5 --input-min 50 --input-max 300
  --output-mean 64 --output-sigma 0.5 --output-min 32 --max-output 128 --temperature 0 --warmup 1 --timeout 300)
# shellcheck disable=SC2206
LOAD_ARGS+=(--concurrency $CONCURRENCY --request-rate $RATES)

log() { printf '[serve] %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
[ -f "$MODEL" ] || die "model $MODEL not found (scripts/fetch-model.sh fetches the default one)"
[ -x "$LATHE_SRC" ] || die "lathe binary $LATHE_SRC not found (build it, or set LATHE=...)"
command -v curl >/dev/null || die "curl is needed to poll /health"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# A private copy of lathe: a rebuild of the tree during the run cannot swap the binary under it.
cp "$LATHE_SRC" "$OUT/lathe"
LATHE="$OUT/lathe"
if [ "$DEVICE" = cuda ]; then
  [ -n "${LLAMA_SERVER:-}" ] || die "DEVICE=cuda needs LLAMA_SERVER (a CUDA build: bench/llama_cpp_cuda.sh build)"
else
  LLAMA_SERVER="${LLAMA_SERVER:-$("$ROOT/bench/llama_server_cpu.sh")}"
fi
[ -x "$LLAMA_SERVER" ] || die "llama-server $LLAMA_SERVER not found"

# llama-server's flag names change between versions: take them from its --help.
"$LLAMA_SERVER" --help >"$OUT/llama-server-help.txt" 2>&1 || true
has_flag() { grep -qE -- "(^|[ ,])$1([ ,=]|$)" "$OUT/llama-server-help.txt"; }
LLAMA_ARGS=(-m "$MODEL" -c $((PARALLEL * CTX)) -t "$THREADS" --host 127.0.0.1)
if has_flag --parallel; then LLAMA_ARGS+=(--parallel "$PARALLEL"); else LLAMA_ARGS+=(-np "$PARALLEL"); fi
if has_flag --cont-batching; then LLAMA_ARGS+=(--cont-batching); else log "llama-server has no --cont-batching flag (on by default?)"; fi
LATHE_ARGS=(serve -m "$MODEL" --parallel "$PARALLEL" -c "$CTX" -t "$THREADS" --host 127.0.0.1)
BENCH_DEVICE=()
if [ "$DEVICE" = cuda ]; then
  LATHE_ARGS+=(--device cuda); LLAMA_ARGS+=(-ngl 999); BENCH_DEVICE=(--device cuda)
fi

loadavg() { cut -d' ' -f1 /proc/loadavg; }
QUIET_DEADLINE=$((SECONDS + QUIET_WAIT))  # one budget for all the waits of the script
wait_quiet() {
  local start=$SECONDS la
  while :; do
    la="$(loadavg)"
    awk -v a="$la" -v b="$QUIET_LOAD" 'BEGIN { exit !(a < b) }' && break
    if (( SECONDS >= QUIET_DEADLINE )); then
      log "load average still $la, the ${QUIET_WAIT}s of waiting are spent: measuring anyway"; break
    fi
    sleep 10
  done
  log "load average $la (waited $((SECONDS - start))s)"
  echo "$la"
}

# shellcheck source=bench/serve_common.sh
source "$ROOT/bench/serve_common.sh"

# run_server NAME COMMAND...: starts the server (log: OUT/NAME.log), waits for /health, runs the load, stops it.
run_server() {
  local name="$1" port; shift
  port="$(free_port)"
  "$@" --port "$port" >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  local start=$SECONDS
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$OUT/$name.log" >&2; die "$name exited before it was ready"; }
    (( SECONDS - start < 120 )) || { stop_server; die "$name not healthy after 120 s (log: $OUT/$name.log)"; }
    sleep 0.5
  done
  log "$name ready on port $port after $((SECONDS - start)) s; running the load"
  local rc=0
  timeout "$RUN_LIMIT" "$PY" "$ROOT/bench/serve_load.py" --base-url "http://127.0.0.1:$port" --label "$name" \
    "${LOAD_ARGS[@]}" --json "$OUT/$name.json" | tee "$OUT/$name.txt" || rc=$?
  (( rc == 0 )) || log "$name: serve_load.py exited with $rc (see $OUT/$name.txt and $OUT/$name.log)"
  kill -0 "$SERVER_PID" 2>/dev/null || log "$name: the server died during the load (log: $OUT/$name.log)"
  stop_server
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
  [ "$DEVICE" = cuda ] && echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  echo "lathe: $("$LATHE" --version 2>&1 | head -1), git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "(working tree may differ), sha256 $(sha256sum "$LATHE" | cut -c1-12)"
  echo "llama-server: $("$LLAMA_SERVER" --version 2>&1 | grep -m1 -i version || echo '?') ($LLAMA_SERVER)"
  echo "model: $MODEL"
  echo "lathe ${LATHE_ARGS[*]}"
  echo "llama-server ${LLAMA_ARGS[*]}"
  echo "load: ${LOAD_ARGS[*]}"
} | tee "$OUT/setup.txt" >&2

LA_BENCH="$(wait_quiet)"
log "lathe bench (single-stream decode)"
"$LATHE" bench -m "$MODEL" -p 0 -n 128 -r 3 -t "$THREADS" "${BENCH_DEVICE[@]}" --json >"$OUT/lathe-bench.json"
LA_LATHE="$(wait_quiet)"
run_server lathe "$LATHE" "${LATHE_ARGS[@]}"
LA_LLAMA="$(wait_quiet)"
run_server llama-server "$LLAMA_SERVER" "${LLAMA_ARGS[@]}"

LA_BENCH="$LA_BENCH" LA_LATHE="$LA_LATHE" LA_LLAMA="$LA_LLAMA" "$PY" - "$OUT" <<'EOF' | tee "$OUT/comparison.md"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None
a, b, bench = load("lathe.json"), load("llama-server.json"), load("lathe-bench.json")
def runs(d):
    return {r["label"].split(" ", 1)[1]: r["metrics"] for r in d["runs"]} if d else {}
ra, rb = runs(a), runs(b)
ms = lambda x: "-" if x is None else f"{x * 1000:.0f}" if x >= 0.1 else f"{x * 1000:.1f}"
num = lambda x: "-" if x is None else f"{x:.1f}"
def pair(key, sub, fmt):
    return lambda ma, mb: f"{fmt(ma[key][sub] if ma else None)} / {fmt(mb[key][sub] if mb else None)}"
cols = [("out tok/s", lambda ma, mb: f"{num(ma and ma['output_throughput'])} / {num(mb and mb['output_throughput'])}"),
        ("ratio", lambda ma, mb: f"{ma['output_throughput'] / mb['output_throughput']:.2f}x"
            if ma and mb and ma["output_throughput"] and mb["output_throughput"] else "-"),
        ("TTFT p50", pair("ttft_s", "p50", ms)), ("TTFT p99", pair("ttft_s", "p99", ms)),
        ("TPOT p50", pair("tpot_s", "p50", ms)), ("TPOT p99", pair("tpot_s", "p99", ms)),
        ("ITL p99", pair("itl_s", "p99", ms)),
        ("failed, length mismatch", lambda ma, mb: " / ".join(
            "-" if m is None else f"{m['failed']}, {m['length_mismatch']}" for m in (ma, mb)))]
print("lathe / llama-server per load (times in ms; output tokens/s over the run; p50 / p99 over requests,")
print("ITL over every gap between content chunks)\n")
print("| load | " + " | ".join(c for c, _ in cols) + " |")
print("|---|" + "---:|" * len(cols))
for load in list(dict.fromkeys(list(ra) + list(rb))):
    ma, mb = ra.get(load), rb.get(load)
    print(f"| {load} | " + " | ".join(f(ma, mb) for _, f in cols) + " |")
print(f"\n1-minute load average at the start: lathe bench {os.environ['LA_BENCH']}, "
      f"lathe serve {os.environ['LA_LATHE']}, llama-server {os.environ['LA_LLAMA']}")
for name, d in (("lathe", a), ("llama-server", b)):
    if d:
        m0 = d["runs"][0]["metrics"]
        print(f"{name}: mean prompt {m0['prompt_tokens_mean']:.1f} tokens (server count), "
              f"cached prompt tokens per run: {[r['metrics']['cached_prompt_tokens'] for r in d['runs']]}, "
              f"tokens per content chunk: {[round(r['metrics']['tokens_per_chunk'] or 0, 2) for r in d['runs']]}")
if bench and "concurrency 1" in ra:
    tg = bench[0]
    tpot = ra["concurrency 1"]["tpot_s"]
    print(f"\nsingle stream: lathe bench tg128 {tg['avg_ts']:.1f} ± {tg['stddev_ts']:.1f} tok/s "
          f"= {1000 / tg['avg_ts']:.2f} ms/token; lathe serve concurrency 1 TPOT mean {tpot['mean'] * 1000:.2f} ms "
          f"(p50 {tpot['p50'] * 1000:.2f}) = {1 / tpot['mean']:.1f} tok/s")
EOF
log "results in $OUT"
