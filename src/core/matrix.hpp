// A weight matrix as every backend reads it: its stored type and rows, without owning them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/dtype.hpp"

namespace lathe {

// A weight matrix as stored in the model file: `rows` rows (output features) of `cols` elements
// (input features), each row contiguous in `type`, row r starting at data + r * row_bytes.
// `name` (the tensor's name) is used in error messages.
struct MatrixView {
  DType type = DType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  std::string_view name;
};

}  // namespace lathe
