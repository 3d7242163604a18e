"""Hugging Face transformers as the reference and the speed peer for lathe's CUDA backend, on a
model directory (e.g. a random-weight model from make_random_hf.py), on the GPU machine:

  * reference logits: 256 seeded random tokens, teacher-forced in one forward pass, computed in
    float32 from the stored bf16 weights (the exact function of those weights; lathe is compared
    with it by tests/forward/test_cuda_vs_hf_big.cpp);
  * speed, bf16, batch 1, per peer (--peers, comma-separated; default eager):
      eager    eager attention: pp512 (one forward of 512 tokens), tg128 (128 greedy tokens with
               the KV cache via generate()) and batch-16 decode (16 x 128 tokens);
      sdpa     PyTorch's scaled-dot-product attention (transformers' default): pp512 and tg128;
      compile  sdpa with a static KV cache (generate(cache_implementation="static")), which makes
               transformers torch.compile the decode step (inductor, mode "reduce-overhead": CUDA
               graphs); tg128 after a first, compiling call whose time is reported apart.

Usage: hf_peer.py --model DIR --out DIR [--reps 3] [--no-speed] [--peers eager,sdpa,compile]
Writes OUT/ids.json, OUT/ref.f32 (256 x vocab float32) and OUT/hf_speed.json.
"""
import argparse
import json
import time

import torch
import transformers


def timed(fn, reps):
    times = []
    for _ in range(reps + 1):  # the first run warms up
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-ref", type=int, default=256)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--peers", default="eager", help="comma-separated: eager, sdpa, compile")
    args = ap.parse_args()
    peers = args.peers.split(",")
    unknown = set(peers) - {"eager", "sdpa", "compile"}
    if unknown:
        ap.error(f"unknown peer(s) {sorted(unknown)}; choose from eager, sdpa, compile")

    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16,
                                                              attn_implementation="eager").cuda().eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (1, args.n_ref), generator=gen)
    with open(f"{args.out}/ids.json", "w") as f:
        json.dump(ids[0].tolist(), f)
    with torch.no_grad():
        bf16_logits = model(ids.cuda()).logits[0].float().cpu()
        model.float()
        logits = model(ids.cuda()).logits[0].float().cpu()
        logits.numpy().tofile(f"{args.out}/ref.f32")
        model.to(torch.bfloat16)
    result = {"model": args.model, "transformers": transformers.__version__, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(), "params": sum(p.numel() for p in model.parameters())}
    # How far transformers' own bf16 run is from the float32 reference: the scale of "bf16 tolerance".
    result["hf_bf16_top1_vs_f32"] = float((bf16_logits.argmax(-1) == logits.argmax(-1)).float().mean())
    result["hf_bf16_rel_err_vs_f32"] = float((bf16_logits - logits).norm() / logits.norm())
    if not args.no_speed:
        prompt = torch.randint(0, vocab, (1, 512), generator=gen).cuda()
        start = torch.randint(0, vocab, (1, 1), generator=gen).cuda()
        batch = torch.randint(0, vocab, (16, 1), generator=gen).cuda()
        cfg = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            if "eager" in peers:
                result["pp512_tok_s"] = 512 / timed(lambda: model(prompt), args.reps)
                result["tg128_tok_s"] = 128 / timed(lambda: model.generate(start, **cfg), args.reps)
                t = timed(lambda: model.generate(batch, **cfg), max(1, args.reps - 1))
                result["batch16_tg128_tok_s"] = 16 * 128 / t
            if "sdpa" in peers or "compile" in peers:
                model.set_attn_implementation("sdpa")
            if "sdpa" in peers:
                result["sdpa_pp512_tok_s"] = 512 / timed(lambda: model(prompt), args.reps)
                result["sdpa_tg128_tok_s"] = 128 / timed(lambda: model.generate(start, **cfg), args.reps)
            if "compile" in peers:
                static = dict(cfg, cache_implementation="static")
                torch.cuda.synchronize()
                begin = time.perf_counter()
                model.generate(start, **static)  # compiles the decode step
                torch.cuda.synchronize()
                result["compile_first_call_s"] = time.perf_counter() - begin
                # transformers keeps the compiled step as _compiled_call; without it the figure
                # below would be eager decoding with a static cache, not the compiled peer.
                if not hasattr(model, "_compiled_call"):
                    raise SystemExit("generate(cache_implementation='static') did not compile the decode step")
                result["compile_tg128_tok_s"] = 128 / timed(lambda: model.generate(start, **static), args.reps)
    with open(f"{args.out}/hf_speed.json", "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
