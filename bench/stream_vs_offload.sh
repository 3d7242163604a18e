#!/usr/bin/env bash
# Layer streaming against its peers on the GPU machine, one model, same call (docs/STREAMING.md):
# lathe with --vram-budget (decode at batch 1 with the floor it measures, decode at batch 8/32/64,
# prefill), accelerate's offload with the same GPU memory cap, and AirLLM (its wheel carried as
# .gl/airllm-4.0.0-py3-none-any.whl; its dependencies are the GPU machine's). Each step can be
# left out, so the work fits calls of 10 minutes on a warm machine.
# Usage: bench/stream_vs_offload.sh LATHE MODEL_DIR BUDGET STEPS
#   STEPS: comma-separated of make (random Llama-3.1-8B-shaped bf16 model into MODEL_DIR),
#          lathe, batches, accelerate, airllm
# e.g. bench/stream_vs_offload.sh build-gpu/lathe /tmp/llama8b 4G make,lathe,accelerate
set -uo pipefail
LATHE="$1" MODEL="$2" BUDGET="$3" STEPS=",$4,"
has() { [[ "$STEPS" == *",$1,"* ]]; }
if has make && [ ! -f "$MODEL/config.json" ]; then
  start=$SECONDS
  python3 bench/make_random_hf.py --shape llama-3.1-8b --out "$MODEL" --tokenizer-dir data/tokenizers/llama3 | tail -1
  echo "made $MODEL in $((SECONDS - start)) s"
fi
if has lathe; then
  "$LATHE" bench -m "$MODEL" --device cuda --vram-budget "$BUDGET" -p 512 -n 16 -r 2 2>&1 | grep -E "^\||^streaming|weights"
fi
if has batches; then
  for b in 8 32 64; do
    "$LATHE" bench -m "$MODEL" --device cuda --vram-budget "$BUDGET" -p 0 -n 16 -r 1 --parallel "$b" 2>&1 | grep -E "tg16x"
  done
fi
if has accelerate; then
  python3 bench/offload_peer.py --peer accelerate --model "$MODEL" --gpu-memory "${BUDGET/G/GiB}" --tokens 6
fi
if has airllm; then
  wheel=$(ls .gl/airllm-*.whl 2>/dev/null | head -1)
  if [ -z "$wheel" ]; then
    echo "airllm: no wheel under .gl/ (pip download --no-deps airllm==4.0.0 -d .gl)"
  else
    python3 -m pip install -q --no-deps --target /tmp/airllm-site "$wheel" && \
      PYTHONPATH=/tmp/airllm-site python3 bench/offload_peer.py --peer airllm --model "$MODEL" --tokens 3
  fi
fi
