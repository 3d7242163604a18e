// Tensor element formats: plain numbers and ggml's block-quantized formats.
// One table describes every format lathe can name; whether a format can be dequantized or
// quantized is said by core/quant.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "lathe/dtype.hpp"  // enum class DType: public, quantize_gguf() takes one

namespace lathe {

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
