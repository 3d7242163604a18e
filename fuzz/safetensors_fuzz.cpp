// libFuzzer target for the safetensors reader: any input must either parse or throw a lathe::Error;
// it must never crash, read out of bounds (ASan), hit undefined behaviour (UBSan) or allocate
// without bound. Every tensor's bytes are read so that a span outside the input surfaces, and a
// parsed file is written back and re-read, which must reproduce it exactly.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <unistd.h>

#include "io/mapped_file.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace {

// Invariants the reader promises for every file it accepts.
void check_tensors(const lathe::safetensors::File& file) {
  uint64_t covered = 0;
  volatile size_t sink = 0;
  for (const auto& tensor : file.tensors()) {
    if (file.find_tensor(tensor.name) != &tensor) std::abort();  // names are unique
    if (tensor.data_begin != covered) std::abort();               // contiguous, in data order
    covered = tensor.data_end;
    const auto bytes = file.tensor_data(tensor);
    if (bytes.size() != tensor.n_bytes()) std::abort();
    const auto expected = lathe::dtype_bytes(tensor.type, tensor.n_elements());
    if (!expected || *expected != bytes.size()) std::abort();
    size_t sum = 0;
    for (uint8_t b : bytes) sum += b;
    sink = sink + sum;
  }
  if (file.data_offset() + covered != file.file_size()) std::abort();
  for (const auto& [key, value] : file.metadata()) sink = sink + key.size() + value.size();
}

// Writing an accepted file back and reading it again must give the same tensors and metadata.
void check_round_trip(const lathe::safetensors::File& file) {
  lathe::safetensors::Writer writer;
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  for (const auto& t : file.tensors()) writer.add_tensor(t.name, t.type, t.shape, file.tensor_data(t));
  // tmpfs when available: every accepted input is written, and the writer fsyncs.
  std::error_code ec;
  const auto dir = std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm")
                                                                  : std::filesystem::temp_directory_path();
  const auto path = dir / ("lathe_fuzz_st_" + std::to_string(::getpid()) + ".safetensors");
  writer.write(path);
  {
    const auto again = lathe::safetensors::File::open(path);
    if (again.metadata() != file.metadata() || again.tensors().size() != file.tensors().size()) std::abort();
    for (const auto& t : file.tensors()) {
      const auto* u = again.find_tensor(t.name);
      if (u == nullptr || u->type != t.type || u->shape != t.shape) std::abort();
      const auto a = file.tensor_data(t), b = again.tensor_data(*u);
      if (a.size() != b.size() || !std::equal(a.begin(), a.end(), b.begin())) std::abort();
    }
  }
  std::filesystem::remove(path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<lathe::safetensors::File> file;
  try {
    file.emplace(lathe::safetensors::File::parse({data, size}, "fuzz.safetensors"));
  } catch (const lathe::Error&) {
    return 0;  // expected for malformed input
  }
  // Outside the try: the writer must accept anything the reader accepted, so any exception from
  // here on is a finding (it escapes and libFuzzer reports it).
  check_tensors(*file);
  check_round_trip(*file);
  return 0;
}
