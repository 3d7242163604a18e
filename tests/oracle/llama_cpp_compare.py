#!/usr/bin/env python3
"""One-process comparison of lathe with llama.cpp on a quantized model, scaled by llama.cpp's own
quantization noise.

Usage: llama_cpp_compare.py --model Q.gguf [--reference F32.gguf] --sequences SEQS.json
                            --lathe-dir DIR [--greedy-prompts PROMPTS.json --greedy-n 64] [--threads 2]
                            [--kv-type f16|f32|q8_0] [--reference-kv-type f16|f32|q8_0]
                            [--control-vector CV.gguf:SCALE]

SEQS.json: a JSON list of token-id lists, each evaluated teacher-forced in one batch.
DIR/logits_<i>.f32: lathe's logits for sequence i (float32, [n_tokens x n_vocab]).
DIR/greedy.json (with --greedy-prompts): lathe's greedy continuations, a list of id lists.
--reference: the same model dequantized to F32. llama.cpp runs on it too, and the report includes
how far llama.cpp's quantized run is from llama.cpp's F32 run ("peer_noise"): both engines
quantize activations to 8 bits for quantized weights, and a one-ulp difference anywhere flips
roundings that cascade through the layers, so two correct engines differ by about this much.
--kv-type: llama.cpp's KV cache type for --model (default f16). --reference-kv-type: the
reference run's (default f16); --control-vector: llama.cpp's control vector (llama_set_adapter_cvec,
direction.N added to layer N's output, N >= 1, scaled) on every run. Without --reference the reference is --model itself, so the
peer noise is what the KV cache type alone changes. Flash attention is on for every run when
any run keeps a q8_0 cache (llama.cpp needs it for a quantized V cache).

llama.cpp keeps every weight in its plain CPU buffers (no runtime repacking, no AMX tiles), so its
kernels are the same on every CPU. Progress goes to stderr with elapsed seconds, after a line of
llama.cpp's build features, so that a run that fails or is killed shows how far it got.

Prints one JSON object: {"lathe_vs_llama": metrics, "peer_noise": metrics | null,
"greedy": {"identical": k, "n": n, "diverge_at": [...], "peer_identical": k | null}} where
metrics = {positions, top1_agreement, mean_abs_diff, max_abs_diff, mean_abs_logit}.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_peer import KV_TYPES, load_llama, system_info  # noqa: E402


def apply_control_vector(llm, spec):
    """llama.cpp's control vector, as its common library loads one: direction.N (gguf-py's reader)
    times the scale at offset (N - 1) * n_embd of a buffer for layers 1..n_layer - 1."""
    import ctypes
    import llama_cpp
    from gguf import GGUFReader
    path, _, scale = spec.rpartition(":")
    if not path:
        path, scale = spec, "1"
    n_embd = llama_cpp.llama_model_n_embd(llm.model)
    n_layer = llama_cpp.llama_model_n_layer(llm.model)
    data = np.zeros(n_embd * n_layer, dtype=np.float32)
    for tensor in GGUFReader(path).tensors:
        layer = int(tensor.name.split(".")[1])
        if 1 <= layer < n_layer:
            data[(layer - 1) * n_embd:layer * n_embd] += float(scale) * np.asarray(tensor.data, dtype=np.float32)
    pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if llama_cpp.llama_set_adapter_cvec(llm.ctx, pointer, data.size, n_embd, 1, n_layer - 1) != 0:
        raise SystemExit(f"llama.cpp refused the control vector {path}")
    llm._lathe_cvec = data  # llama.cpp copies it, but keep it alive with the context anyway


class Metrics:
    def __init__(self):
        self.positions = self.agree = 0
        self.sum_abs = self.sum_logit = 0.0
        self.max_abs = 0.0

    def add(self, ours, theirs):
        self.positions += ours.shape[0]
        self.agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
        diff = np.abs(ours.astype(np.float64) - theirs)
        self.sum_abs += float(diff.mean(1).sum())
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sum_logit += float(np.abs(theirs).astype(np.float64).mean(1).sum())

    def report(self):
        n = max(self.positions, 1)
        return {"positions": self.positions, "top1_agreement": self.agree / n, "mean_abs_diff": self.sum_abs / n,
                "max_abs_diff": self.max_abs, "mean_abs_logit": self.sum_logit / n}


def teacher_forced(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids), : llm.n_vocab()], dtype=np.float32)


def greedy(llm, prompt, n):
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1, : llm.n_vocab()]))
        out.append(token)
        if len(out) < n:
            llm.eval([token])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--reference")
    p.add_argument("--sequences", required=True)
    p.add_argument("--lathe-dir", required=True)
    p.add_argument("--greedy-prompts")
    p.add_argument("--greedy-n", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16")
    p.add_argument("--reference-kv-type", choices=sorted(KV_TYPES))
    p.add_argument("--control-vector")
    args = p.parse_args()
    if args.reference_kv_type and not args.reference:
        args.reference = args.model
    reference_kv = args.reference_kv_type or "f16"
    flash_attn = "q8_0" in (args.kv_type, reference_kv)
    sequences = json.loads(Path(args.sequences).read_text())
    prompts = json.loads(Path(args.greedy_prompts).read_text()) if args.greedy_prompts else []
    n_ctx = max([len(s) for s in sequences] + [len(q) + args.greedy_n for q in prompts])
    n_batch = max([len(s) for s in sequences] + [len(q) for q in prompts])

    start = time.monotonic()

    def progress(what):
        print(f"[{time.monotonic() - start:6.1f} s] {what}", file=sys.stderr, flush=True)

    def load(path, kv_type):
        llm = load_llama(path, n_ctx=n_ctx, n_batch=n_batch, threads=args.threads, logits_all=True, kv_type=kv_type,
                         flash_attn=flash_attn, extra_buffers=False)
        progress(f"loaded {path} (KV cache {kv_type})")
        if args.control_vector:
            apply_control_vector(llm, args.control_vector)
        return llm

    llm = load(args.model, args.kv_type)
    progress(f"llama.cpp: {system_info()}")
    ref = load(args.reference, reference_kv) if args.reference else None
    ours_vs_llama, peer_noise = Metrics(), Metrics()
    for i, ids in enumerate(sequences):
        theirs = teacher_forced(llm, ids)
        ours = np.fromfile(Path(args.lathe_dir) / f"logits_{i}.f32", dtype="<f4").reshape(len(ids), -1)
        if ours.shape != theirs.shape:
            raise SystemExit(f"sequence {i}: lathe logits {ours.shape} vs llama.cpp {theirs.shape}")
        ours_vs_llama.add(ours, theirs)
        if ref is not None:
            peer_noise.add(teacher_forced(ref, ids), theirs)
        progress(f"sequence {i + 1}/{len(sequences)} teacher-forced ({len(ids)} tokens)")

    report = {"lathe_vs_llama": ours_vs_llama.report(), "peer_noise": peer_noise.report() if ref else None}
    if prompts:
        lathe_greedy = json.loads((Path(args.lathe_dir) / "greedy.json").read_text())
        identical, peer_identical, diverge = 0, 0, []
        for prompt, ours in zip(prompts, lathe_greedy):
            theirs = greedy(llm, prompt, args.greedy_n)
            k = next((j for j, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            identical += ours == theirs
            diverge.append(None if ours == theirs else k)
            if ref is not None:
                peer_identical += greedy(ref, prompt, args.greedy_n) == theirs
            progress(f"greedy prompt {len(diverge)}/{len(prompts)} ({args.greedy_n} tokens)")
        report["greedy"] = {"identical": identical, "n": len(prompts), "diverge_at": diverge,
                            "peer_identical": peer_identical if ref else None}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
