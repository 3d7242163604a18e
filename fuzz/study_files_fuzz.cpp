// libFuzzer target for the files `lathe ablate` and `lathe cvector` read from users: prompt sets
// (JSONL, CSV, TXT, or sniffed) and study journals. Any input must either load or throw a
// lathe::Error; never crash, hang, read out of bounds or allocate without bound. The first byte
// picks the reader; the rest is the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "edit/journal.hpp"
#include "edit/prompt_file.hpp"
#include "lathe/error.hpp"

namespace {

std::filesystem::path scratch(const char* extension) {
  return std::filesystem::temp_directory_path() /
         ("lathe_fuzz_study_" + std::to_string(::getpid()) + extension);
}

void write(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void load_prompts(const char* extension, const uint8_t* data, size_t size) {
  const auto path = scratch(extension);
  write(path, data, size);
  try {
    const auto prompts = lathe::edit::read_prompts(path, {.column = "prompt", .limit = 0});
    if (prompts.empty()) std::abort();  // "contains no prompts" is an error, never an empty list
  } catch (const lathe::Error&) {
  }
  std::filesystem::remove(path);
}

void load_journal(const uint8_t* data, size_t size) {
  const auto path = scratch(".jsonl");
  write(path, data, size);
  const std::vector<lathe::edit::ParamSpec> space = {{"a", 0.0, 1.0}, {"b", -1.0, 2.0}};
  try {
    auto journal = lathe::edit::Journal::open(path, lathe::edit::make_study_header(space, {"x", "y"}, 7), {});
    for (const auto& trial : journal.trials())
      if (trial.completed() && trial.values.size() != 2) std::abort();
  } catch (const lathe::Error&) {
  }
  std::filesystem::remove(path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  switch (data[0] % 5) {
    case 0: load_prompts(".jsonl", body, n); break;
    case 1: load_prompts(".csv", body, n); break;
    case 2: load_prompts(".txt", body, n); break;
    case 3: load_prompts(".dat", body, n); break;  // sniffed
    default: load_journal(body, n); break;
  }
  return 0;
}
