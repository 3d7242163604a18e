#!/usr/bin/env bash
# llama.cpp on CUDA as the same-run peer of `lathe bench --device cuda` (scripts/gpu-check.sh,
# stage llamacpp). The GPU machine has no internet: the llama.cpp sources travel as a trimmed
# tarball of the version vendored in the llama-cpp-python sdist that the CPU tests use (made
# here by `bench/llama_cpp_cuda.sh pack`, git-ignored under .gl/, carried with the call).
#
#   bench/llama_cpp_cuda.sh pack                       .gl/llama.cpp.tar.xz from PyPI's sdist (or SDIST=file)
#   bench/llama_cpp_cuda.sh build TARBALL WORKDIR      llama-bench, llama-quantize and llama-server for sm_90
#   bench/llama_cpp_cuda.sh convert WORKDIR MODEL_DIR  MODEL_DIR/llama-BF16.gguf (convert_hf_to_gguf.py)
#   bench/llama_cpp_cuda.sh bench WORKDIR MODEL_DIR OUT_JSON
#       converts a Hugging Face model dir to GGUF bf16 (llama.cpp's convert_hf_to_gguf.py), then
#       Q8_0 and Q4_0 with --pure (every matrix, embeddings included: as `lathe bench
#       --requantize`), and runs llama-bench pp512 / tg128, 3 repetitions, all layers on the GPU,
#       flash attention off and on (the peer gets its better figure); writes one JSON list.
source "$(dirname "$0")/../scripts/lib.sh"  # LATHE_ROOT, LLAMA_CPP_PYTHON_VERSION
VERSION="$LLAMA_CPP_PYTHON_VERSION"

pack() {
  local tmp; tmp="$(mktemp -d)"
  if [ -n "${SDIST:-}" ]; then  # an sdist already here (SDIST=path/llama_cpp_python-VERSION.tar.gz)
    tar -xzf "$SDIST" -C "$tmp"
  else
    # --no-binary for this package only: with :all: pip also builds its build tools from source.
    python3 -m pip download -q --no-deps --no-binary llama-cpp-python --disable-pip-version-check -d "$tmp" \
      "llama-cpp-python==$VERSION"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  fi
  mkdir -p "$LATHE_ROOT/.gl"
  # Without the vocab models, docs, the web UI's sources, tests and the other GPU backends: 5 MB
  # instead of 77 (llama-server is built without its UI, but needs tools/ui's CMake files).
  tar -cJf "$LATHE_ROOT/.gl/llama.cpp.tar.xz" -C "$tmp/llama_cpp_python-$VERSION/vendor" \
    --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/media --exclude=llama.cpp/benches \
    --exclude=llama.cpp/tests --exclude=llama.cpp/tools/ui/src --exclude=llama.cpp/tools/ui/tests --exclude=llama.cpp/ggml/src/ggml-sycl \
    --exclude=llama.cpp/ggml/src/ggml-opencl --exclude=llama.cpp/ggml/src/ggml-vulkan \
    --exclude=llama.cpp/ggml/src/ggml-hexagon --exclude=llama.cpp/ggml/src/ggml-metal \
    --exclude=llama.cpp/ggml/src/ggml-et llama.cpp
  rm -rf "$tmp"
  ls -la "$LATHE_ROOT/.gl/llama.cpp.tar.xz"
}

build() {
  local tarball="$1" work="$2"
  [ -x "$work/build/bin/llama-bench" ] && [ -x "$work/build/bin/llama-quantize" ] && [ -x "$work/build/bin/llama-server" ] &&
    return 0
  [ -f "$tarball" ] || { echo "error: $tarball missing: run bench/llama_cpp_cuda.sh pack and carry .gl" >&2; exit 1; }
  # Extracted once: a rerun on the same machine (a call cut off mid-build) resumes the build.
  [ -f "$work/llama.cpp/CMakeLists.txt" ] || { mkdir -p "$work" && tar -xJf "$tarball" -C "$work"; }
  cmake -S "$work/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  ninja -C "$work/build" -j "$(nproc)" llama-bench llama-quantize llama-server
}

# convert WORKDIR MODEL_DIR: MODEL_DIR/llama-BF16.gguf by llama.cpp's converter (once); prints its path.
convert() {
  local work="$1" model="$2" bf16="$2/llama-BF16.gguf"
  if [ ! -f "$bf16" ]; then
    python3 "$work/llama.cpp/convert_hf_to_gguf.py" "$model" --outtype bf16 --outfile "$bf16.part" >&2
    mv "$bf16.part" "$bf16"
  fi
  echo "$bf16"
}

bench() {
  local work="$1" model="$2" out="$3" bin="$1/build/bin"
  local bf16; bf16="$(convert "$work" "$model")"
  local files=("$bf16")
  for q in Q8_0 Q4_0; do
    local f="$model/llama-$q.gguf"
    if [ ! -f "$f" ]; then
      "$bin/llama-quantize" --pure "$bf16" "$f.part" "$q" "$(nproc)" >&2
      mv "$f.part" "$f"
    fi
    files+=("$f")
  done
  local args=()
  for f in "${files[@]}"; do args+=(-m "$f"); done
  "$bin/llama-bench" "${args[@]}" -p 512 -n 128 -r 3 -ngl 99 -fa 0,1 -o json >"$out"
}

case "${1:-}" in
  pack) pack ;;
  build) build "$2" "$3" ;;
  convert) convert "$2" "$3" ;;
  bench) bench "$2" "$3" "$4" ;;
  *) echo "usage: $0 pack | build TARBALL WORKDIR | convert WORKDIR MODEL_DIR | bench WORKDIR MODEL_DIR OUT_JSON" >&2; exit 2 ;;
esac
