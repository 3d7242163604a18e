#!/usr/bin/env bash
# lathe bench vs llama.cpp (llama-cpp-python, same machine, same threads, same run) on the default
# model's Q4_1 file and its Q8_0/F16 variants (scripts/make-variants.sh), alternating the two
# engines per model so that both see the same machine state. Writes JSON per run into OUT_DIR and
# prints a table last.
# Usage: bench/cpu_vs_llama_cpp.sh [THREADS=2] [REPS=5] [OUT_DIR=bench-out]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
reps=${2:-5}
out=${3:-bench-out}
mkdir -p "$out"
lathe=${LATHE_BIN:-build/lathe}
python=${LATHE_PYTHON:-.venv/bin/python}
for type in Q4_1 Q8_0 F16; do
  model=models/SmolLM2-135M-Instruct.$type.gguf
  [[ -f $model ]] || { echo "error: $model missing; run scripts/make-variants.sh" >&2; exit 1; }
  echo "== $type: lathe" >&2
  "$lathe" bench -m "$model" -p 512 -n 128 -r "$reps" -t "$threads" --json > "$out/lathe-$type.json"
  echo "== $type: llama.cpp" >&2
  "$python" bench/llama_cpp_bench.py --model "$model" --p 512 --n 128 --r "$reps" --threads "$threads" \
    --json "$out/llama-$type.json" > /dev/null
done
"$python" - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| model | test | lathe t/s | llama.cpp t/s | ratio |")
print("|---|---|---:|---:|---:|")
for t in ("Q4_1", "Q8_0", "F16"):
    ours = {r["test"]: r for r in json.loads((out / f"lathe-{t}.json").read_text())}
    theirs = {r["test"]: r for r in json.loads((out / f"llama-{t}.json").read_text())}
    for test in ("pp512", "tg128"):
        a, b = ours[test], theirs[test]
        print(f"| {t} | {test} | {a['avg_ts']:.1f} ± {a['stddev_ts']:.1f} | {b['avg_ts']:.1f} ± {b['stddev_ts']:.1f} "
              f"| {a['avg_ts'] / b['avg_ts']:.2f}x |")
PY
