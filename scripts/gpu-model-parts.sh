#!/usr/bin/env bash
# Carries the default model (SmolLM2 Q4_1 GGUF, 94 MiB) to the `device` tool's GPU machine, which
# takes at most 64 MiB per call (the working tree included): split here into parts, carried one per
# call on a machine kept warm between calls, and joined there, so that scripts/gpu-check.sh can run
# the CUDA-vs-CPU check of the default model (CudaForward.DefaultModelCudaMatchesCpu).
#   scripts/gpu-model-parts.sh split [MIB]  here: writes .gl/model-part-0, -1, ... of MIB MiB each
#                                           (default 38) and says what to carry in which call
#   scripts/gpu-model-parts.sh take         there, in each call: keeps the carried parts in
#                                           /tmp/lathe-gpu-work/model-parts; once all are there,
#                                           joins them into models/ and checks the sha256
source "$(dirname "$0")/lib.sh"
PARTS_HERE="$LATHE_ROOT/.gl"
PARTS_THERE=/tmp/lathe-gpu-work/model-parts
NAME="$(basename "$LATHE_DEFAULT_MODEL")"

split_model() {
  local mib="${1:-38}"
  [[ "$mib" =~ ^[1-9][0-9]*$ ]] || die "part size '$mib' is not a whole number of MiB"
  [ -f "$LATHE_DEFAULT_MODEL" ] || "$LATHE_ROOT/scripts/fetch-model.sh"
  mkdir -p "$PARTS_HERE"
  rm -rf "$PARTS_HERE"/model-part-*
  local size n i
  size="$(stat -c %s "$LATHE_DEFAULT_MODEL")"
  n=$(( (size + mib * 1048576 - 1) / (mib * 1048576) ))
  for ((i = 0; i < n; i++)); do
    mkdir -p "$PARTS_HERE/model-part-$i"
    dd if="$LATHE_DEFAULT_MODEL" of="$PARTS_HERE/model-part-$i/$NAME.$i-of-$n" bs=1M skip=$((i * mib)) \
      count="$mib" status=none
  done
  log "split $NAME into $n parts of up to $mib MiB; carry .gl/model-part-0 .. .gl/model-part-$((n - 1)),"
  log "one per call (with .deps in the last), each call starting with 'scripts/gpu-model-parts.sh take'"
}

take_parts() {
  mkdir -p "$PARTS_THERE" "$LATHE_ROOT/models"
  local part n=""
  for part in "$PARTS_HERE"/model-part-*/"$NAME".*-of-*; do
    [ -f "$part" ] || continue
    cp "$part" "$PARTS_THERE/"
    log "kept $(basename "$part")"
  done
  if [ -f "$LATHE_DEFAULT_MODEL" ] && [ "$(sha256_of "$LATHE_DEFAULT_MODEL")" = "$LATHE_DEFAULT_MODEL_SHA256" ]; then
    log "default model present: $LATHE_DEFAULT_MODEL"; return 0
  fi
  for part in "$PARTS_THERE/$NAME".*-of-*; do [ -f "$part" ] && n="${part##*-of-}"; done
  [ -n "$n" ] || { log "no parts of $NAME here yet"; return 0; }
  local i missing=()
  for ((i = 0; i < n; i++)); do [ -f "$PARTS_THERE/$NAME.$i-of-$n" ] || missing+=("$i"); done
  if [ ${#missing[@]} -gt 0 ]; then log "$NAME: parts still missing: ${missing[*]} of $n"; return 0; fi
  for ((i = 0; i < n; i++)); do cat "$PARTS_THERE/$NAME.$i-of-$n"; done >"$LATHE_DEFAULT_MODEL.part"
  local got; got="$(sha256_of "$LATHE_DEFAULT_MODEL.part")"
  if [ "$got" != "$LATHE_DEFAULT_MODEL_SHA256" ]; then
    rm -f "$LATHE_DEFAULT_MODEL.part" "$PARTS_THERE/$NAME".*
    die "joined $NAME has sha256 $got, expected $LATHE_DEFAULT_MODEL_SHA256 (parts of different splits?):" \
      "split again and carry every part"
  fi
  mv "$LATHE_DEFAULT_MODEL.part" "$LATHE_DEFAULT_MODEL"
  log "default model joined from $n parts and checked: $LATHE_DEFAULT_MODEL"
}

case "${1:-}" in
  split) split_model "${2:-}" ;;
  take) take_parts ;;
  *) die "usage: scripts/gpu-model-parts.sh split [MIB] | take" ;;
esac
