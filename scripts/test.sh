#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then
#   1. Release build + every ctest test (unit, model, oracle; gpu tests skip without a device),
#   2. one clang ASan+UBSan build (-O1, line tables only) with the libFuzzer targets: the tests but
#      the slow and gpu labels under the sanitizers,
#   3. each libFuzzer target of that build for FUZZ_SECONDS (default 20) on its seed corpus, JOBS at a time.
# Ends with one summary line "tests: N passed, M failed". Exit status is non-zero on any failure.
source "$(dirname "$0")/lib.sh"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

# Wall time per phase, printed with the summary (CI must stay well under its limit: see
# docs/RELIABILITY.md for what each phase costs on a fresh 2-core machine).
PHASES=(); phase_start=$SECONDS; phase_name="setup (apt, model, Python oracles, llama-cpp-python wheel)"
phase() {
  PHASES+=("$(printf '%5d s  %s' $((SECONDS - phase_start)) "$phase_name")")
  phase_name="$1"; phase_start=$SECONDS
}

apt_ensure "${LATHE_BUILD_DEPS[@]}" "${LATHE_TEST_DEPS[@]}"
"$LATHE_ROOT/scripts/fetch-model.sh"
ensure_venv

passed=0; failed=0
# run_ctest DIR LABEL-ARGS...: runs ctest and adds its counts to the totals.
run_ctest() {
  local dir="$1"; shift
  local log="$dir/ctest.log" rc=0
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" "$@" 2>&1 | tee "$log" || rc=1
  local line; line="$(grep -E 'tests passed, [0-9]+ tests failed out of' "$log" | tail -n1 || true)"
  if [ -n "$line" ]; then
    local total bad
    total="$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")"
    bad="$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")"
    passed=$((passed + total - bad)); failed=$((failed + bad))
  elif [ $rc -ne 0 ]; then
    failed=$((failed + 1))
  fi
}

log "1/3 release build and tests"
phase "release build"
# Without a GPU the CUDA sources (when nvcc is here) are only compiled, to catch errors: for one
# architecture (Hopper, the one the GPU checks run on), not every one the build supports.
cuda_args=()
if [ ! -f "$LATHE_BUILD/build.ninja" ] && ! nvidia-smi -L >/dev/null 2>&1; then
  cuda_args=(-DCMAKE_CUDA_ARCHITECTURES=90)
fi
configure_build "$LATHE_BUILD" -DCMAKE_BUILD_TYPE=Release -DLATHE_ORACLE_PYTHON="$LATHE_VENV/bin/python" "${cuda_args[@]}"
"$LATHE_ROOT/scripts/make-variants.sh" "$LATHE_BUILD/lathe"  # Q8_0/F16 copies of the default model
phase "release tests (every label)"
run_ctest "$LATHE_BUILD"

log "2/3 sanitizer build (ASan+UBSan, clang, with the fuzz targets) and tests"
phase "sanitizer build"
# One build serves the sanitizer tests and the fuzz targets: a second build of the library cost 5
# minutes. libFuzzer's coverage hooks go only into the rooms the targets reach (fuzz/CMakeLists.txt),
# not the compute rooms the model tests spend their time in. -O1 with line tables keeps ASan's
# reports readable and compiles in about half of GCC's RelWithDebInfo time; the CPU backend stays
# at -O2 (src/CMakeLists.txt). Programs labelled slow and the benchmarks are not built here (the
# slow label is excluded below).
SAN="$LATHE_ROOT/build-san"
san_flags="-O1 -gline-tables-only -DNDEBUG"
CC=clang CXX=clang++ configure_build "$SAN" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLATHE_SANITIZE=ON -DLATHE_FUZZ=ON \
  -DLATHE_CUDA=OFF -DLATHE_ORACLE_PYTHON="$LATHE_VENV/bin/python" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$san_flags" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$san_flags"
phase "sanitizer tests (-LE 'slow|gpu')"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest "$SAN" -LE 'slow|gpu'

log "3/3 fuzzing, ${FUZZ_SECONDS}s per target, $JOBS at a time"
phase "fuzzing"
# fuzz_one NAME: runs one target for FUZZ_SECONDS; prints its result line and returns non-zero on a
# finding. Targets run $JOBS at a time (each is single-threaded), so the phase costs
# targets/JOBS x FUZZ_SECONDS of wall time without shortening any target's run.
fuzz_one() {
  local name="$1" fuzzer="$SAN/fuzz/lathe_fuzz_$1"
  local work="$SAN/corpus-$name"
  mkdir -p "$work" "$SAN/artifacts-$name"
  local seeds=(); [ -d "$LATHE_ROOT/fuzz/corpus/$name" ] && seeds=("$LATHE_ROOT/fuzz/corpus/$name")
  # New inputs go to the scratch corpus (first directory); the committed seeds stay untouched.
  if "$fuzzer" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$SAN/artifacts-$name/" "$work" "${seeds[@]}" \
       >"$SAN/fuzz-$name.log" 2>&1; then
    echo "fuzz $name: no findings ($(grep -E 'stat::number_of_executed_units' "$SAN/fuzz-$name.log" | awk '{print $2}') runs)"
  else
    tail -n 40 "$SAN/fuzz-$name.log"
    echo "fuzz $name: FAILED (artifacts in build-san/artifacts-$name)"
    return 1
  fi
}
fuzz_names=()
for fuzzer in "$SAN"/fuzz/lathe_fuzz_*; do
  [ -x "$fuzzer" ] && fuzz_names+=("${fuzzer##*/lathe_fuzz_}")
done
# Each target's output is printed whole when all have ended (never interleaved with another's).
for name in "${fuzz_names[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  log "fuzzing $name for ${FUZZ_SECONDS}s"
  rm -f "$SAN/fuzz-$name.rc"
  ( rc=0; fuzz_one "$name" >"$SAN/fuzz-$name.result" 2>&1 || rc=$?; echo "$rc" >"$SAN/fuzz-$name.rc" ) &
done
wait
for name in "${fuzz_names[@]}"; do
  cat "$SAN/fuzz-$name.result"
  if [ "$(cat "$SAN/fuzz-$name.rc" 2>/dev/null)" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

phase ""
printf '%s\n' "time per phase:" "${PHASES[@]}" "$(printf '%5d s  total' "$SECONDS")"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
