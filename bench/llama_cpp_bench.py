#!/usr/bin/env python3
"""llama-bench's pp/tg measurements through llama-cpp-python: the speed of the llama.cpp peer.

Usage: llama_cpp_bench.py --model M.gguf [--p 512] [--n 128] [--r 5] [--threads 2] [--json OUT.json]

  ppP: clear the KV cache, evaluate P random token ids (fixed seed, ids below n_vocab) in one batch
       (n_batch = n_ubatch = P); tokens/s = P / time.
  tgN: clear the KV cache, evaluate 1 token (BOS when the model has one, as `lathe bench` does),
       then time N single-token evaluations of random ids; tokens/s = N / time.
Each test runs once as a warm-up, then --r timed repetitions. Prints a markdown table (mean ± sample
standard deviation) and writes a JSON array with one object per test, the fields of
`lathe bench --json`: test ("pp512", "tg128"), avg_ts, stddev_ts, samples_ts, threads, model_bytes
(llama.cpp's llama_model_size: tensor bytes), n_prompt, n_gen, reps, n_params, backend, model.
Needs llama-cpp-python (scripts/test.sh installs it into .venv): .venv/bin/python bench/llama_cpp_bench.py ...
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "oracle"))
from llama_cpp_peer import load_llama  # noqa: E402

SEED = 1234


def time_pp(llm, tokens):
    llm.reset()  # n_tokens = 0: eval() drops the whole KV cache first
    start = time.perf_counter()
    llm.eval(tokens)
    return len(tokens) / (time.perf_counter() - start)


def time_tg(llm, first, tokens):
    llm.reset()
    llm.eval([first])
    start = time.perf_counter()
    for token in tokens:
        llm.eval([token])
    return len(tokens) / (time.perf_counter() - start)


def run_test(name, once, reps):
    once()  # warm-up: page in the weights, size the buffers
    samples = [once() for _ in range(reps)]
    return name, samples


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--p", type=int, default=512)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--r", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    if args.p < 1 or args.n < 1 or args.r < 1:
        print("error: --p, --n and --r must be at least 1", file=sys.stderr)
        return 2

    import llama_cpp
    llm = load_llama(args.model, n_ctx=max(args.p, args.n + 1), n_batch=args.p, threads=args.threads,
                     logits_all=False)
    rng = np.random.default_rng(SEED)
    n_vocab = llm.n_vocab()
    prompt = [int(t) for t in rng.integers(0, n_vocab, size=args.p)]
    gen = [int(t) for t in rng.integers(0, n_vocab, size=args.n)]
    bos = llm.token_bos()
    first = bos if 0 <= bos < n_vocab else gen[0]  # like `lathe bench`: the context starts with BOS

    tests = [run_test(f"pp{args.p}", lambda: time_pp(llm, prompt), args.r),
             run_test(f"tg{args.n}", lambda: time_tg(llm, first, gen), args.r)]
    model_bytes, n_params = int(llm._model.size()), int(llm._model.n_params())
    results = []
    for name, samples in tests:
        results.append({
            "test": name,
            "n_prompt": args.p if name.startswith("pp") else 0,
            "n_gen": args.n if name.startswith("tg") else 0,
            "reps": args.r,
            "avg_ts": statistics.fmean(samples),
            "stddev_ts": statistics.stdev(samples) if len(samples) > 1 else 0.0,
            "samples_ts": samples,
            "threads": args.threads,
            "model_bytes": model_bytes,
            "n_params": n_params,
            "backend": f"llama.cpp cpu (llama-cpp-python {llama_cpp.__version__})",
            "model": str(args.model),
        })

    print(f"| model | size | threads | test | t/s |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {Path(r['model']).name} | {model_bytes / 2**20:.2f} MiB | {r['threads']} | {r['test']} | "
              f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
