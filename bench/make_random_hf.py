"""Builds a Hugging Face model with random weights from a config of a real model's shape (no
download) and saves it with save_pretrained, plus a tokenizer with a chat template, so that lathe
can be benchmarked on realistic sizes on a machine without internet.

Usage: make_random_hf.py --shape qwen2.5-0.5b|llama-3.1-8b --out DIR --tokenizer-dir DIR [--dtype bf16|f32]
"""
import argparse
import json
import shutil

import torch
import transformers

SHAPES = {
    # Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, ffn 4864, vocab 151936, tied.
    "qwen2.5-0.5b": lambda: transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True),
    # Llama-3.1-8B: hidden 4096, 32 layers, 32/8 heads, ffn 14336, vocab 128256.
    "llama-3.1-8b": lambda: transformers.LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    args = ap.parse_args()
    torch.manual_seed(0)
    config = SHAPES[args.shape]()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    # Initialize on the GPU when there is one: an 8B model's random init on one CPU core takes
    # minutes; on the GPU it takes a second (save_pretrained copies it back).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=dtype).eval()
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size="5GB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{args.tokenizer_dir}/{name}", f"{args.out}/{name}")
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"shape": args.shape, "dtype": args.dtype, "params": n_params,
                      "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
