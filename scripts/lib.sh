# Shared helpers for lathe's setup scripts (sourced, not run).
set -euo pipefail
LATHE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LATHE_CACHE="${LATHE_CACHE:-$LATHE_ROOT/.cache}"
LATHE_BUILD="${LATHE_BUILD:-$LATHE_ROOT/build}"
LATHE_VENV="${LATHE_VENV:-$LATHE_ROOT/.venv}"
JOBS="${JOBS:-$(nproc)}"

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
  libpcre2-dev nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libicu-dev)
# Extra packages for the test suite: clang + its runtime for libFuzzer/sanitizers, Python for oracles.
LATHE_TEST_DEPS=(clang libclang-rt-14-dev python3 python3-venv python3-pip)

python_for_venv() {
  # Prefer Debian's python3 (what a fresh machine has); any python3 with venv works.
  for py in /usr/bin/python3 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import venv, ensurepip' 2>/dev/null; then echo "$py"; return; fi
  done
  die "no python3 with the venv module; install python3-venv"
}

# Creates .venv with the oracle packages pinned in requirements-test.txt (idempotent: a stamp
# holds the requirements' hash; pip's own cache makes reinstalls cheap).
ensure_venv() {
  local req="$LATHE_ROOT/requirements-test.txt" stamp="$LATHE_VENV/.lathe-requirements"
  local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -x "$LATHE_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  log "creating Python venv for test oracles at $LATHE_VENV"
  "$(python_for_venv)" -m venv "$LATHE_VENV"
  "$LATHE_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$LATHE_VENV/bin/python" -m pip install -q -r "$req"
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
