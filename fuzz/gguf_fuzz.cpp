// libFuzzer target for the GGUF reader: any input must either parse or throw a lathe::Error; it
// must never crash, read out of bounds (ASan), hit undefined behaviour (UBSan) or allocate without
// bound. Everything a parsed file exposes is touched so that bad spans or values surface.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace {

size_t touch(const lathe::gguf::Value& v) {
  size_t sum = v.to_string(4).size();
  if (v.is_integer() || v.is_float()) sum += v.as_f64("fuzz") > 0.0 ? 1 : 0;
  switch (v.type) {
    case lathe::gguf::ValueType::INT8: case lathe::gguf::ValueType::INT16:
    case lathe::gguf::ValueType::INT32: case lathe::gguf::ValueType::INT64:
      sum += static_cast<size_t>(v.as_i64("fuzz"));  // integer wrap-around is well defined
      break;
    case lathe::gguf::ValueType::UINT8: case lathe::gguf::ValueType::UINT16:
    case lathe::gguf::ValueType::UINT32: case lathe::gguf::ValueType::UINT64:
      sum += v.as_u64("fuzz");
      break;
    case lathe::gguf::ValueType::BOOL:
      sum += v.as_bool("fuzz") ? 1 : 0;
      break;
    default:
      break;
  }
  if (v.type == lathe::gguf::ValueType::STRING) sum += v.as_string("fuzz").size();
  if (v.type == lathe::gguf::ValueType::ARRAY)
    for (const auto& item : v.as_array("fuzz").items) sum += touch(item);
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = lathe::gguf::File::parse({data, size}, "fuzz.gguf");
    volatile size_t sink = file.version() + file.alignment() + file.data_offset();
    for (const auto& [key, value] : file.metadata()) {
      if (file.find(key) != &value) std::abort();  // keys are unique, so the index must agree
      sink = sink + touch(value);
    }
    for (const auto& tensor : file.tensors()) {
      if (file.find_tensor(tensor.name) != &tensor) std::abort();
      const auto bytes = file.tensor_data(tensor);
      if (bytes.size() != tensor.n_bytes) std::abort();  // the reader promised the data is inside the file
      size_t sum = 0;
      for (uint8_t b : bytes) sum += b;
      sink = sink + sum + tensor.n_elements();
    }
    (void)sink;
  } catch (const lathe::Error&) {
    // Malformed input is expected; only crashes and non-lathe exceptions are findings.
  }
  return 0;
}
