"""The peers of layer streaming (docs/STREAMING.md), timed on the GPU machine: Hugging Face
accelerate's offload (device_map="auto" with a GPU memory cap) and AirLLM (layer by layer from
disk), greedy decode of a Hugging Face model directory at batch 1.

s/token is (time of a generate() of N new tokens - time of one of 1 new token) / (N - 1): the
prompt's prefill and the first token are taken out, as `lathe bench` tg does.

Usage: offload_peer.py --peer accelerate|airllm --model DIR [--gpu-memory 4GiB] [--tokens 8]
                       [--prompt-tokens 16] [--out FILE.json]
Prints (and writes) one JSON object: peer, version, s_per_token, load_s, peak GPU memory.
"""
import argparse
import json
import sys
import time


def timed_generate(model, ids, new_tokens, torch):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    produced = out.shape[1] - ids.shape[1] if hasattr(out, "shape") else new_tokens
    return elapsed, produced


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, choices=["accelerate", "airllm"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--gpu-memory", default="4GiB", help="accelerate's max_memory for GPU 0")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.tokens < 2:
        sys.exit("--tokens must be at least 2 (one generate of 1 token is subtracted)")

    import torch

    ids = torch.tensor([[(i * 7919 + 13) % 32000 for i in range(args.prompt_tokens)]], dtype=torch.long)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if args.peer == "accelerate":
        import accelerate
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.bfloat16, device_map="auto",
            max_memory={0: args.gpu_memory, "cpu": "200GiB"})
        version = f"accelerate {accelerate.__version__}, transformers {transformers.__version__}"
        ids = ids.to("cuda:0")
    else:
        import airllm

        model = airllm.AutoModel.from_pretrained(args.model)
        version = f"airllm {getattr(airllm, '__version__', '4.0.0')}"
        ids = ids.cuda()
    load_s = time.perf_counter() - start

    one, _ = timed_generate(model, ids, 1, torch)
    many, produced = timed_generate(model, ids, args.tokens, torch)
    if produced != args.tokens:
        sys.exit(f"{args.peer} produced {produced} tokens, not {args.tokens}")
    result = {
        "peer": args.peer,
        "version": version,
        "model": args.model,
        "gpu_memory_cap": args.gpu_memory if args.peer == "accelerate" else None,
        "tokens": args.tokens,
        "prompt_tokens": args.prompt_tokens,
        "load_s": round(load_s, 2),
        "first_token_s": round(one, 3),
        "s_per_token": round((many - one) / (args.tokens - 1), 4),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
