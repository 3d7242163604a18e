#!/usr/bin/env bash
# Decode speed against the thread count, on an idle machine and under a competing CPU load (N busy
# loops), for one or more lathe binaries measured side by side (e.g. before and after a change):
#   bench/thread_scaling.sh [--threads "1 2 4 16"] [--loads "0 1 2"] [-n 32] [-r 3] [-m MODEL] LATHE [LATHE2 ...]
# Prints one markdown row per (load, threads): tg tokens/s ± stddev of each binary, alternating
# the binaries within each row so that drifts of the machine hit them alike. A run that takes
# longer than 300 s is reported as "> 300 s".
set -euo pipefail
cd "$(dirname "$0")/.."
threads="1 2 4 16"; loads="0 1 2"; n=32; reps=3; model=models/SmolLM2-135M-Instruct.Q4_1.gguf
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --loads) loads="$2"; shift 2 ;;
    -n) n="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    -m) model="$2"; shift 2 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "error: name at least one lathe binary" >&2; exit 2; }
[ -f "$model" ] || { echo "error: model $model not found (scripts/fetch-model.sh fetches the default)" >&2; exit 2; }
busy=()
stop_load() { for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done; busy=(); }
trap stop_load EXIT
echo "| busy loops | -t | $(printf '%s | ' "$@")"
echo "|---|---|$(printf -- '---|%.0s' "$@")"
for load in $loads; do
  for ((i = 0; i < load; i++)); do (while :; do :; done) & busy+=($!); done
  sleep 1
  for t in $threads; do
    cells=""
    for exe in "$@"; do
      r=$(timeout 300 "$exe" bench -m "$model" -p 0 -n "$n" -r "$reps" -t "$t" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin)[0]; print(f\"{d['avg_ts']:.1f} ± {d['stddev_ts']:.1f}\")" \
        2>/dev/null) || r="> 300 s"
      cells+="$r | "
    done
    echo "| $load | $t | $cells"
  done
  stop_load
done
