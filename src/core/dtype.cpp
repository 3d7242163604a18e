#include "core/dtype.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace lathe {
namespace {

// Block layouts follow ggml (ggml-common.h); gguf-py's GGML_QUANT_SIZES is the oracle the tests
// check this table against.
constexpr std::array<DTypeInfo, 34> kTable{{
    {DType::F32, "F32", 0, "F32", 1, 4, false},
    {DType::F16, "F16", 1, "F16", 1, 2, false},
    {DType::BF16, "BF16", 30, "BF16", 1, 2, false},
    {DType::F64, "F64", 28, "F64", 1, 8, false},
    {DType::I8, "I8", 24, "I8", 1, 1, false},
    {DType::I16, "I16", 25, "I16", 1, 2, false},
    {DType::I32, "I32", 26, "I32", 1, 4, false},
    {DType::I64, "I64", 27, "I64", 1, 8, false},
    {DType::U8, "U8", -1, "U8", 1, 1, false},
    {DType::BOOL, "BOOL", -1, "BOOL", 1, 1, false},
    {DType::Q4_0, "Q4_0", 2, "", 32, 18, true},
    {DType::Q4_1, "Q4_1", 3, "", 32, 20, true},
    {DType::Q5_0, "Q5_0", 6, "", 32, 22, true},
    {DType::Q5_1, "Q5_1", 7, "", 32, 24, true},
    {DType::Q8_0, "Q8_0", 8, "", 32, 34, true},
    {DType::Q8_1, "Q8_1", 9, "", 32, 36, true},
    {DType::Q2_K, "Q2_K", 10, "", 256, 84, true},
    {DType::Q3_K, "Q3_K", 11, "", 256, 110, true},
    {DType::Q4_K, "Q4_K", 12, "", 256, 144, true},
    {DType::Q5_K, "Q5_K", 13, "", 256, 176, true},
    {DType::Q6_K, "Q6_K", 14, "", 256, 210, true},
    {DType::Q8_K, "Q8_K", 15, "", 256, 292, true},
    {DType::IQ2_XXS, "IQ2_XXS", 16, "", 256, 66, true},
    {DType::IQ2_XS, "IQ2_XS", 17, "", 256, 74, true},
    {DType::IQ3_XXS, "IQ3_XXS", 18, "", 256, 98, true},
    {DType::IQ1_S, "IQ1_S", 19, "", 256, 50, true},
    {DType::IQ4_NL, "IQ4_NL", 20, "", 32, 18, true},
    {DType::IQ3_S, "IQ3_S", 21, "", 256, 110, true},
    {DType::IQ2_S, "IQ2_S", 22, "", 256, 82, true},
    {DType::IQ4_XS, "IQ4_XS", 23, "", 256, 136, true},
    {DType::IQ1_M, "IQ1_M", 29, "", 256, 56, true},
    {DType::TQ1_0, "TQ1_0", 34, "", 256, 54, true},
    {DType::TQ2_0, "TQ2_0", 35, "", 256, 66, true},
    {DType::MXFP4, "MXFP4", 39, "", 32, 17, true},
}};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

}  // namespace

const DTypeInfo& dtype_info(DType type) noexcept { return kTable[static_cast<size_t>(type)]; }
std::span<const DTypeInfo> all_dtypes() noexcept { return kTable; }

std::optional<DType> dtype_from_ggml_id(uint32_t ggml_id) noexcept {
  for (const auto& info : kTable)
    if (info.ggml_id >= 0 && static_cast<uint32_t>(info.ggml_id) == ggml_id) return info.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) noexcept {
  for (const auto& info : kTable)
    if (!info.st_name.empty() && info.st_name == name) return info.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_name(std::string_view name) noexcept {
  for (const auto& info : kTable)
    if (iequals(info.name, name)) return info.type;
  return std::nullopt;
}

std::optional<uint64_t> dtype_bytes(DType type, uint64_t n_elements) noexcept {
  const auto& info = dtype_info(type);
  if (n_elements % info.block_size != 0) return std::nullopt;
  const uint64_t blocks = n_elements / info.block_size;
  if (blocks > UINT64_MAX / info.block_bytes) return std::nullopt;
  return blocks * info.block_bytes;
}

}  // namespace lathe

namespace lathe {
namespace {
constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kTable.size(); ++i)
    if (static_cast<size_t>(kTable[i].type) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kTable rows must follow the DType enum order");
}  // namespace
}  // namespace lathe
