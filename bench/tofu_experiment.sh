#!/usr/bin/env bash
# The TOFU-style experiment of issue 24 on the default model, with lathe alone (CPU):
#   1. facts about invented people (bench/tofu/make_facts.py: 40 people x 5 facts by default);
#   2. fine-tune a LoRA on all of them until the model answers them;
#   3. unlearn the first 10% of the people with NPO and with GradDiff (each from the fine-tuned
#      model: --lora merges it first, the new adapter goes on top);
#   4. score every model on the forget set, the retain set and held-out general text
#      (lathe score: answer probability, token accuracy, exact match, perplexity).
# Prints a Markdown table and leaves every file (data, adapters, logs, scores) in OUT.
# Usage: bench/tofu_experiment.sh [OUT] ; knobs: MODEL, LATHE, PEOPLE, FT_EPOCHS, FT_LR,
#        UL_EPOCHS, UL_LR, THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build-cpu/tofu}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LATHE="${LATHE:-build-cpu/lathe}"
PEOPLE="${PEOPLE:-40}"
FT_EPOCHS="${FT_EPOCHS:-3}"; FT_LR="${FT_LR:-1e-3}"
UL_EPOCHS="${UL_EPOCHS:-5}"; UL_LR="${UL_LR:-1e-4}"
THREADS="${THREADS:-2}"
mkdir -p "$OUT"
python3 bench/tofu/make_facts.py "$OUT/data" --people "$PEOPLE"

start=$SECONDS
[ -f "$OUT/ft.gguf" ] || "$LATHE" finetune "$MODEL" --data "$OUT/data/all.jsonl" --epochs "$FT_EPOCHS" --lr "$FT_LR" \
  --warmup 10 --seed 1 -o "$OUT/ft.gguf" --log "$OUT/ft.log.jsonl" --checkpoint "$OUT/ft.ckpt" --force \
  $( [ -f "$OUT/ft.ckpt" ] && echo --resume )
echo "fine-tuning: $((SECONDS - start)) s"
for objective in npo graddiff; do
  start=$SECONDS
  [ -f "$OUT/$objective.gguf" ] || "$LATHE" unlearn "$MODEL" --lora "$OUT/ft.gguf" --forget "$OUT/data/forget.jsonl" \
    --retain "$OUT/data/retain.jsonl" --objective "$objective" --epochs "$UL_EPOCHS" --lr "$UL_LR" --seed 1 \
    -o "$OUT/$objective.gguf" --log "$OUT/$objective.log.jsonl" --force
  echo "unlearning ($objective): $((SECONDS - start)) s"
done

score() {  # NAME SET LORA...
  local name="$1" set="$2"; shift 2
  local loras=(); for l in "$@"; do loras+=(--lora "$l"); done
  "$LATHE" score "$MODEL" --data "$OUT/data/$set.jsonl" "${loras[@]}" -t "$THREADS" \
    --json "$OUT/score-$name-$set.json" --force >/dev/null 2>"$OUT/score-$name-$set.err"
}
for set in forget retain heldout; do
  score base "$set"
  score finetuned "$set" "$OUT/ft.gguf"
  score npo "$set" "$OUT/ft.gguf" "$OUT/npo.gguf"
  score graddiff "$set" "$OUT/ft.gguf" "$OUT/graddiff.gguf"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def s(name, set_): return json.load(open(f"{out}/score-{name}-{set_}.json"))
print("| model | forget: answer prob. | forget: exact | retain: answer prob. | retain: exact | retain: token acc. | held-out perplexity |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name in ["base", "finetuned", "npo", "graddiff"]:
    f, r, h = s(name, "forget"), s(name, "retain"), s(name, "heldout")
    print(f"| {name} | {f['mean_probability']:.3f} | {f['exact_match']:.2f} | {r['mean_probability']:.3f} | "
          f"{r['exact_match']:.2f} | {r['token_accuracy']:.3f} | {h['perplexity']:.2f} |")
PY
