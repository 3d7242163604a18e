#!/usr/bin/env bash
# Abliteration trial timing on a Qwen2.5-0.5B-shaped random model (bf16 safetensors), the
# benchmark the editing issue asks for on the GPU machine: restore from the weight cache vs
# re-reading the model file, and each trial split into reset / edit / refusal generation / KL.
# Needs python3 with torch + transformers. Usage: bench/ablate_device.sh LATHE_BINARY OUT_DIR [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
LATHE="$1"; OUT="$2"; THREADS="${3:-0}"
mkdir -p "$OUT"
MODEL=/tmp/lathe-bench-qwen2.5-0.5b
[ -f "$MODEL/config.json" ] || python3 bench/make_random_hf.py --shape qwen2.5-0.5b --out "$MODEL" \
  --tokenizer-dir data/tokenizers/qwen3 >"$OUT/make_model.json"
rm -f "$OUT/ablate.jsonl"
# Full default validation sets (39 harmful prompts x 100 new tokens, 100 harmless prompts),
# 64 training prompts per side for the directions, 4 random trials.
"$LATHE" ablate "$MODEL" --trials 4 --startup 4 --train-limit 64 -t "$THREADS" --bench-restore \
  --journal "$OUT/ablate.jsonl" --plot "$OUT/ablate.svg" >"$OUT/ablate.out" 2>"$OUT/ablate.err"
python3 - "$OUT/ablate.jsonl" "$OUT/ablate.err" <<'PY'
import json, re, sys
trials = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"trial"' in l.replace(" ", "")]
err = open(sys.argv[2]).read()
restore = re.search(r"from the cache ([0-9.]+) ms, re-reading the model file ([0-9.]+) ms", err)
cache = re.search(r"weight cache: .*", err)
print("| ablation (Qwen2.5-0.5B shape, bf16, CPU) | value |")
print("|---|---|")
if cache: print(f"| {cache.group(0)} | |")
if restore: print(f"| restore all edited matrices: cache / re-read file | {restore.group(1)} ms / {restore.group(2)} ms |")
for key in ("reset_s", "edit_s", "refusals_s", "kl_s"):
    vals = [t["extra"][key] for t in trials]
    print(f"| trial {key[:-2]} (mean of {len(vals)}) | {1e3 * sum(vals) / len(vals):.1f} ms |")
print(f"| trial total (mean) | {sum(t['seconds'] for t in trials) / len(trials):.2f} s |")
PY
