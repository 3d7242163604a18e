#!/usr/bin/env bash
# Layer streaming's speed (docs/STREAMING.md) on the GPU machine: `lathe bench` on one model fully
# resident, then with every layer streamed through two slots (LATHE_CUDA_STREAM_LAYERS=all) and
# with each --vram-budget given, same binary, same call. Prints one row per run: tg/pp tokens/s,
# layers streamed, the measured pinned host-to-device rate and the floor it sets per pass.
# Usage: bench/stream_bench.sh LATHE MODEL [BUDGET...]    (e.g. build-gpu/lathe /tmp/qwen05 600M)
set -uo pipefail
LATHE="$1" MODEL="$2"; shift 2
ARGS=(bench -m "$MODEL" --device cuda -p 512 -n 64 -r 3 --json)
row() {  # label, json file
  python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1:]
try:
    rows = json.load(open(path))
except Exception as e:
    print(f"| {label} | failed: {e} |"); sys.exit()
by = {r["test"]: r for r in rows}
r = rows[0]
tg = by.get("tg64", {}).get("avg_ts", 0)
pp = by.get("pp512", {}).get("avg_ts", 0)
floor = r.get("floor_s_per_pass", 0)
print(f"| {label} | {r['streamed_layers']}/{r['n_layers']} | {r['device_weight_bytes']/2**20:.0f} MiB | "
      f"{pp:.1f} | {tg:.2f} | {1/tg if tg else 0:.4f} | {r.get('h2d_gbps', 0):.1f} | {floor:.4f} | "
      f"{(1/tg)/floor if tg and floor else 0:.2f} | {r.get('pinning_seconds', 0):.2f} |")
PY
}
echo "| run | streamed | weights on GPU | pp512 t/s | tg64 t/s | s/token | H2D GB/s | floor s/pass | s/token / floor | pinning s |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
"$LATHE" "${ARGS[@]}" >/tmp/stream_resident.json 2>/tmp/stream_resident.err; row resident /tmp/stream_resident.json
LATHE_CUDA_STREAM_LAYERS=all "$LATHE" "${ARGS[@]}" >/tmp/stream_all.json 2>/tmp/stream_all.err
row "every layer streamed" /tmp/stream_all.json
for budget in "$@"; do
  "$LATHE" "${ARGS[@]}" --vram-budget "$budget" >/tmp/stream_b.json 2>/tmp/stream_b.err || tail -2 /tmp/stream_b.err
  row "--vram-budget $budget" /tmp/stream_b.json
done
grep -h "^streaming" /tmp/stream_all.err /tmp/stream_b.err 2>/dev/null | head -3
