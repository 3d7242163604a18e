// One table maps tensor names between GGUF (lathe's canonical names, "blk.{i}.attn_q.weight") and
// Hugging Face ("model.layers.{i}.self_attn.q_proj.weight"), per architecture.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "arch/hparams.hpp"

namespace lathe {

// hf_to_canonical_name knows the dense tensors only (the converter's table); canonical_to_hf_name
// also the experts' (below).
std::optional<std::string> hf_to_canonical_name(Arch arch, std::string_view hf_name);
std::optional<std::string> canonical_to_hf_name(Arch arch, std::string_view canonical_name);

// One expert's matrix of a stacked expert tensor (stacked: "ffn_gate_exps", "ffn_up_exps",
// "ffn_down_exps") as lathe names it when a Hugging Face checkpoint stores experts one by one:
// "blk.{layer}.{stacked}.{expert}.weight".
std::string expert_tensor_name(uint32_t layer, std::string_view stacked, uint32_t expert);

// llama.cpp's converter reorders the rows of Llama-family Q and K projections so that RoPE can
// rotate adjacent pairs (GGUF) instead of halves (Hugging Face). Which heads count this tensor has
// when it needs that reordering, nullopt otherwise.
std::optional<uint32_t> qk_permute_heads(const HParams& hp, std::string_view canonical_name);

// Row reordering of a [rows x cols] row-major matrix holding n_heads heads of rows/n_heads rows.
// gguf_from_hf: HF layout -> GGUF layout (what llama.cpp's converter does); hf_from_gguf: inverse.
void permute_qk_rows_gguf_from_hf(std::span<float> matrix, uint64_t rows, uint64_t cols, uint32_t n_heads);
void permute_qk_rows_hf_from_gguf(std::span<float> matrix, uint64_t rows, uint64_t cols, uint32_t n_heads);

}  // namespace lathe
