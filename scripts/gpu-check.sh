#!/usr/bin/env bash
# Builds lathe with CUDA on the GPU machine, checks it and benchmarks it in one call, and prints a
# short table last. Stages (LATHE_GPU_STAGES, comma-separated; default: all but big8):
#   build      CUDA build for sm_90 (only the targets the later stages need)
#   kernels    every CUDA kernel vs the CPU reference (tests/backend/cuda)
#   forward    CUDA vs CPU on whole models, hooks, batching, 100-generation memory check, layer
#              streaming vs resident (tests/forward/test_cuda_stream.cpp), batch
#              invariance of the scheduler's mixed passes (tests/forward/test_cuda_batch.cpp)
#   tiny_hf    CPU and CUDA forward vs transformers on tiny models of every architecture
#   big05      Qwen2.5-0.5B-shaped random bf16 model: logits vs transformers, HF speed, lathe bench
#   big8       the same for the Llama-3.1-8B shape (16 GB; several minutes)
#   profile05  Nsight Compute per kernel, decode and prefill of the big05 model (profile8: big8's)
#   ablate     abliteration trial timing on the 0.5B shape (CPU engine)
#   serve      lathe serve against llama.cpp's llama-server (built as for llamacpp, in the background)
#              under the same load, bench/serve_vs_llama_server.sh, on the big05/big8 models made above
#              converted to GGUF BF16 (both servers load that file): --parallel 64, closed loop at
#              1/16/64 concurrent streams and Poisson arrivals (LATHE_GPU_SERVE_PROMPTS requests, 128)
#   overhead   what lathe serve adds per token for one stream (bench/serve_overhead.sh): bench tg128
#              empty and at a chat's depth, serve at --parallel 1 and 64, client and server TPOT, on
#              the big05/big8 models made above (LATHE_GPU_SERVE_MODELS)
#   sae        the cost of an SAE feature gate (--sae): lathe bench pp512 / tg128 without a gate and
#              with random SAEs (bench/make_random_sae.py, 16384 features: standard with 3 edited
#              features, topk k=32) on the big05 model, the gate on host copies of the rows
#              (LATHE_CUDA_DEVICE_HOOKS=0) and as kernels on the device rows (the default: decode
#              stays in the captured graph)
#   invariant  the cost of --batch-invariant: pp512, tg128 and 16 x tg128 with and without it, same
#              binary, on the default model (when carried) and the big05/big8 models made above
#   matvec     decode mat-vec bandwidth per matrix of the 0.5B and 8B shapes (bench/cuda_matvec_bench.cpp)
#   llamacpp   llama.cpp CUDA (the llama-cpp-python sdist's version, built here for sm_90 while the
#              other stages run) as the same-run peer of big05/big8: each model converted to GGUF
#              BF16/Q8_0/Q4_0 and run with llama-bench (bench/llama_cpp_cuda.sh; needs
#              .gl/llama.cpp.tar.xz, made here by `bench/llama_cpp_cuda.sh pack`, carried)
#   baseline   also build an earlier version (LATHE_GPU_BASELINE, default .gl/base.tar.gz: made here by
#              `git archive --format=tar.gz -o .gl/base.tar.gz REV` and carried) and run big05/big8's
#              lathe benchmarks with it too, on the same card in the same call
# Knobs: LATHE_GPU_HF=0 (no transformers reference or speed), LATHE_GPU_HF_SPEED=0 (reference
# only; LATHE_GPU_HF_SPEED_8B for the 8B shape alone), LATHE_GPU_HF_PEERS (transformers' speed
# peers, bench/hf_peer.py --peers: default eager; eager,sdpa,compile adds PyTorch attention and
# the static cache with torch.compile), LATHE_GPU_BENCH=0 (no lathe benchmarks),
# LATHE_GPU_BIG_EXTRAS=0 (no Q8_0-KV / half-activation extras), LATHE_GPU_AB_ENV=VAR=value (decode
# again with that environment), LATHE_GPU_PASS_AB=1 (16-sequence decode at -b 129 and 512),
# LATHE_GPU_PROFILE_TYPES (the profile stages' weight types), LATHE_GPU_SERVE_MODELS (the serve
# stage's models, of those made: default "qwen05 llama8b"), LATHE_GPU_BUILD_TARGETS (the ninja
# targets of the build stage: default every one the stages use), LATHE_GPU_KERNELS=sae (the
# kernels stage runs only the SAE gate's tests), LATHE_GPU_FORWARD_FILTER (a gtest filter for the
# forward stage's test_cuda_forward), LATHE_GPU_TINY_HF_FILTER (a gtest filter for the tiny_hf stage).
# The GPU image lacks the PCRE2 and ICU headers: run `scripts/gpu-deps.sh` here first, which
# downloads Debian's packages into .deps/, and carry .deps with the call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/lathe-gpu-out}"; mkdir -p "$OUT"
STAGES="${LATHE_GPU_STAGES:-build,kernels,forward,tiny_hf,big05}"
has() { [[ ",$STAGES," == *",$1,"* ]]; }
ROWS=()  # the summary table (also appended to $OUT/summary.md as it grows, in case the call is cut off)
row() { ROWS+=("| $1 | $2 |"); echo "| $1 | $2 |" >>"$OUT/summary.md"; }
WORK=/tmp/lathe-gpu-work; mkdir -p "$WORK"
export PYTHONUNBUFFERED=1

DEPS=/tmp/lathe-deps
if [ -d .deps ]; then
  mkdir -p "$DEPS"
  for deb in .deps/*.deb; do dpkg -x "$deb" "$DEPS"; done
  # cpp-httplib's .pc names OpenSSL, zlib and Brotli as private requirements: the image has those
  # libraries but not their .pc files, and lathe links httplib dynamically, so they are dropped.
  httplib_pc="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig/cpp-httplib.pc"
  [ -f "$httplib_pc" ] && sed -i '/^Requires.private:/d' "$httplib_pc"
  export PKG_CONFIG_SYSROOT_DIR="$DEPS" PKG_CONFIG_PATH="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
row "GPU" "$GPU"
LATHE=./build-gpu/lathe
T=build-gpu/tests

if has build; then
  start=$SECONDS
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLATHE_ORACLE_PYTHON="$(command -v python3)" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  # LATHE_GPU_BUILD_TARGETS builds fewer (a short call: only what its stages run).
  targets=(${LATHE_GPU_BUILD_TARGETS:-lathe_cli test_cuda_kernels test_cuda_forward test_cuda_batch test_cuda_stream test_vs_transformers
    test_cuda_vs_hf_big test_device_layout test_ablation_cuda test_sae_cuda api_engine_budget_test lathe_bench_cuda_matvec
    lathe_bench_mixed})
  ninja -C build-gpu -j "$(nproc)" "${targets[@]}" >"$OUT/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$OUT/build.log" | head -60; exit 1; }
  row "CUDA build (sm_90)" "ok, $((SECONDS - start)) s"
fi

# llama.cpp's CUDA build takes minutes: started now, in the background, waited for after big05/big8.
LLAMA_WORK="$WORK/llama.cpp"; LLAMA_PID=""
if has llamacpp || has serve; then
  bench/llama_cpp_cuda.sh build .gl/llama.cpp.tar.xz "$LLAMA_WORK" >"$WORK/llama-build.log" 2>&1 &
  LLAMA_PID=$!
fi
# wait_llama_build: waits for that build once (the llamacpp and serve stages both need it).
LLAMA_BUILT=""
wait_llama_build() {
  [ -n "$LLAMA_BUILT" ] && { [ "$LLAMA_BUILT" = ok ]; return; }
  local start=$SECONDS
  if wait "$LLAMA_PID"; then LLAMA_BUILT=ok; row "llama.cpp CUDA build" "ok (waited $((SECONDS - start)) s after the other stages)"
  else LLAMA_BUILT=failed; row "llama.cpp CUDA build" "FAILED"; tail -30 "$WORK/llama-build.log"; status=1; fi
  cp "$WORK/llama-build.log" "$LOGS/" 2>/dev/null
  [ "$LLAMA_BUILT" = ok ]
}

BASE=""
BASE_TAR="${LATHE_GPU_BASELINE:-.gl/base.tar.gz}"
if has baseline && [ -f "$BASE_TAR" ]; then
  start=$SECONDS
  BASE_SRC=/tmp/lathe-base
  rm -rf "$BASE_SRC/src" && mkdir -p "$BASE_SRC" && tar -xzf "$BASE_TAR" -C "$BASE_SRC"
  if cmake -S "$BASE_SRC" -B "$BASE_SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA=ON \
       -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/base-configure.log" 2>&1 &&
     ninja -C "$BASE_SRC/build" -j "$(nproc)" lathe_cli test_cuda_forward >"$OUT/base-build.log" 2>&1; then
    BASE="$BASE_SRC/build/lathe"
    row "baseline build ($BASE_TAR)" "ok, $((SECONDS - start)) s"
  else
    row "baseline build ($BASE_TAR)" "FAILED"; tail -20 "$OUT/base-build.log"
  fi
fi

# gtest_summary LOG: "N passed, M failed, K skipped" from a gtest binary's output.
gtest_summary() {
  local p f s
  p=$(grep -c '^\[       OK \]' "$1"); f=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$1"); s=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$1")
  f=$(( f / 2 )); s=$(( s / 2 ))  # gtest lists failures and skips twice (as they happen and at the end)
  echo "$p passed, $f failed, $s skipped"
}
status=0
LOGS="$WORK/logs"; mkdir -p "$LOGS"
run_gtest() {  # run_gtest SLUG LABEL BINARY [args]: runs a test program, adds its summary row
  local slug="$1" label="$2"; shift 2
  "$@" >"$LOGS/$slug.log" 2>&1 || status=1
  row "$label" "$(gtest_summary "$LOGS/$slug.log")"
  grep -E '(Failure|FAILED  \] [A-Z])' -A5 "$LOGS/$slug.log" | head -40
}

if has kernels; then
  run_gtest sae_gate "SAE gate kernels vs CPU" build-gpu/tests/edit/test_sae_cuda
  if [ "${LATHE_GPU_KERNELS:-all}" = all ]; then  # LATHE_GPU_KERNELS=sae: the SAE gate's only
    run_gtest kernels "kernels vs CPU" $T/backend/test_cuda_kernels
    run_gtest layout "device layout" $T/backend/test_device_layout
  fi
fi
if has forward; then
  # The default SmolLM2 GGUF (94 MiB) travels to the GPU machine in parts over several calls
  # (scripts/gpu-model-parts.sh); without it its check is left out, and the table says so.
  scripts/gpu-model-parts.sh take >"$LOGS/model-parts.log" 2>&1 || { tail -3 "$LOGS/model-parts.log"; status=1; }
  default_filter=""
  if [ ! -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    default_filter="--gtest_filter=-*DefaultModel*"
    row "default SmolLM2 GGUF on CUDA" "not checked: model not here (carry it in parts: scripts/gpu-model-parts.sh)"
  fi
  forward_filter="$default_filter"
  [ -n "${LATHE_GPU_FORWARD_FILTER:-}" ] && forward_filter="--gtest_filter=${LATHE_GPU_FORWARD_FILTER}"
  run_gtest forward "forward CUDA vs CPU" $T/forward/test_cuda_forward $forward_filter
  run_gtest batch "batches: mixed passes, batch invariance" $T/forward/test_cuda_batch $default_filter
  grep -E 'token-identical|differs from|steps$' "$LOGS/batch.log" | sed 's/^/    /' | tee -a "$OUT/summary.md" || true
  [ -n "$BASE" ] && run_gtest forward_base "forward CUDA vs CPU (baseline)" "$BASE_SRC/build/tests/forward/test_cuda_forward" --gtest_filter=-*DefaultModel*
  grep -E '^(F32|F16|BF16|Q8_0|Q4_0|Q4_1) n_batch' "$LOGS/forward.log" | tr '\n' ';' | sed 's/^/    /'; echo
  run_gtest stream "layer streaming: streamed vs resident tokens" $T/forward/test_cuda_stream $default_filter
  grep -E 'layers streamed|streamed with room' "$LOGS/stream.log" | sed 's/^/    /' | tee -a "$OUT/summary.md" || true
  run_gtest ablation "abliteration study on CUDA vs CPU" build-gpu/tests/edit/test_ablation_cuda
  run_gtest budget "engine GPU memory budget (--vram-budget)" build-gpu/tests/api/api_engine_budget_test $default_filter
  grep -E '^budget ' "$LOGS/budget.log" | sed 's/^/    /' | tee -a "$OUT/summary.md" || true
  grep -E '^SmolLM2' "$LOGS/forward.log" | sed 's/^/    /' | tee -a "$OUT/summary.md" || true
fi
if has tiny_hf; then
  # llama.cpp's converter for the converted-GGUF checks (LlamaCppConverter), from the carried
  # .gl/llama.cpp.tar.xz (bench/llama_cpp_cuda.sh pack); without it those tests skip.
  if [ -f .gl/llama.cpp.tar.xz ] && [ -z "${LATHE_LLAMA_CPP_DIR:-}" ]; then
    mkdir -p "$WORK/llama-src" && tar -xJf .gl/llama.cpp.tar.xz -C "$WORK/llama-src" \
      && export LATHE_LLAMA_CPP_DIR="$WORK/llama-src/llama.cpp"
  fi
  # LATHE_CUDA_MOE=1: the mixtures of experts' device path (opt-in until checked here, docs/MOE.md).
  # LATHE_GPU_TINY_HF_FILTER: a gtest filter, e.g. '*LogitsMatch*cuda*' (the GPU cases only; every
  # case builds its model with transformers, so the whole stage takes minutes).
  tiny_filter=""
  [ -n "${LATHE_GPU_TINY_HF_FILTER:-}" ] && tiny_filter="--gtest_filter=${LATHE_GPU_TINY_HF_FILTER}"
  LATHE_CUDA_MOE=1 run_gtest tiny_hf "tiny models vs transformers" $T/forward/test_vs_transformers $tiny_filter
  grep -E '^(llama|llama3|qwen2|qwen3|phi3|mixtral|qwen2moe|qwen3moe|olmoe) (\(|converted)' "$LOGS/tiny_hf.log" | sed 's/^/    /' || true
fi

# big SHAPE NAME: random model, transformers reference + speed, lathe vs transformers, lathe bench.
BIG_CASES="$WORK/big_cases.json"; echo "[]" >"$BIG_CASES"
BENCH_ROWS=()
big() {
  local shape="$1" name="$2" dir="$WORK/$2" hf_speed="${3:-1}" tokenizer="${4:-qwen3}"
  local start=$SECONDS
  if [ ! -f "$dir/config.json" ]; then
    python3 bench/make_random_hf.py --shape "$shape" --out "$dir" --tokenizer-dir "data/tokenizers/$tokenizer" \
      >"$LOGS/make_$name.log" 2>&1 || { tail -20 "$LOGS/make_$name.log"; status=1; return; }
  fi
  row "$name: random bf16 model" "$(( SECONDS - start )) s"
  start=$SECONDS
  if [ "${LATHE_GPU_HF:-1}" = 0 ]; then  # lathe's benchmarks only (no reference, no logits check)
    echo "{}" >"$LOGS/hf_$name.json"
  else
  python3 bench/hf_peer.py --model "$dir" --out "$dir" $([ "$hf_speed" = 1 ] || echo --no-speed) \
    --peers "${LATHE_GPU_HF_PEERS:-eager}" >"$LOGS/hf_$name.log" 2>&1 || { tail -20 "$LOGS/hf_$name.log"; status=1; return; }
  cp "$dir/hf_speed.json" "$LOGS/hf_$name.json"
  row "$name: transformers reference + speed" "$(( SECONDS - start )) s"
  python3 - "$BIG_CASES" "$name" "$dir" <<'PY'
import json, sys
path, name, d = sys.argv[1:]
cases = json.load(open(path))
cases.append({"name": name, "model": d, "ids": f"{d}/ids.json", "ref": f"{d}/ref.f32", "hf": f"{d}/hf_speed.json"})
json.dump(cases, open(path, "w"))
PY
  fi
  local versions=(""); [ -n "$BASE" ] && versions+=(base)
  [ "${LATHE_GPU_BENCH:-1}" = 0 ] && return  # the logits check only
  for quant in "" Q8_0 Q4_0; do
   for version in "${versions[@]}"; do
    local label="${quant:-BF16}${version:+ (baseline)}" exe="$LATHE"
    [ -n "$version" ] && exe="$BASE"
    $exe bench -m "$dir" --device cuda -p 512 -n 128 -r 3 --parallel $([ -z "$quant" ] && echo 16 || echo 0) \
      ${quant:+--requantize $quant} --json \
      >"$LOGS/bench_${name}_${label// /_}.json" 2>"$LOGS/bench_${name}_${label// /_}.err" || { tail -5 "$LOGS/bench_${name}_${label// /_}.err"; status=1; continue; }
    BENCH_ROWS+=("$(python3 - "$LOGS/bench_${name}_${label// /_}.json" "$LOGS/hf_$name.json" "$name" "$label" <<'PY'
import json, sys
lathe = {r["test"]: r for r in json.load(open(sys.argv[1]))}
hf = json.load(open(sys.argv[2]))
name, label = sys.argv[3], sys.argv[4]
pp, tg = lathe["pp512"], lathe["tg128"]
hf_pp = f'{hf["pp512_tok_s"]:.0f}' if label == "BF16" and "pp512_tok_s" in hf else "-"
hf_tg = f'{hf["tg128_tok_s"]:.1f}' if label == "BF16" and "tg128_tok_s" in hf else "-"
par = lathe.get("tg128x16", {}).get("avg_ts", float("nan"))
hf_par = f'{hf["batch16_tg128_tok_s"]:.0f}' if label == "BF16" and "batch16_tg128_tok_s" in hf else "-"
print(f'| {name} {label} | {pp["avg_ts"]:.0f} ± {pp["stddev_ts"]:.0f} | {tg["avg_ts"]:.1f} ± {tg["stddev_ts"]:.1f} | {par:.0f} | {hf_pp} | {hf_tg} | {hf_par} |')
PY
)")
    echo "${BENCH_ROWS[-1]}" >>"$OUT/summary.md"
   done
  done
  # transformers' other peers (LATHE_GPU_HF_PEERS=sdpa,compile) against lathe's BF16 figures
  while IFS= read -r line; do row "${line%%|*}" "${line#*|}"; done < <(
    python3 - "$LOGS/bench_${name}_BF16.json" "$LOGS/hf_$name.json" "$name" <<'PY'
import json, os, sys
hf, name = json.load(open(sys.argv[2])), sys.argv[3]
lathe = {r["test"]: r["avg_ts"] for r in json.load(open(sys.argv[1]))} if os.path.exists(sys.argv[1]) else {}
def vs(test, key):
    return f'{hf[key]:.1f} (lathe {lathe[test] / hf[key]:.2f}x)' if test in lathe else f'{hf[key]:.1f}'
if "sdpa_pp512_tok_s" in hf:
    print(f'{name}: transformers sdpa pp512 / tg128|{vs("pp512", "sdpa_pp512_tok_s")} / {vs("tg128", "sdpa_tg128_tok_s")}')
if "compile_tg128_tok_s" in hf:
    print(f'{name}: transformers static cache + torch.compile tg128|{vs("tg128", "compile_tg128_tok_s")}, '
          f'first (compiling) call {hf["compile_first_call_s"]:.0f} s')
PY
  )
  # A/B: decode again with the environment LATHE_GPU_AB_ENV (e.g. LATHE_CUDA_PDL=0), same binary
  if [ -n "${LATHE_GPU_AB_ENV:-}" ]; then
    for quant in "" Q8_0 Q4_0; do
      env $LATHE_GPU_AB_ENV $LATHE bench -m "$dir" --device cuda -p 0 -n 128 -r 3 ${quant:+--requantize $quant} --json \
        >"$LOGS/bench_${name}_ab_${quant:-BF16}.json" 2>/dev/null &&
        row "$name ${quant:-BF16} tg128 with $LATHE_GPU_AB_ENV" "$(python3 -c "import json;d=json.load(open('$LOGS/bench_${name}_ab_${quant:-BF16}.json'))[0];print(round(d['avg_ts'],1),'±',round(d['stddev_ts'],1))") t/s"
    done
  fi
  # 16-sequence decode at pass sizes 129 and 512 (LATHE_GPU_PASS_AB=1), this build and the
  # baseline: the runtime core's engine takes passes of up to 512 tokens where the old batch
  # engine took 129 here (issue 22's open 16-sequence question)
  if [ "${LATHE_GPU_PASS_AB:-0}" = 1 ]; then
    for b in 129 512; do
      for version in "${versions[@]}"; do
        local exe="$LATHE"; [ -n "$version" ] && exe="$BASE"
        $exe bench -m "$dir" --device cuda -p 0 -n 128 -r 3 --parallel 16 -b "$b" --json \
          >"$LOGS/bench_${name}_x16_b${b}${version:+_base}.json" 2>/dev/null &&
          row "$name BF16 16 x tg128, -b $b${version:+ (baseline)}" "$(python3 -c "import json;d={r['test']:r for r in json.load(open('$LOGS/bench_${name}_x16_b${b}${version:+_base}.json'))}['tg128x16'];print(round(d['avg_ts']),'±',round(d['stddev_ts']))") t/s"
      done
    done
  fi
  [ "${LATHE_GPU_BIG_EXTRAS:-1}" = 0 ] && return
  # decode with a Q8_0 KV cache (bf16 weights), for comparison with the F16 cache's tg128 above
  $LATHE bench -m "$dir" --device cuda -p 0 -n 128 -r 3 --kv-type q8_0 --json >"$LOGS/bench_${name}_kvq8.json" 2>/dev/null &&
    row "$name BF16 tg128 with a Q8_0 KV cache" "$(python3 -c "import json;d=json.load(open('$LOGS/bench_${name}_kvq8.json'))[0];print(round(d['avg_ts'],1),'±',round(d['stddev_ts'],1))") t/s"
  # bf16 weights meeting half activations in prefill (LATHE_CUDA_BF16_GEMM=f16), for comparison
  LATHE_CUDA_BF16_GEMM=f16 $LATHE bench -m "$dir" --device cuda -p 512 -n 0 -r 3 --json >"$LOGS/bench_${name}_f16act.json" 2>/dev/null &&
    row "$name BF16 pp512 with half activations" "$(python3 -c "import json;d=json.load(open('$LOGS/bench_${name}_f16act.json'))[0];print(round(d['avg_ts']),'±',round(d['stddev_ts']))") t/s"
}
has big05 && big qwen2.5-0.5b qwen05 "${LATHE_GPU_HF_SPEED:-1}"
has big8 && big llama-3.1-8b llama8b "${LATHE_GPU_HF_SPEED_8B:-${LATHE_GPU_HF_SPEED:-1}}" llama3
if { has big05 || has big8; } && [ "$(python3 -c "import json;print(len(json.load(open('$BIG_CASES'))))")" != 0 ]; then
  LATHE_HF_BIG="$BIG_CASES" run_gtest big "big models vs transformers" $T/forward/test_cuda_vs_hf_big
  grep -E '^big: ' "$LOGS/big.log" | sed 's/^/    /' | tee -a "$OUT/summary.md" || true
  LATHE_CUDA_BF16_GEMM=f16 LATHE_HF_BIG="$BIG_CASES" $T/forward/test_cuda_vs_hf_big >"$LOGS/big_f16act.log" 2>&1
  grep -E '^big: .*production' "$LOGS/big_f16act.log" | sed 's/^/    half activations: /' | tee -a "$OUT/summary.md" || true
  for f in "$LOGS"/hf_*.json; do python3 -c "import json; d=json.load(open('$f')); 'hf_bf16_top1_vs_f32' in d and print('    $(basename "$f") transformers bf16 vs f32: top-1', round(d['hf_bf16_top1_vs_f32'], 4), 'relative error', round(d['hf_bf16_rel_err_vs_f32'], 5))" | tee -a "$OUT/summary.md"; done
fi

# llama.cpp on the same models in the same call: GGUF BF16 / Q8_0 / Q4_0, pp512 and tg128, the
# better of flash attention off and on; lathe's figures from the bench JSON above.
LLAMA_ROWS=()
if has llamacpp && [ -n "$LLAMA_PID" ]; then
  if wait_llama_build; then
    for name in qwen05 llama8b; do
      [ -f "$WORK/$name/config.json" ] || continue
      start=$SECONDS
      bench/llama_cpp_cuda.sh bench "$LLAMA_WORK" "$WORK/$name" "$LOGS/llama_$name.json" >"$LOGS/llama_$name.log" 2>&1 ||
        { tail -20 "$LOGS/llama_$name.log"; status=1; continue; }
      row "$name: llama.cpp convert + quantize + llama-bench" "$((SECONDS - start)) s"
      while IFS= read -r line; do LLAMA_ROWS+=("$line"); echo "$line" >>"$OUT/summary.md"; done < <(
        python3 - "$LOGS/llama_$name.json" "$LOGS" "$name" <<'PY'
import json, os, sys
runs, logs, name = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
for label in ("BF16", "Q8_0", "Q4_0"):
    mine = [r for r in runs if r["model_filename"].endswith(f"llama-{label}.gguf")]
    best = {}
    for test, key in (("pp512", "n_prompt"), ("tg128", "n_gen")):
        cands = [r for r in mine if r[key] > 0]
        if cands: best[test] = max(cands, key=lambda r: max(r["samples_ts"]))
    lathe_path = os.path.join(logs, f"bench_{name}_{label}.json")
    lathe = {r["test"]: r for r in json.load(open(lathe_path))} if os.path.exists(lathe_path) else {}
    # llama-bench's first pp512 repetition runs 10-50% slower than the others (seen on the H200):
    # the ratios use its fastest repetition, so that the peer is not held back by its warm-up.
    cells = []
    for test in ("pp512", "tg128"):
        b = best.get(test)
        cells.append(f'{b["avg_ts"]:.1f} ± {b["stddev_ts"]:.1f}, fastest {max(b["samples_ts"]):.1f} '
                     f'(fa {"on" if b["flash_attn"] else "off"})' if b else "-")
    for test in ("pp512", "tg128"):
        b, l = best.get(test), lathe.get(test)
        cells.append(f'{l["avg_ts"] / max(b["samples_ts"]):.2f}x' if b and l else "-")
    print(f"| {name} {label} | " + " | ".join(cells) + " |")
PY
      )
    done
  fi
fi

# Where the GPU time goes (Nsight Compute): decode steps and 512-token prefills, per kernel, for
# the 0.5B shape (profile05) and the 8B shape (profile8); compare with the wall time per token
# from the bench above. ncu serializes kernels and locks clocks: shares matter, not totals.
profile() {  # profile NAME N_DECODE N_PREFILL: the first N kernels of decode / prefill of $WORK/NAME
  local name="$1" n_decode="$2" n_prefill="$3"
  for label in ${LATHE_GPU_PROFILE_TYPES:-BF16 Q4_0}; do
    quant=""; [ "$label" = BF16 ] || quant="$label"
    ncu --metrics gpu__time_duration.sum --csv --print-units base -c $n_decode $LATHE bench -m "$WORK/$name" \
      --device cuda -p 0 -n 3 -r 1 ${quant:+--requantize $quant} >"$LOGS/ncu_tg_${name}_$label.csv" 2>"$LOGS/ncu_tg_${name}_$label.err" || status=1
    python3 bench/ncu_summary.py "$LOGS/ncu_tg_${name}_$label.csv" --label "decode $name $label" >>"$LOGS/profile.txt" 2>&1
    ncu --metrics gpu__time_duration.sum --csv --print-units base -c $n_prefill $LATHE bench -m "$WORK/$name" \
      --device cuda -p 512 -n 0 -r 1 ${quant:+--requantize $quant} >"$LOGS/ncu_pp_${name}_$label.csv" 2>"$LOGS/ncu_pp_${name}_$label.err" || status=1
    python3 bench/ncu_summary.py "$LOGS/ncu_pp_${name}_$label.csv" --label "prefill-512 $name $label" >>"$LOGS/profile.txt" 2>&1
  done
}
# A few decode steps (150-330 kernels each), and both prefill passes (warm-up and timed: about
# 19 kernels per layer with BF16 weights, 30 with quantized ones, which decode chunks to half),
# since bench/ncu_summary.py divides by the passes it sees begin.
has profile05 && [ -f "$WORK/qwen05/config.json" ] && profile qwen05 700 1600
has profile8 && [ -f "$WORK/llama8b/config.json" ] && profile llama8b 700 2000

if has matvec; then
  build-gpu/lathe_bench_cuda_matvec --json "$LOGS/matvec.json" >"$LOGS/matvec.md" 2>&1 || { tail -5 "$LOGS/matvec.md"; status=1; }
  head -1 "$LOGS/matvec.md" | tee -a "$OUT/summary.md"
  # Per matrix: the automatic choice against the best layout (warps x rows per group).
  python3 - "$LOGS/matvec.json" <<'PY' | tee "$LOGS/matvec_summary.md" >>"$OUT/summary.md"
import json, sys
rows = json.load(open(sys.argv[1]))
print("| model | matrix | type | norm | auto GB/s | best GB/s (warps x rows) | auto % of copy |")
print("|---|---|---|---|---:|---:|---:|")
keys = []
for r in rows:
    k = (r["model"], r["matrix"], r["type"], r["norm"])
    if k not in keys: keys.append(k)
for k in keys:
    group = [r for r in rows if (r["model"], r["matrix"], r["type"], r["norm"]) == k]
    auto = next(r for r in group if r["layout"] == "auto")
    best = max(group, key=lambda r: r["gb_s"])
    print(f'| {k[0]} | {k[1]} | {k[2]} | {"fused" if k[3] else "-"} | {auto["gb_s"]:.0f} | {best["gb_s"]:.0f} ({best["layout"]}) | {100 * auto["gb_s"] / auto["copy_gb_s"]:.0f}% |')
PY
fi

# lathe serve vs llama-server (uses the llama.cpp build started above)
if has serve && [ -n "$LLAMA_PID" ] && wait_llama_build; then
  for name in ${LATHE_GPU_SERVE_MODELS:-qwen05 llama8b}; do
    [ -f "$WORK/$name/config.json" ] || continue
    start=$SECONDS
    gguf="$(bench/llama_cpp_cuda.sh convert "$LLAMA_WORK" "$WORK/$name" 2>"$LOGS/convert_$name.log")" ||
      { tail -20 "$LOGS/convert_$name.log"; status=1; continue; }
    DEVICE=cuda MODEL="$gguf" LATHE="$LATHE" LLAMA_SERVER="$LLAMA_WORK/build/bin/llama-server" PARALLEL=64 CTX=1024 \
      THREADS=8 PROMPTS="${LATHE_GPU_SERVE_PROMPTS:-128}" CONCURRENCY="1 16 64" RATES="${LATHE_GPU_SERVE_RATES:-4 16}" \
      QUIET_WAIT=0 RUN_LIMIT=400 bench/serve_vs_llama_server.sh "$LOGS/serve_$name" >"$LOGS/serve_$name.log" 2>&1 ||
      { tail -20 "$LOGS/serve_$name.log"; status=1; }
    row "$name: lathe serve vs llama-server (BF16 GGUF)" "$((SECONDS - start)) s"
    cat "$LOGS/serve_$name/comparison.md" >>"$OUT/summary.md" 2>/dev/null
    cp -r "$LOGS/serve_$name" "$OUT/" 2>/dev/null
  done
fi

if has sae && [ -f "$WORK/qwen05/config.json" ]; then
  d_in=$(python3 -c "import json; print(json.load(open('$WORK/qwen05/config.json'))['hidden_size'])")
  for arch in standard topk; do
    python3 bench/make_random_sae.py "$WORK/sae_$arch" --d-in "$d_in" --d-sae 16384 --architecture "$arch" \
      --hook blocks.12.hook_resid_post >"$LOGS/sae_$arch.log" 2>&1 || { tail -5 "$LOGS/sae_$arch.log"; status=1; }
  done
  for mode in none standard topk standard_device topk_device; do
    sae="${mode%_device}"; hooks_env=()  # the default: the gate's kernels on the device rows
    case "$mode" in standard|topk) hooks_env=(LATHE_CUDA_DEVICE_HOOKS=0) ;; esac  # host copies
    args=(); [ "$mode" = none ] || args=(--sae "$WORK/sae_$sae" --sae-features 1,2:-3,3*0.5 --sae-clamp-everywhere)
    log="$LOGS/sae_bench_$mode.json"
    env "${hooks_env[@]}" $LATHE bench -m "$WORK/qwen05" --device cuda -p 512 -n 128 -r 3 "${args[@]}" --json \
      >"$log" 2>"${log%.json}.err" || { tail -5 "${log%.json}.err"; status=1; continue; }
    row "qwen05 SAE gate $mode: pp512 / tg128 t/s" "$(python3 -c "
import json; d = {r['test']: r for r in json.load(open('$log'))}
print(' / '.join(f\"{d[t]['avg_ts']:.1f} ± {d[t]['stddev_ts']:.1f}\" for t in ('pp512', 'tg128')))")"
  done
fi

if has overhead; then
  for name in ${LATHE_GPU_SERVE_MODELS:-qwen05 llama8b}; do
    [ -f "$WORK/$name/config.json" ] || continue
    start=$SECONDS
    MODEL="$WORK/$name" LATHE="$LATHE" DEVICE=cuda THREADS=8 PARALLELS="1 64" PROMPTS=16 \
      bench/serve_overhead.sh "$LOGS/overhead_$name" >"$LOGS/overhead_$name.log" 2>&1 ||
      { tail -20 "$LOGS/overhead_$name.log"; status=1; continue; }
    row "$name: lathe serve's single-stream overhead" "$((SECONDS - start)) s"
    cat "$LOGS/overhead_$name/overhead.md" >>"$OUT/summary.md"
    cat "$LOGS/overhead_$name/overhead.md"
  done
fi

# invariant_bench MODEL LABEL [bench args]: one row per mode (default, --batch-invariant).
invariant_bench() {
  local model="$1" label="$2"; shift 2
  for mode in "" --batch-invariant; do
    local log="$LOGS/invariant_${label// /_}${mode:+_bi}.json"
    $LATHE bench -m "$model" --device cuda -p 512 -n 128 -r 3 --parallel 16 "$@" $mode --json >"$log" 2>"${log%.json}.err" ||
      { tail -5 "${log%.json}.err"; status=1; continue; }
    row "$label ${mode:-default}: pp512 / tg128 / 16x tg128 t/s" "$(python3 -c "
import json; d = {r['test']: r for r in json.load(open('$log'))}
print(' / '.join(f\"{d[t]['avg_ts']:.1f} ± {d[t]['stddev_ts']:.1f}\" for t in ('pp512', 'tg128', 'tg128x16')))")"
  done
}
if has invariant; then
  [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && invariant_bench models/SmolLM2-135M-Instruct.Q4_1.gguf "SmolLM2 Q4_1"
  for name in qwen05 llama8b; do
    [ -f "$WORK/$name/config.json" ] || continue
    invariant_bench "$WORK/$name" "$name BF16"
    invariant_bench "$WORK/$name" "$name Q4_0" --requantize Q4_0
  done
fi

if has ablate; then
  bench/ablate_device.sh "$LATHE" "$LOGS/ablate" "$(nproc)" >"$LOGS/ablate_table.md" 2>"$LOGS/ablate_bench.log" || status=1
fi

echo
echo "| check | result |"
echo "|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ ${#BENCH_ROWS[@]} -gt 0 ]; then
  echo
  echo "| model (CUDA) | lathe pp512 t/s | lathe tg128 t/s | lathe 16x tg128 t/s | HF eager pp512 | HF eager tg128 | HF eager 16x tg128 |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${BENCH_ROWS[@]}"
fi
if [ ${#LLAMA_ROWS[@]} -gt 0 ]; then
  echo
  echo "| model (CUDA, same call) | llama.cpp pp512 t/s | llama.cpp tg128 t/s | lathe / llama.cpp pp512 (fastest rep.) | lathe / llama.cpp tg128 (fastest rep.) |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s\n' "${LLAMA_ROWS[@]}"
fi
has ablate && cat "$LOGS/ablate_table.md"
[ -f "$LOGS/matvec_summary.md" ] && { echo; cat "$LOGS/matvec_summary.md"; }
[ -f "$LOGS/profile.txt" ] && { echo; cat "$LOGS/profile.txt"; }

cp "$OUT"/*.log "$LOGS"/ 2>/dev/null
tar -czf "$OUT/gpu-logs.tar.gz" -C "$WORK" logs
exit $status
