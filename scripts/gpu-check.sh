#!/usr/bin/env bash
# Builds lathe with CUDA on the GPU machine, runs the tests there and prints a short table last.
# The GPU image (Ubuntu 24.04) lacks the PCRE2 and ICU headers: run `scripts/gpu-deps.sh` here
# first, which downloads Debian's packages into .deps/, and carry .deps with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/lathe-gpu-out}"; mkdir -p "$OUT"
DEPS=/tmp/lathe-deps
if [ -d .deps ]; then
  mkdir -p "$DEPS"
  for deb in .deps/*.deb; do dpkg -x "$deb" "$DEPS"; done
  export PKG_CONFIG_SYSROOT_DIR="$DEPS" PKG_CONFIG_PATH="$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# The image's python3 has torch + transformers: the oracle for the HF path of every architecture.
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DLATHE_ORACLE_PYTHON="$(command -v python3)" \
  >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
ninja -C build-gpu -j "$(nproc)" >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
./build-gpu/lathe devices | tee "$OUT/devices.txt"
set +e
ctest --test-dir build-gpu -j 8 -L unit -LE oracle --output-on-failure >"$OUT/ctest.log" 2>&1
ctest_rc=$?
# CPU forward vs transformers on tiny random llama / llama3-rope / qwen2 / qwen3 / phi3 models.
ctest --test-dir build-gpu -L transformers --output-on-failure -V >"$OUT/transformers.log" 2>&1
tf_rc=$?
[ $ctest_rc -eq 0 ] && ctest_rc=$tf_rc
# Abliteration trial timing on a Qwen2.5-0.5B-shaped random model (skip: LATHE_GPU_CHECK_ABLATE=0).
ablate_rc=0
if [ "${LATHE_GPU_CHECK_ABLATE:-1}" != 0 ]; then
  bench/ablate_device.sh ./build-gpu/lathe "$OUT/ablate" "$(nproc)" >"$OUT/ablate_table.md" 2>"$OUT/ablate_bench.log"
  ablate_rc=$?
fi
set -e
summary="$(grep -E 'tests passed' "$OUT/ctest.log" || echo 'ctest: no summary')"
echo
echo "| check | result |"
echo "|---|---|"
echo "| GPU | $(cat "$OUT/gpu.txt") |"
echo "| CUDA build (sm_90) | ok |"
echo "| lathe devices | $(grep -c '^cuda:' "$OUT/devices.txt") CUDA device(s) |"
echo "| unit tests (no oracle) | $summary |"
echo "| CPU forward vs transformers | $(grep -E 'tests passed' "$OUT/transformers.log" || echo 'no summary') |"
grep -E '^[0-9]+: (llama|llama3|qwen2|qwen3|phi3): max' "$OUT/transformers.log" | sed 's/^[0-9]*: /| /; s/$/ |/' || true
if [ "${LATHE_GPU_CHECK_ABLATE:-1}" != 0 ]; then
  echo
  if [ $ablate_rc -eq 0 ]; then cat "$OUT/ablate_table.md"; else echo "ablation benchmark failed:"; tail -20 "$OUT/ablate_bench.log" "$OUT/ablate/ablate.err" 2>/dev/null; fi
fi
[ $ctest_rc -eq 0 ] && ctest_rc=$ablate_rc
exit $ctest_rc
