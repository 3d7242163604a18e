#!/usr/bin/env bash
# The main job on the default model: sets everything up, then chats once with SmolLM2-135M-Instruct
# (its own chat template, greedy, streamed to stdout). Extra arguments go to `lathe run`, e.g.
#   ./scripts/run-default.sh -p "Write a haiku about rivers." --temp 0.7 --seed 1
source "$(dirname "$0")/lib.sh"
"$LATHE_ROOT/scripts/setup.sh"
exec "$LATHE_BUILD/lathe" run -m "$LATHE_ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" --chat \
  -p "What is the capital of France? Answer in one sentence." --temp 0 -n 128 "$@"
