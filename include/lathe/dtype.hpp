// Tensor element formats: plain numbers and ggml's block-quantized formats, as the public API
// names them (quantize_gguf()'s target and what it reports per tensor). The table describing each
// format (names, GGUF ids, block sizes) is internal to the core room: src/core/dtype.hpp.
#pragma once

#include <cstdint>

namespace lathe {

enum class DType : uint8_t {
  F32, F16, BF16, F64, I8, I16, I32, I64, U8, BOOL,
  Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
  Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
  IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M,
  TQ1_0, TQ2_0, MXFP4,
};

}  // namespace lathe
