#!/usr/bin/env bash
# What `lathe serve` adds per generated token for one stream, against `lathe bench`'s decode of
# the same model on the same device, and where it comes from:
#   - lathe bench tg128 on an empty context and at -d DEPTH (a chat's position after its prompt);
#   - lathe serve at each --parallel in PARALLELS, one request at a time (bench/serve_load.py,
#     the load of bench/serve_vs_llama_server.sh at concurrency 1): TPOT as the client sees it
#     (gaps between streamed chunks) and as the server measures it (/metrics'
#     lathe_time_per_output_token_seconds: the decode loop alone, no HTTP or client).
#
#   bench/serve_overhead.sh [OUT_DIR]   (default: serve-overhead)
#
# Environment (defaults in brackets): MODEL [models/SmolLM2-135M-Instruct.Q4_1.gguf]
#   LATHE [build-cpu/lathe]   DEVICE [cpu] or cuda   THREADS [2]   PARALLELS ["1 16"]   CTX [1024]
#   PROMPTS [16] requests per server   DEPTH [176]: the load's mean prompt (~143 tokens) plus half
#   its mean output (64)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-serve-overhead}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LATHE="${LATHE:-$ROOT/build-cpu/lathe}"
DEVICE="${DEVICE:-cpu}" THREADS="${THREADS:-2}" PARALLELS="${PARALLELS:-1 16}" CTX="${CTX:-1024}"
PROMPTS="${PROMPTS:-16}" DEPTH="${DEPTH:-176}"
PY="${PYTHON:-python3}"
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
log() { printf '[overhead] %s\n' "$*" >&2; }
[ -f "$MODEL" ] || [ -d "$MODEL" ] || die "model $MODEL not found"
[ -x "$LATHE" ] || die "lathe binary $LATHE not found (build it, or set LATHE=...)"
command -v curl >/dev/null || die "curl is needed"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"

for depth in 0 "$DEPTH"; do
  log "lathe bench tg128 at depth $depth"
  "$LATHE" bench -m "$MODEL" -p 0 -n 128 -d "$depth" -r 3 -t "$THREADS" --device "$DEVICE" --json \
    >"$OUT/bench_d$depth.json"
done

# shellcheck source=bench/serve_common.sh
source "$ROOT/bench/serve_common.sh"

for parallel in $PARALLELS; do
  port="$(free_port)"
  "$LATHE" serve -m "$MODEL" --parallel "$parallel" -c "$CTX" -t "$THREADS" --device "$DEVICE" --host 127.0.0.1 \
    --port "$port" >"$OUT/serve_p$parallel.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -sf "http://127.0.0.1:$port/health" >/dev/null || die "lathe serve --parallel $parallel did not start (log: $OUT/serve_p$parallel.log)"
  log "lathe serve --parallel $parallel: $PROMPTS requests one at a time"
  "$PY" "$ROOT/bench/serve_load.py" --base-url "http://127.0.0.1:$port" --label "p$parallel" \
    --num-prompts "$PROMPTS" --seed 0 --input-mean 120 --input-sigma 0.5 --input-min 50 --input-max 300 \
    --output-mean 64 --output-sigma 0.5 --output-min 32 --max-output 128 --temperature 0 --warmup 1 \
    --concurrency 1 --json "$OUT/load_p$parallel.json" >"$OUT/load_p$parallel.txt"
  curl -sf "http://127.0.0.1:$port/metrics" >"$OUT/metrics_p$parallel.txt"
  stop_server
done

"$PY" - "$OUT" "$DEPTH" "$PARALLELS" <<'EOF' | tee "$OUT/overhead.md"
import json, os, sys
out, depth, parallels = sys.argv[1], sys.argv[2], sys.argv[3].split()
ms_of = lambda name: 1000 / json.load(open(os.path.join(out, name)))[0]["avg_ts"]
d0, dd = ms_of("bench_d0.json"), ms_of(f"bench_d{depth}.json")
print(f"lathe bench tg128: {d0:.3f} ms/token on an empty context, {dd:.3f} ms/token at depth {depth}\n")
print("| lathe serve | client TPOT mean (p50) | vs bench d0 | vs bench d%s | server TPOT mean | vs bench d%s |" % (depth, depth))
print("|---|---:|---:|---:|---:|---:|")
for p in parallels:
    m = json.load(open(os.path.join(out, f"load_p{p}.json")))["runs"][0]["metrics"]["tpot_s"]
    total = count = 0.0
    for line in open(os.path.join(out, f"metrics_p{p}.txt")):
        if line.startswith("lathe_time_per_output_token_seconds_sum"): total = float(line.split()[-1])
        if line.startswith("lathe_time_per_output_token_seconds_count"): count = float(line.split()[-1])
    server = 1000 * total / count if count else float("nan")
    client = 1000 * m["mean"]
    print(f"| --parallel {p} | {client:.3f} ({1000 * m['p50']:.3f}) | {100 * (client / d0 - 1):+.1f}% | "
          f"{100 * (client / dd - 1):+.1f}% | {server:.3f} | {100 * (server / dd - 1):+.1f}% |")
EOF
log "results in $OUT"
