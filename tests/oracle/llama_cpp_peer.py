"""Shared helpers for the llama.cpp peer scripts (llama-cpp-python, installed by scripts/lib.sh)."""
import json
import sys

KV_TYPES = {"f16": 1, "f32": 0, "q8_0": 8}  # GGML_TYPE_F16 (llama.cpp's default KV type), _F32, _Q8_0


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_llama(model, n_ctx, n_batch, threads, logits_all, kv_type="f16", seed=0, flash_attn=False):
    try:
        from llama_cpp import Llama
    except ImportError as e:
        fail(f"llama-cpp-python is not installed in {sys.executable} ({e}); run scripts/test.sh, which builds "
             f"and installs it into .venv")
    # n_ubatch = n_batch: one physical batch, so the logits do not depend on how llama.cpp splits it.
    # llama.cpp keeps a quantized V cache only with flash attention.
    flash_attn = flash_attn or kv_type == "q8_0"
    return Llama(model_path=str(model), n_ctx=max(n_ctx, 16), n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                 n_threads_batch=threads, logits_all=logits_all, flash_attn=flash_attn, type_k=KV_TYPES[kv_type],
                 type_v=KV_TYPES[kv_type], seed=seed, verbose=False)


def read_tokens(path, n_vocab=None):
    try:
        with open(path, encoding="utf-8") as f:
            tokens = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: cannot read a JSON array of token ids: {e}")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) and not isinstance(t, bool)
                                                            for t in tokens):
        fail(f"{path}: expected a non-empty JSON array of integer token ids")
    if n_vocab is not None:
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            fail(f"{path}: token ids {bad[:5]} are outside the model's vocabulary [0, {n_vocab})")
    return tokens
