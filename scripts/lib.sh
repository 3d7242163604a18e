# Shared helpers for lathe's setup scripts (sourced, not run).
set -euo pipefail
LATHE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LATHE_CACHE="${LATHE_CACHE:-$LATHE_ROOT/.cache}"
LATHE_BUILD="${LATHE_BUILD:-$LATHE_ROOT/build}"
LATHE_VENV="${LATHE_VENV:-$LATHE_ROOT/.venv}"
JOBS="${JOBS:-$(nproc)}"
# The default model (scripts/fetch-model.sh fetches it; scripts/gpu-model-parts.sh carries it to
# the GPU machine) and the sha256 both check it against.
LATHE_DEFAULT_MODEL="$LATHE_ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
LATHE_DEFAULT_MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# sha256_of FILE: the file's sha256 in hex.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

log() { printf '\033[1m[lathe]\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $* (install sudo or run as root)"; fi
}

# apt_ensure PKG...: installs the Debian packages that are not installed yet (idempotent).
apt_ensure() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ ! -f "$LATHE_CACHE/.apt-updated" ] || [ -n "$(find "$LATHE_CACHE/.apt-updated" -mmin +1440 2>/dev/null)" ]; then
    as_root apt-get update -qq
    mkdir -p "$LATHE_CACHE" && touch "$LATHE_CACHE/.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build dependencies of lathe itself (see README "Dependencies").
LATHE_BUILD_DEPS=(build-essential cmake ninja-build pkg-config git
  libpcre2-dev nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libicu-dev libcpp-httplib-dev libtomlplusplus-dev)
# Extra packages for the test suite: clang + its runtime for libFuzzer/sanitizers, Python for oracles,
# Chromium and its WebDriver for the web chat page's browser test (tests/server/test_webui.py).
LATHE_TEST_DEPS=(clang libclang-rt-14-dev python3 python3-venv python3-pip chromium chromium-driver)

python_for_venv() {
  # Prefer Debian's python3 (what a fresh machine has); any python3 with venv works.
  for py in /usr/bin/python3 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import venv, ensurepip' 2>/dev/null; then echo "$py"; return; fi
  done
  die "no python3 with the venv module; install python3-venv"
}

# llama.cpp as a test peer: llama-cpp-python, built from its PyPI sdist for this CPU and cached.
LLAMA_CPP_PYTHON_VERSION="0.3.36"
# LLAVA_BUILD=OFF skips the multimodal library (mtmd), which the binding only loads on demand.
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF"
LATHE_WHEEL_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lathe/wheels"

# llama_cpp_wheel_dir: the cache folder for this llama-cpp-python version and CPU. GGML_NATIVE
# compiles for the build machine's instruction set, so the folder name carries a hash of
# /proc/cpuinfo's flags line: another CPU gets (and builds) its own wheel. The wheel itself is
# tagged py3-none (the binding loads llama.cpp through ctypes), so any Python 3 can use it.
llama_cpp_wheel_dir() {
  local cpu; cpu="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)"
  echo "$LATHE_WHEEL_CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION-cpu$cpu"
}

# ensure_llama_cpp_wheel PYTHON: makes sure the cache folder holds the wheel, building it once
# from the PyPI sdist (the only long step of the test setup); prints the folder.
ensure_llama_cpp_wheel() {
  local py="$1" dir; dir="$(llama_cpp_wheel_dir)"
  if ls "$dir"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then echo "$dir"; return 0; fi
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/lathe-llama-cpp.XXXXXX")"
  # Measured on 2 cores: 5 min on a quiet machine (docs/RELIABILITY.md), 34 min shared with other
  # builds (docs/PERFORMANCE.md); it scales with cores.
  local minutes=$(( 10 / $(nproc) )); [ "$minutes" -ge 2 ] || minutes=2
  log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION for this CPU, once: takes ~$minutes minutes on $(nproc) quiet cores (more on a busy machine); the wheel is cached in $dir"
  # One step, and only llama-cpp-python itself from source: `--no-binary :all:` (or a separate
  # `pip download` with it) would also build its build tools (scikit-build-core, hatchling, ...)
  # from their sdists, which took 5 minutes on a fresh 2-core machine.
  local start=$SECONDS
  CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$py" -m pip wheel -q --no-deps --no-binary llama-cpp-python --disable-pip-version-check -w "$work/wheel" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; die "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION: download or build from its PyPI sdist failed (log: $work/build.log)"; }
  log "llama-cpp-python built in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
  mkdir -p "$dir"
  # Move in under a temporary name, then rename: a build killed midway leaves no wheel behind.
  local wheel; wheel="$(ls "$work"/wheel/*.whl | head -n1)"
  cp "$wheel" "$dir/.$(basename "$wheel").part" && mv "$dir/.$(basename "$wheel").part" "$dir/$(basename "$wheel")"
  rm -rf "$work"
  echo "$dir"
}

# Creates .venv with the oracle packages pinned in requirements-test.txt and llama-cpp-python
# installed from the wheel cache (idempotent: a stamp holds the requirements' hash, the
# llama-cpp-python version and the wheel folder; pip's own cache makes reinstalls cheap).
ensure_venv() {
  local req="$LATHE_ROOT/requirements-test.txt" stamp="$LATHE_VENV/.lathe-requirements"
  if [ ! -x "$LATHE_VENV/bin/python" ]; then
    log "creating Python venv for test oracles at $LATHE_VENV"
    "$(python_for_venv)" -m venv "$LATHE_VENV"
    "$LATHE_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  fi
  local want; want="$(cat "$req" <(echo "$LLAMA_CPP_PYTHON_VERSION") <(llama_cpp_wheel_dir) | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  "$LATHE_VENV/bin/python" -m pip install -q -r "$req"
  local wheels; wheels="$(ensure_llama_cpp_wheel "$LATHE_VENV/bin/python")"
  # Its dependencies (numpy, Jinja2, diskcache, typing_extensions) are pinned in requirements-test.txt.
  "$LATHE_VENV/bin/python" -m pip install -q --no-index --no-deps --find-links "$wheels" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  echo "$want" >"$stamp"
}

# configure_build DIR [cmake args...]: configures once, then builds.
configure_build() {
  local dir="$1"; shift
  if [ ! -f "$dir/build.ninja" ]; then
    log "configuring $dir"
    cmake -S "$LATHE_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  else
    cmake "$dir" "$@" >/dev/null
  fi
  log "building $dir"
  ninja -C "$dir" -j "$JOBS"
}
