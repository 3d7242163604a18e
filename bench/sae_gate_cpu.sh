#!/usr/bin/env bash
# The SAE gate's decode cost on the CPU, interleaved so that the machine's drift hits every arm
# alike: ROUNDS rounds of lathe bench tg128 without a gate, with a standard and with a TopK gate
# (random SAEs of 16,384 features, bench/make_random_sae.py), then per round the gated tg128 over
# the ungated one, with a BCa interval from `lathe stats bootstrap` (docs/PERFORMANCE.md).
#   bench/sae_gate_cpu.sh [ROUNDS]     (run from the repository root after the release build)
set -euo pipefail
ROUNDS="${1:-12}"
[ "$ROUNDS" -ge 2 ] 2>/dev/null || { echo "error: ROUNDS must be a number >= 2 (an interval needs several rounds), got '$ROUNDS'" >&2; exit 1; }
LATHE="${LATHE:-build/lathe}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
PY="${PY:-.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for arch in standard topk; do
  "$PY" bench/make_random_sae.py "$WORK/sae_$arch" --d-in 576 --d-sae 16384 --architecture "$arch" \
    --hook blocks.15.hook_resid_post >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for mode in none standard topk; do
    args=(); [ "$mode" = none ] || args=(--sae "$WORK/sae_$mode" --sae-features 1,2:-3,3*0.5 --sae-clamp-everywhere)
    "$LATHE" bench -m "$MODEL" -p 0 -n 128 -r 3 -t 2 "${args[@]}" --json 2>/dev/null >"$WORK/run.json"
    "$PY" -c "import json,sys; print(f\"{next(r['avg_ts'] for r in json.load(open(sys.argv[1])) if r['test'] == 'tg128'):.3f}\")" \
      "$WORK/run.json" >>"$WORK/tg_$mode.txt"
  done
  echo "round $round: $(tail -n1 "$WORK/tg_none.txt") / $(tail -n1 "$WORK/tg_standard.txt") / $(tail -n1 "$WORK/tg_topk.txt") tok/s (none / standard / topk)"
done
for mode in standard topk; do
  paste "$WORK/tg_none.txt" "$WORK/tg_$mode.txt" | awk '{printf "%.6f\n", $2 / $1}' >"$WORK/ratio_$mode.txt"
  echo "== $mode gate: tg128 with the gate / without, per round"
  "$LATHE" stats bootstrap "$WORK/ratio_$mode.txt" --resamples 20000 --seed 1
done
