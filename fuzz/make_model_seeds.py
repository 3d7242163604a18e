#!/usr/bin/env python3
"""Writes the model loader's fuzzing seeds (fuzz/corpus/model_weights/): tiny complete GGUF models,
F32, 1 layer, 8 wide: a dense llama and the mixtures of experts llama (Mixtral's layout), qwen2moe
(shared expert, Q/K/V biases), qwen3moe (per-head Q/K norms) and olmoe (whole-projection Q/K
norms), 2 experts of width 4. Needs gguf-py (the test venv has it). Run once; the outputs are
committed."""
import os
import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "model_weights")
EMBD, HEADS, KV, HEAD_DIM, VOCAB, FF, EXPERTS = 8, 2, 1, 4, 4, 4, 2


def write(name, arch, moe):
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(os.path.join(OUT, name), arch)
    w.add_block_count(1)
    w.add_embedding_length(EMBD)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS if arch == "olmoe" else KV)
    w.add_context_length(16)
    w.add_vocab_size(VOCAB)
    kv = (HEADS if arch == "olmoe" else KV) * HEAD_DIM

    def t(n, *shape):  # shape as numpy (row-major), the reverse of GGUF's
        w.add_tensor(n, rng.standard_normal(shape).astype(np.float32))

    t("token_embd.weight", VOCAB, EMBD)
    t("output_norm.weight", EMBD)
    p = "blk.0."
    t(p + "attn_norm.weight", EMBD)
    t(p + "ffn_norm.weight", EMBD)
    t(p + "attn_q.weight", HEADS * HEAD_DIM, EMBD)
    t(p + "attn_k.weight", kv, EMBD)
    t(p + "attn_v.weight", kv, EMBD)
    t(p + "attn_output.weight", EMBD, HEADS * HEAD_DIM)
    if arch == "qwen2moe":
        t(p + "attn_q.bias", HEADS * HEAD_DIM)
        t(p + "attn_k.bias", kv)
        t(p + "attn_v.bias", kv)
    if arch == "qwen3moe":
        t(p + "attn_q_norm.weight", HEAD_DIM)
        t(p + "attn_k_norm.weight", HEAD_DIM)
    if arch == "olmoe":
        t(p + "attn_q_norm.weight", HEADS * HEAD_DIM)
        t(p + "attn_k_norm.weight", kv)
    if not moe:
        t(p + "ffn_gate.weight", FF, EMBD)
        t(p + "ffn_up.weight", FF, EMBD)
        t(p + "ffn_down.weight", EMBD, FF)
    else:
        w.add_expert_count(EXPERTS)
        w.add_expert_used_count(1)
        if arch.startswith("qwen"):
            w.add_expert_feed_forward_length(FF)
        t(p + "ffn_gate_inp.weight", EXPERTS, EMBD)
        t(p + "ffn_gate_exps.weight", EXPERTS, FF, EMBD)
        t(p + "ffn_up_exps.weight", EXPERTS, FF, EMBD)
        t(p + "ffn_down_exps.weight", EXPERTS, EMBD, FF)
        if arch == "qwen2moe":
            w.add_expert_shared_feed_forward_length(FF)
            t(p + "ffn_gate_inp_shexp.weight", EMBD)
            t(p + "ffn_gate_shexp.weight", FF, EMBD)
            t(p + "ffn_up_shexp.weight", FF, EMBD)
            t(p + "ffn_down_shexp.weight", EMBD, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


os.makedirs(OUT, exist_ok=True)
write("llama_dense.gguf", "llama", False)
write("mixtral.gguf", "llama", True)
for arch in ("qwen2moe", "qwen3moe", "olmoe"):
    write(f"{arch}.gguf", arch, True)
