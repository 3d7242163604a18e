#!/usr/bin/env python3
"""LoRA adapters: gguf-py writes them, llama.cpp (llama-cpp-python) applies them. The oracle of
lathe's --lora (weights/lora.hpp) and of `lathe ablate --lora-out`.

  lora_oracle.py make --base MODEL.gguf --out ADAPTER.gguf [--targets attn_q,attn_k,...] [--layers 0,3]
                      [--rank 4] [--alpha 8] [--std 0.02] [--seed 0] [--norms] [--dtype f32|f16]
      A random adapter for MODEL, written by gguf-py (not by lathe): lora_a (ggml [n_in, rank]),
      lora_b ([rank, n_out]) per target matrix of each layer, general.type = adapter,
      adapter.type = lora, adapter.lora.alpha. --norms adds a per-layer norm vector, which llama.cpp
      skips. Prints {"pairs": N}.

  lora_oracle.py compare --model MODEL.gguf --sequences SEQS.json --lathe-dir DIR
                         [--lora ADAPTER.gguf --scale S] [--reference-model M2.gguf] [--threads 1]
      Teacher-forced logits of llama.cpp on MODEL with the adapter at scale S, against lathe's
      DIR/logits_<i>.f32. Also llama.cpp without the adapter (or on --reference-model without it,
      e.g. a model with the edit merged), so that the test can see that the adapter changes the
      function by far more than the two engines differ. Prints
      {"lathe_vs_llama": metrics, "llama_vs_without": metrics} (metrics as in llama_cpp_compare.py).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_compare import Metrics, teacher_forced  # noqa: E402
from llama_cpp_peer import fail, load_llama  # noqa: E402


def make(args):
    try:
        import gguf
    except ImportError as e:
        fail(f"gguf-py is not installed ({e}); run scripts/test.sh")
    reader = gguf.GGUFReader(args.base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}  # ggml order: [n_in, n_out]
    n_layer = int(reader.fields[f"{arch}.block_count"].parts[-1][0])
    n_embd = int(reader.fields[f"{arch}.embedding_length"].parts[-1][0])
    layers = [int(x) for x in args.layers.split(",")] if args.layers else range(n_layer)
    rng = np.random.default_rng(args.seed)
    dtype = np.float32 if args.dtype == "f32" else np.float16
    writer = gguf.GGUFWriter(args.out, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", args.alpha)
    pairs = 0
    for layer in layers:
        for target in args.targets.split(","):
            name = f"blk.{layer}.{target}.weight"
            if name not in shapes:
                fail(f"{args.base} has no tensor {name}")
            n_in, n_out = shapes[name][0], shapes[name][1]
            # PEFT's shapes: A [rank, n_in], B [n_out, rank]; gguf-py reverses them into ggml order.
            a = (rng.standard_normal((args.rank, n_in)) * args.std).astype(dtype)
            b = (rng.standard_normal((n_out, args.rank)) * args.std).astype(dtype)
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)
            pairs += 1
        if args.norms:
            writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(json.dumps({"pairs": pairs}))


def compare(args):
    sequences = json.loads(Path(args.sequences).read_text())
    n_ctx = max(len(s) for s in sequences)

    def load(model, lora):
        return load_llama(model, n_ctx=n_ctx, n_batch=n_ctx, threads=args.threads, logits_all=True,
                          extra_buffers=False, lora_path=lora, lora_scale=args.scale)

    with_lora = load(args.model, args.lora)
    without = load(args.reference_model or args.model, None)
    ours_vs_llama, llama_vs_without = Metrics(), Metrics()
    for i, ids in enumerate(sequences):
        theirs = teacher_forced(with_lora, ids)
        ours = np.fromfile(Path(args.lathe_dir) / f"logits_{i}.f32", dtype="<f4").reshape(len(ids), -1)
        if ours.shape != theirs.shape:
            fail(f"sequence {i}: lathe logits {ours.shape} vs llama.cpp {theirs.shape}")
        ours_vs_llama.add(ours, theirs)
        llama_vs_without.add(teacher_forced(without, ids), theirs)
    print(json.dumps({"lathe_vs_llama": ours_vs_llama.report(), "llama_vs_without": llama_vs_without.report()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--targets", default="attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down")
    m.add_argument("--layers", default="")
    m.add_argument("--rank", type=int, default=4)
    m.add_argument("--alpha", type=float, default=8.0)
    m.add_argument("--std", type=float, default=0.02)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--norms", action="store_true")
    m.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    c = sub.add_parser("compare")
    c.add_argument("--model", required=True)
    c.add_argument("--sequences", required=True)
    c.add_argument("--lathe-dir", required=True)
    c.add_argument("--lora")
    c.add_argument("--scale", type=float, default=1.0)
    c.add_argument("--reference-model")
    c.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    make(args) if args.command == "make" else compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
