#!/usr/bin/env python3
"""Greedy continuation by llama.cpp (llama-cpp-python): the peer for lathe's greedy generation.

Usage: llama_cpp_greedy.py --model M.gguf --tokens IDS.json [--n 64] [--threads 2] [--kv-type f16|f32]
                           [--stop-at-eog]

IDS.json: a JSON array of prompt token ids, evaluated exactly as given (no tokenization, no BOS added).
Then --n tokens are chosen greedily (the argmax of the logits, lowest id on ties: temperature 0,
top-k 1, no penalties), each fed back one at a time. With --stop-at-eog generation stops after an
end-of-generation token (which is included). Prints the generated ids as one JSON array.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_peer import KV_TYPES, fail, load_llama, read_tokens  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16")
    p.add_argument("--stop-at-eog", action="store_true")
    args = p.parse_args()
    if args.n < 1:
        fail("--n must be at least 1")
    prompt = read_tokens(args.tokens)
    llm = load_llama(args.model, n_ctx=len(prompt) + args.n, n_batch=len(prompt), threads=args.threads,
                     logits_all=True, kv_type=args.kv_type)
    n_vocab = llm.n_vocab()
    bad = [t for t in prompt if not 0 <= t < n_vocab]
    if bad:
        fail(f"token ids {bad[:5]} are outside the model's vocabulary [0, {n_vocab})")
    from llama_cpp import llama_vocab_is_eog  # noqa: E402  (after load_llama checked the import)
    llm.reset()
    llm.eval(prompt)
    generated = []
    for _ in range(args.n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1, :n_vocab]))
        generated.append(token)
        if args.stop_at_eog and llama_vocab_is_eog(llm._model.vocab, token):
            break
        if len(generated) < args.n:
            llm.eval([token])
    print(json.dumps(generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
