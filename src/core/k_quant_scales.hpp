// The six-bit scale and min of one 32-element group of a Q4_K / Q5_K super-block (ggml's
// get_scale_min_k4, gguf-py's get_scale_min): shared by the reference dequantization
// (core/quant.cpp) and the CPU kernels of every instruction-set level.
#pragma once

#include <cstdint>

namespace lathe {

// `static`, not plain `inline`: the AVX2 kernels include this from a translation unit compiled
// with -mavx2, and internal linkage keeps the linker from handing that copy to scalar code.
static inline void k_scale_min(const uint8_t* scales, int group, int& scale, int& min) {
  if (group < 4) {
    scale = scales[group] & 0x3F;
    min = scales[4 + group] & 0x3F;
  } else {
    const int j = group - 4;
    scale = (scales[8 + j] & 0x0F) | ((scales[j] >> 2) & 0x30);
    min = (scales[8 + j] >> 4) | ((scales[4 + j] >> 2) & 0x30);
  }
}

}  // namespace lathe
