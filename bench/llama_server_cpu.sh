#!/usr/bin/env bash
# llama.cpp's llama-server for this CPU, the peer of `lathe serve` in bench/serve_vs_llama_server.sh.
#
#   bench/llama_server_cpu.sh            builds once, prints the path of the llama-server binary
#
# The sources are the llama.cpp vendored in the llama-cpp-python sdist that scripts/lib.sh pins
# (LLAMA_CPP_PYTHON_VERSION), the same version the CPU tests and bench/llama_cpp_bench.py use and
# that bench/llama_cpp_cuda.sh builds for CUDA. GGML_NATIVE=ON compiles for this machine's
# instruction set, so the cache folder carries a hash of /proc/cpuinfo's flags line (as
# scripts/lib.sh's wheel folder does):
#   ${XDG_CACHE_HOME:-~/.cache}/lathe/llama-server-cpu-<version>-<cpu hash>/
#     llama.cpp/   the sources      build/   the CMake tree      llama-server   the binary
# Only the llama-server target is built (nice -n 10, 2 jobs: the machine is shared); static
# libraries, so the binary stands alone; no web UI assets (no npm, no download: the server answers
# the API without them); no curl, no OpenSSL. A build cut off half-way resumes on the next run.
source "$(dirname "$0")/../scripts/lib.sh"  # LLAMA_CPP_PYTHON_VERSION, log, die
VERSION="$LLAMA_CPP_PYTHON_VERSION"
CPU_HASH="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)"
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/lathe/llama-server-cpu-$VERSION-$CPU_HASH"
BIN="$DIR/llama-server"

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v cmake >/dev/null || die "cmake is missing (scripts/setup.sh installs it)"
mkdir -p "$DIR"

if [ ! -f "$DIR/llama.cpp/CMakeLists.txt" ]; then
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/lathe-llama-server.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading the llama-cpp-python $VERSION sdist (llama.cpp sources)"
  # --no-binary for this package only: with :all: pip also builds its build tools from source.
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python --disable-pip-version-check -d "$tmp" \
    "llama-cpp-python==$VERSION" >&2 \
    || die "could not download the llama-cpp-python $VERSION sdist from PyPI"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  [ -f "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/tools/server/CMakeLists.txt" ] \
    || die "the sdist has no vendor/llama.cpp/tools/server"
  rm -rf "$DIR/llama.cpp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/llama.cpp"
fi

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
start=$SECONDS
log "building llama-server (llama.cpp of llama-cpp-python $VERSION) for this CPU in $DIR, once"
nice -n 10 cmake -S "$DIR/llama.cpp" -B "$DIR/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >"$DIR/configure.log" 2>&1 \
  || { tail -n 30 "$DIR/configure.log" >&2; die "cmake configure failed (log: $DIR/configure.log)"; }
nice -n 10 cmake --build "$DIR/build" --target llama-server -j 2 >"$DIR/build.log" 2>&1 \
  || { tail -n 40 "$DIR/build.log" >&2; die "llama-server build failed (log: $DIR/build.log)"; }
cp "$DIR/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
log "llama-server built in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "$BIN"
