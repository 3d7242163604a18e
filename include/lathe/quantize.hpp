// Re-encode a GGUF model's weight matrices in another tensor format (llama-quantize's job for the
// formats lathe can write): every metadata key is copied, general.file_type follows the target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "lathe/dtype.hpp"

namespace lathe {

// What happened to one tensor; passed to QuantizeOptions::progress after it is converted.
struct QuantizedTensor {
  size_t index = 0;  // 1-based: tensors done so far, including this one
  size_t total = 0;
  std::string name;
  DType from = DType::F32;
  DType to = DType::F32;
  // The tensor's rows are not a whole number of the target's blocks, so it was written as F16
  // instead (llama.cpp's fallback for such tensors).
  bool fallback = false;
};

struct QuantizeOptions {
  bool force = false;  // replace an existing output file
  std::function<void(const QuantizedTensor&)> progress;
};

// The targets quantize_gguf() writes: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
bool is_quantize_target(DType type) noexcept;
// llama.cpp's LLAMA_FTYPE_* value written to general.file_type for a target (F32=0, F16=1,
// Q4_0=2, Q4_1=3, Q8_0=7, BF16=32); nullopt for a type that is not a target.
std::optional<uint32_t> llama_file_type(DType target) noexcept;

// Reads the GGUF `in` and writes `out` with:
//   * every metadata key copied in order, general.file_type set to llama_file_type(target);
//   * tensors with two or more dimensions (weight matrices, token_embd included) dequantized and
//     re-encoded as `target`, or as F16 when a row is not a whole number of the target's blocks;
//   * one-dimensional tensors (norms, biases) written as F32.
// The output is written atomically (temporary file "OUT.tmp.PID", then rename; the temporary is
// removed on SIGINT/SIGTERM). The converted tensors are held in memory until the file is written
// (as much memory as the output's size). The output path is checked before the input is read.
// Throws NotFoundError/FormatError for the input, UnsupportedError for a target that is not
// supported or a tensor type lathe cannot dequantize, InvalidArgumentError when `out` exists and
// options.force is false or when `out` is `in` (also through a symbolic or hard link),
// NotFoundError when out's directory does not exist, IoError when it is not writable or writing
// fails.
void quantize_gguf(const std::filesystem::path& in, const std::filesystem::path& out, DType target,
                   const QuantizeOptions& options = {});

}  // namespace lathe
