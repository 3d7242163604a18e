// Tensor element formats: plain numbers and ggml's block-quantized formats.
// One table describes every format lathe can name; whether a format can be dequantized or
// quantized is said by core/quant.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace lathe {

enum class DType : uint8_t {
  F32, F16, BF16, F64, I8, I16, I32, I64, U8, BOOL,
  Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
  Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
  IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M,
  TQ1_0, TQ2_0, MXFP4,
};

struct DTypeInfo {
  DType type;
  std::string_view name;    // ggml / gguf-py spelling: "F32", "Q4_K", ...
  int32_t ggml_id;          // GGML_TYPE_* value in GGUF files; -1 if GGUF has no such type
  std::string_view st_name; // safetensors spelling ("F32", "BF16", "U8"...), empty if none
  uint32_t block_size;      // elements per block (1 for plain numbers)
  uint32_t block_bytes;     // bytes per block
  bool quantized;
};

const DTypeInfo& dtype_info(DType type) noexcept;
std::span<const DTypeInfo> all_dtypes() noexcept;
inline std::string_view dtype_name(DType type) noexcept { return dtype_info(type).name; }

std::optional<DType> dtype_from_ggml_id(uint32_t ggml_id) noexcept;
std::optional<DType> dtype_from_safetensors_name(std::string_view name) noexcept;
// Case-insensitive ggml name ("q4_1" or "Q4_1").
std::optional<DType> dtype_from_name(std::string_view name) noexcept;

// Bytes taken by n_elements of the given type; nullopt when n_elements is not a whole number of
// blocks or the result would overflow.
std::optional<uint64_t> dtype_bytes(DType type, uint64_t n_elements) noexcept;

}  // namespace lathe
