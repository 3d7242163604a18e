#include "lathe/quantize.hpp"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "io/output_path.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;

struct Target {
  DType type;
  uint32_t llama_ftype;
};
// llama.h's enum llama_ftype for the formats lathe writes.
constexpr Target kTargets[] = {
    {DType::F32, 0}, {DType::F16, 1}, {DType::Q4_0, 2}, {DType::Q4_1, 3}, {DType::Q8_0, 7}, {DType::BF16, 32},
};

// The type a tensor is written as: 1-D tensors stay exact in F32; matrices take the target unless
// their rows do not split into whole target blocks (then F16, as llama-quantize does).
DType output_type(const gguf::TensorInfo& info, DType target, bool& fallback) {
  fallback = false;
  if (info.shape.size() < 2) return DType::F32;
  const uint32_t block = dtype_info(target).block_size;
  if (info.shape[0] % block != 0) {
    fallback = true;
    return DType::F16;
  }
  return target;
}

// Dequantizes each row of `info` and encodes it as `to`; rows are info.shape[0] elements.
std::vector<uint8_t> convert_tensor(const gguf::File& file, const gguf::TensorInfo& info, DType to) {
  if (!can_dequantize(info.type))
    throw UnsupportedError(fmt::format("{}: tensor '{}' at offset {} has type {}, which lathe cannot dequantize; "
                                       "quantize from an F32/F16/BF16 or Q4/Q5/Q8/K-quant model instead",
                                       file.display_name(), info.name, info.file_offset, dtype_name(info.type)));
  const uint64_t n = info.n_elements();
  const uint64_t cols = info.shape.empty() ? n : info.shape[0];
  const uint64_t rows = cols == 0 ? 0 : n / cols;
  const auto in_row_bytes = dtype_bytes(info.type, cols);
  const auto out_row_bytes = dtype_bytes(to, cols);
  if (!in_row_bytes || !out_row_bytes)
    throw FormatError(file.display_name(), fmt::format("tensor '{}'", info.name), info.file_offset,
                      fmt::format("a row of {} elements is not a whole number of {} blocks", cols,
                                  dtype_name(in_row_bytes ? to : info.type)),
                      "the file is damaged or was written by a broken tool; re-create it");
  const auto src = file.tensor_data(info);
  std::vector<uint8_t> out(*out_row_bytes * rows);
  std::vector<float> row(cols);
  for (uint64_t r = 0; r < rows; ++r) {
    dequantize_row(info.type, src.data() + r * *in_row_bytes, row.data(), static_cast<int64_t>(cols));
    quantize_row(to, row.data(), out.data() + r * *out_row_bytes, static_cast<int64_t>(cols));
  }
  return out;
}

}  // namespace

bool is_quantize_target(DType type) noexcept { return llama_file_type(type).has_value(); }

std::optional<uint32_t> llama_file_type(DType target) noexcept {
  for (const auto& t : kTargets)
    if (t.type == target) return t.llama_ftype;
  return std::nullopt;
}

void quantize_gguf(const fs::path& in, const fs::path& out, DType target, const QuantizeOptions& options) {
  const auto ftype = llama_file_type(target);
  if (!ftype)
    throw UnsupportedError(fmt::format("quantize: target type {} is not supported; use F32, F16, BF16, Q8_0, "
                                       "Q4_0 or Q4_1",
                                       dtype_name(target)));
  // Every refusal (output is the input, exists without force, unwritable or missing directory)
  // comes before the input is read.
  check_output({.flag = "quantize: output",
                .path = out,
                .kind = OutputRequest::Kind::File,
                .force = options.force,
                .inputs = {{"the input model", in}},
                .managed = {}});
  const auto file = gguf::File::open(in);

  gguf::Writer writer;
  bool has_file_type = false;
  for (const auto& [key, value] : file.metadata()) {
    if (key == "general.file_type") {
      writer.set(key, gguf::Value::u32(*ftype));
      has_file_type = true;
    } else {
      writer.set(key, value);
    }
  }
  if (!has_file_type) writer.set("general.file_type", gguf::Value::u32(*ftype));

  const auto& tensors = file.tensors();
  std::vector<std::vector<uint8_t>> converted;  // the Writer references these until write()
  converted.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& info = tensors[i];
    bool fallback = false;
    const DType to = output_type(info, target, fallback);
    converted.push_back(convert_tensor(file, info, to));
    writer.add_tensor(info.name, to, info.shape, converted.back());
    if (options.progress) options.progress({i + 1, tensors.size(), info.name, info.type, to, fallback});
  }
  writer.write(out);
}

}  // namespace lathe
