// libFuzzer target for `lathe study`'s configuration (study/config.hpp): the first byte picks TOML
// (odd) or JSON (even), the rest is the file. Any input must either give a configuration or throw
// a lathe::Error; a configuration that parses has what the runner relies on: seeds, arms and eval
// sets non-empty with unique names, a baseline that is one of the arms, and numbers in range.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "lathe/error.hpp"
#include "study/config.hpp"

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool toml = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const auto c = lathe::study::parse_study_config(text, toml, "/fuzz/study.toml");
    require(!c.seeds.empty() && !c.arms.empty() && !c.evals.empty());
    std::set<std::string> names;
    bool baseline = false;
    for (const auto& arm : c.arms) {
      require(names.insert(arm.name).second);
      baseline |= arm.name == c.baseline;
      if (arm.method == lathe::study::ArmMethod::Unlearn) require(arm.steps > 0 || arm.epochs > 0);
    }
    require(baseline);
    require(c.confidence > 0 && c.confidence < 1 && c.resamples >= 100 && c.max_length >= 2);
  } catch (const lathe::Error&) {
  }
  return 0;
}
