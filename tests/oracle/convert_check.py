"""Checks `lathe convert` output against gguf-py, independently of lathe's own code.

usage: convert_check.py MODEL.gguf OUT_DIR
For every GGUF tensor: dequantize with gguf-py, reshape to the Hugging Face shape, undo llama.cpp's
Q/K row permutation (llama architecture), and compare exactly with the tensor of the matching
Hugging Face name in OUT_DIR (read with the safetensors package). Prints a JSON report.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file

LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(name):
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{LAYER_NAMES[rest]}"


def unpermute(w, n_head):
    # inverse of llama.cpp convert_hf_to_gguf.py's permute()
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    gguf_path, out_dir = sys.argv[1], Path(sys.argv[2])
    reader = GGUFReader(gguf_path)
    arch = reader.fields["general.architecture"].contents()
    n_head = reader.fields[f"{arch}.attention.head_count"].contents()
    n_head_kv = reader.fields[f"{arch}.attention.head_count_kv"].contents()
    index = out_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(load_file(out_dir / f))
    mismatches, checked = [], 0
    for t in reader.tensors:
        name = hf_name(t.name)
        want = dequantize(t.data, t.tensor_type).astype(np.float32)
        want = want.reshape([int(d) for d in reversed(t.shape)])
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            want = unpermute(want, n_head)
        if arch == "llama" and t.name.endswith("attn_k.weight"):
            want = unpermute(want, n_head_kv)
        got = tensors.pop(name, None)
        checked += 1
        if got is None:
            mismatches.append(f"{t.name}: {name} missing from the export")
        elif got.dtype != np.float32 or got.shape != want.shape:
            mismatches.append(f"{t.name}: dtype/shape {got.dtype}{got.shape} != float32{want.shape}")
        elif not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad = int(np.sum(got.view(np.uint32) != want.view(np.uint32)))
            mismatches.append(f"{t.name}: {bad} of {want.size} values differ")
    extra = sorted(tensors)
    print(json.dumps({"checked": checked, "mismatches": mismatches, "extra": extra}))


if __name__ == "__main__":
    main()
