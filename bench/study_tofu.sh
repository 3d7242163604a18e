#!/usr/bin/env bash
# The fine-tune-then-forget experiment of bench/tofu_experiment.sh as a study (issue 25): arms
# base (the fine-tuned model), NPO, GradDiff, an abliteration-style projection and two SAE gates (a
# TopK SAE trained here with lathe sae-train, its features chosen by the study: by activation and
# by attribution), x 3 seeds,
# evaluated on the forget facts and part of the retain facts in English and in Spanish (never
# trained on: cross-lingual leakage) and on held-out text; then the report checked by an
# independent script with scipy and statsmodels (tests/oracle/study_oracle.py).
#   bench/study_tofu.sh [OUT]     (default build-cpu/study-tofu; ~15-25 minutes on 2 cores)
# Knobs: MODEL, LATHE, THREADS, FT (a fine-tuned adapter to reuse, else one is trained: FT_EPOCHS,
# FT_LR as in bench/tofu_experiment.sh), PYTHON (with scipy + statsmodels; default .venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${1:-build-cpu/study-tofu}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LATHE="${LATHE:-build-cpu/lathe}"
THREADS="${THREADS:-2}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
python3 bench/tofu/make_facts.py "$OUT/data" --people 40
head -n 40 "$OUT/data/retain.jsonl" >"$OUT/data/retain_eval.jsonl"
head -n 40 "$OUT/data/retain_es.jsonl" >"$OUT/data/retain_eval_es.jsonl"

FT="${FT:-$OUT/ft.gguf}"
if [ ! -f "$FT" ]; then
  "$LATHE" finetune "$MODEL" --data "$OUT/data/all.jsonl" --epochs "${FT_EPOCHS:-5}" --lr "${FT_LR:-1e-3}" \
    --warmup 10 --seed 1 -t "$THREADS" -o "$FT" --log "$OUT/ft.log.jsonl"
fi

# A TopK SAE of the fine-tuned model's stream at layer 15, on the training facts (for the sae arm).
if [ ! -f "$OUT/sae-l15/cfg.json" ]; then
  "$LATHE" sae-train "$MODEL" --lora "$FT" --hook blocks.15.resid_post --data "$OUT/data/all.jsonl" -o "$OUT/sae-l15" \
    --d-sae 2048 --k 16 --tokens 16384 --steps 800 --lr 5e-4 --dead-tokens 16384 --seed 1 --skip-first 1 -t "$THREADS"
fi

sed -e "s#@MODEL@#$ROOT/$MODEL#" -e "s#@FT@#$FT#" bench/study/tofu.toml >"$OUT/tofu.toml"
start=$SECONDS
rc=0
"$LATHE" study "$OUT/tofu.toml" -o "$OUT/study" -t "$THREADS" >"$OUT/report.stdout.md" || rc=$?
echo "study: $((SECONDS - start)) s, exit $rc"
"$PY" tests/oracle/study_oracle.py "$OUT/study"
cat "$OUT/study/report.md"
