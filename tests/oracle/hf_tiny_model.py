"""Builds a tiny random Hugging Face model of one architecture with transformers, saves it with
save_pretrained (float32 safetensors) plus a tokenizer, and writes transformers' logits for given
token ids, so that lathe's HF path can be compared with the reference implementation.

Usage: hf_tiny_model.py --arch llama|llama3|qwen2|qwen3|phi3|mixtral|qwen2moe|qwen3moe|olmoe --out DIR
                        --tokenizer-dir DIR
                        --tokens IDS.json --logits-out FILE.f32
Exit code 3 (with a message) when torch/transformers are not installed: the caller skips.
"""
import argparse
import json
import shutil
import sys

try:
    import torch
    import transformers
except ImportError as e:  # the CPU machines have no torch; the GPU machine does
    print(f"transformers unavailable: {e}", file=sys.stderr)
    sys.exit(3)


def make_config(arch, vocab):
    common = dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    if arch == "llama":
        return transformers.LlamaConfig(**common, rope_theta=10000.0)
    if arch == "llama3":
        return transformers.LlamaConfig(**common, rope_theta=500000.0,
                                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 64})
    if arch == "qwen2":
        return transformers.Qwen2Config(**{**common, "tie_word_embeddings": True}, rope_theta=1000000.0)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=48, rope_theta=1000000.0)
    if arch == "phi3":
        return transformers.Phi3Config(**{**common, "num_key_value_heads": 4}, rope_theta=10000.0,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    # Mixtures of experts: 8 experts of width 64; Mixtral routes 2 per token (renormalized), the
    # others 3; qwen3moe renormalizes as Qwen3-30B-A3B's config does, qwen2moe and olmoe do not.
    if arch == "mixtral":
        return transformers.MixtralConfig(**{**common, "intermediate_size": 64}, num_local_experts=8,
                                          num_experts_per_tok=2, rope_theta=10000.0)
    if arch == "qwen2moe":
        return transformers.Qwen2MoeConfig(**common, moe_intermediate_size=64, shared_expert_intermediate_size=96,
                                           num_experts=8, num_experts_per_tok=3, norm_topk_prob=False,
                                           rope_theta=10000.0)
    if arch == "qwen3moe":
        return transformers.Qwen3MoeConfig(**common, head_dim=48, moe_intermediate_size=64, num_experts=8,
                                           num_experts_per_tok=3, norm_topk_prob=True, rope_theta=1000000.0)
    if arch == "olmoe":
        return transformers.OlmoeConfig(**{**common, "intermediate_size": 64, "num_key_value_heads": 4},
                                        num_experts=8, num_experts_per_tok=3, rope_theta=10000.0)
    raise SystemExit(f"unknown arch {arch}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--logits-out", required=True)
    args = ap.parse_args()

    with open(f"{args.tokenizer_dir}/tokenizer.json", encoding="utf-8") as f:
        tokenizer = json.load(f)
    # Every id the tokenizer can produce, added tokens (Qwen's chat markers) included.
    vocab = max([len(tokenizer["model"]["vocab"])] + [t["id"] + 1 for t in tokenizer.get("added_tokens", [])])
    torch.manual_seed(0)
    config = make_config(args.arch, vocab)
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    # Random init keeps norms at 1 and biases at 0; perturb them so that they are exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight"):
                p.copy_(torch.randn_like(p))  # routers: clear top-k choices, no near-ties
            elif name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.copy_(torch.randn_like(p) * 0.05)
    model.save_pretrained(args.out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{args.tokenizer_dir}/{name}", f"{args.out}/{name}")

    with open(args.tokens, encoding="utf-8") as f:
        ids = json.load(f)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    logits.astype("<f4").tofile(args.logits_out)
    print(json.dumps({"arch": args.arch, "n_tokens": len(ids), "n_vocab": int(logits.shape[1]),
                      "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
