#!/usr/bin/env bash
# Makes the default model's variants for the tests and benchmarks that compare formats:
#   models/SmolLM2-135M-Instruct.Q8_0.gguf and .F16.gguf, written by `lathe quantize` from the
#   default Q4_1 model (so they hold its weights re-encoded, not the original BF16 checkpoint).
# Usage: scripts/make-variants.sh [LATHE_BINARY]   (default: build/lathe; build it first)
# Idempotent: a variant newer than the default model is kept. models/ is git-ignored.
source "$(dirname "$0")/lib.sh"

LATHE_BIN="${1:-$LATHE_BUILD/lathe}"
SOURCE="$LATHE_ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -x "$LATHE_BIN" ] || die "no lathe binary at $LATHE_BIN; run scripts/setup.sh first or pass the binary"
[ -f "$SOURCE" ] || "$LATHE_ROOT/scripts/fetch-model.sh"

for type in Q8_0 F16; do
  out="$LATHE_ROOT/models/SmolLM2-135M-Instruct.$type.gguf"
  if [ -f "$out" ] && [ "$out" -nt "$SOURCE" ]; then continue; fi
  log "making $(basename "$out") with lathe quantize"
  "$LATHE_BIN" quantize "$SOURCE" "$out" "$type" --force --quiet >/dev/null
done
