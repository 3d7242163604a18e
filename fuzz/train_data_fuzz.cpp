// libFuzzer target for the training data files `lathe finetune` and `lathe unlearn` read (JSON
// lines, a JSON array, CSV) and for training checkpoints. Any input must either parse or throw a
// lathe::Error; never crash, hang, read out of bounds or allocate without bound. The first byte
// picks the reader; the rest is the file's text.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "lathe/error.hpp"
#include "train/checkpoint.hpp"
#include "train/dataset.hpp"

namespace {

void parse_rows(std::string_view extension, std::string_view text) {
  try {
    for (const auto& row : lathe::train::parse_data_rows(text, "fuzz", extension)) {
      // Every row read is one of the three kinds, with its fields.
      const bool pair = row.prompt && row.answer, kinds = pair + row.text.has_value() + row.messages.has_value();
      if (kinds != 1) __builtin_trap();
    }
  } catch (const lathe::Error&) {
  }
}

void read_checkpoint(std::string_view bytes) {
  const auto path = std::filesystem::temp_directory_path() / ("lathe_fuzz_ckpt_" + std::to_string(::getpid()));
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  try {
    lathe::train::read_checkpoint(path);
  } catch (const lathe::Error&) {
  }
  std::filesystem::remove(path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 4) {
    case 0: parse_rows(".jsonl", text); break;
    case 1: parse_rows(".json", text); break;
    case 2: parse_rows(".csv", text); break;
    default: read_checkpoint(text); break;
  }
  return 0;
}
