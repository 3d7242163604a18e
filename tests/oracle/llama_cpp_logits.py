#!/usr/bin/env python3
"""Compares lathe's logits with llama.cpp's (llama-cpp-python) for the same token ids, teacher-forced.

Usage: llama_cpp_logits.py --model M.gguf --tokens IDS.json --lathe-logits L.bin [--threads 2]
                           [--kv-type f16|f32] [--dump-logits OUT.bin] [--max-listed 50]

IDS.json: a JSON array of token ids, evaluated by llama.cpp exactly as given (no tokenization, no BOS
added) in one batch (n_batch = n_ubatch = number of tokens), every position's logits kept.
L.bin: lathe's logits, raw little-endian float32, [n_tokens x n_vocab] row-major.
--dump-logits writes llama.cpp's logits in the same layout (then --lathe-logits may be left out).
--kv-type: llama.cpp's KV cache type, f16 (its default) or f32.

Prints one JSON line:
  n_tokens, n_vocab, kv_type, top1_agreement (fraction of positions whose argmaxes agree),
  mean_abs_diff, max_abs_diff, rms_diff, mean_abs_logit (llama.cpp's, for scale), non_finite (count
  of non-finite lathe logits), max_abs_diff_position,
  disagreements: [{pos, lathe_top1, llama_top1, llama_margin (llama.cpp's top-1 minus top-2 logit: a
  small margin is a near-tie, not a bug), lathe_margin (lathe's logit of its top-1 minus its logit of
  llama.cpp's top-1)}], the first --max-listed of them by position (lathe_top1 is -1 for a row with
  non-finite logits), n_disagreements the full count.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_peer import KV_TYPES, fail, load_llama, read_tokens  # noqa: E402


def llama_logits(model, tokens, threads, kv_type):
    llm = load_llama(model, n_ctx=len(tokens), n_batch=len(tokens), threads=threads, logits_all=True,
                     kv_type=kv_type)
    n_vocab = llm.n_vocab()
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        fail(f"token ids {bad[:5]} are outside the model's vocabulary [0, {n_vocab})")
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[:len(tokens), :n_vocab], dtype=np.float32, copy=True)


def top2_margin(row):
    top2 = np.partition(row, -2)[-2:]
    return float(top2[1] - top2[0])


def compare(reference, lathe, max_listed):
    n_tokens, n_vocab = reference.shape
    finite = np.isfinite(lathe)
    # Non-finite lathe logits are counted (non_finite) and left out of the difference statistics,
    # which stay finite so that the JSON stays standard.
    diff = np.where(finite, np.abs(np.where(finite, lathe, 0).astype(np.float64) - reference), 0.0)
    n_finite = max(int(finite.sum()), 1)
    ref_top = reference.argmax(axis=1)
    lathe_top = np.where(finite.all(axis=1), np.where(finite, lathe, 0).argmax(axis=1), -1)
    disagree = np.nonzero(ref_top != lathe_top)[0]
    listed = []
    for pos in disagree[:max_listed]:
        pos = int(pos)
        entry = {"pos": pos, "lathe_top1": int(lathe_top[pos]), "llama_top1": int(ref_top[pos]),
                 "llama_margin": top2_margin(reference[pos])}
        if lathe_top[pos] >= 0:
            entry["lathe_margin"] = float(lathe[pos, lathe_top[pos]] - lathe[pos, ref_top[pos]])
        listed.append(entry)
    worst = int(np.argmax(diff)) // n_vocab
    return {
        "n_tokens": n_tokens,
        "n_vocab": n_vocab,
        "top1_agreement": float(1.0 - len(disagree) / n_tokens),
        "mean_abs_diff": float(diff.sum() / n_finite),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_position": worst,
        "rms_diff": float(np.sqrt(np.square(diff).sum() / n_finite)),
        "mean_abs_logit": float(np.abs(reference).mean()),
        "non_finite": int((~finite).sum()),
        "n_disagreements": int(len(disagree)),
        "disagreements": listed,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--lathe-logits")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16")
    p.add_argument("--dump-logits")
    p.add_argument("--max-listed", type=int, default=50)
    args = p.parse_args()
    if not args.lathe_logits and not args.dump_logits:
        fail("give --lathe-logits (to compare) and/or --dump-logits (to save llama.cpp's logits)")
    tokens = read_tokens(args.tokens)
    if args.lathe_logits:  # check the file before the (slower) llama.cpp run
        size = Path(args.lathe_logits).stat().st_size if Path(args.lathe_logits).is_file() else -1
        if size < 0:
            fail(f"{args.lathe_logits}: no such file")
        if size % (4 * len(tokens)) != 0:
            fail(f"{args.lathe_logits}: {size} bytes is not {len(tokens)} rows of float32 logits")
    reference = llama_logits(args.model, tokens, args.threads, args.kv_type)
    if args.dump_logits:
        reference.tofile(args.dump_logits)
    if not args.lathe_logits:
        print(json.dumps({"n_tokens": reference.shape[0], "n_vocab": reference.shape[1], "kv_type": args.kv_type}))
        return 0
    lathe = np.fromfile(args.lathe_logits, dtype="<f4")
    if lathe.size != reference.size:
        fail(f"{args.lathe_logits}: {lathe.size} floats, expected n_tokens x n_vocab = "
             f"{reference.shape[0]} x {reference.shape[1]} = {reference.size}")
    report = {"kv_type": args.kv_type, **compare(reference, lathe.reshape(reference.shape), args.max_listed)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
