// libFuzzer target for the LoRA adapter reader (weights/lora.hpp) on top of the GGUF parser: any
// input must parse into an adapter or throw a lathe::Error naming what is wrong; it must never
// crash, read out of bounds (ASan), hit undefined behaviour (UBSan) or allocate more than the
// file's own tensors need. The pairs it returns are checked for the shapes the reader promises.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "weights/lora.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = lathe::gguf::File::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
    const auto adapter = lathe::read_lora_adapter(file);
    for (const auto& pair : adapter.pairs) {
      // The promises merge_lora relies on: a = [rank x n_in], b = [n_out x rank], none empty.
      if (pair.rank <= 0 || pair.n_in <= 0 || pair.n_out <= 0) std::abort();
      if (pair.a.size() != static_cast<size_t>(pair.rank * pair.n_in)) std::abort();
      if (pair.b.size() != static_cast<size_t>(pair.n_out * pair.rank)) std::abort();
    }
  } catch (const lathe::Error&) {
  }
  return 0;
}
