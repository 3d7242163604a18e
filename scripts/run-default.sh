#!/usr/bin/env bash
# The main job on the default model: sets everything up, then runs lathe on SmolLM2-135M-Instruct.
source "$(dirname "$0")/lib.sh"
"$LATHE_ROOT/scripts/setup.sh"
exec "$LATHE_BUILD/lathe" inspect "$LATHE_ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
