// lathe/compute.hpp: devices by name and the checks of the compute options.
#include <fmt/format.h>

#include "backend/cpu/thread_pool.hpp"
#include "lathe/compute.hpp"
#include "lathe/error.hpp"
#include "lathe/generate.hpp"

namespace lathe {

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda" || text == "gpu") return cuda(0);
  if (text.starts_with("cuda:") && text.size() > 5 && text.size() <= 9) {
    int index = 0;
    for (char c : text.substr(5)) {
      if (c < '0' || c > '9') index = -1;
      if (index >= 0) index = index * 10 + (c - '0');
    }
    if (index >= 0) return cuda(index);
  }
  throw InvalidArgumentError(fmt::format("device \"{}\" is not one lathe knows: use cpu, cuda or cuda:N (see `lathe "
                                         "devices`)",
                                         text));
}

std::string Device::name() const { return is_cuda() ? fmt::format("cuda:{}", index) : "cpu"; }

void validate(const ComputeOptions& options) {
  if (options.n_batch == 0) throw InvalidArgumentError("n_batch (-b/--batch-size) must be at least 1");
  if (options.n_threads < 0)
    throw InvalidArgumentError(fmt::format("threads (-t/--threads) must be >= 0 (got {})", options.n_threads));
  if (options.vram_budget != 0 && !options.device.is_cuda())
    throw InvalidArgumentError(fmt::format("a GPU memory budget (--vram-budget, ComputeOptions::vram_budget) applies to "
                                           "a CUDA device; this runs on {} (add --device cuda)",
                                           options.device.name()));
}

int available_cpus() noexcept { return cpu::available_cpus(); }
int default_cpu_threads() noexcept { return cpu::default_threads(); }

ContextLengthError::ContextLengthError(uint64_t needed, uint64_t n_ctx)
    : InvalidArgumentError(fmt::format("context length exceeded: {} > {} (tokens needed > context size); start a "
                                       "new session, shorten the prompt, raise -c, or ask for truncation",
                                       needed, n_ctx)),
      needed_(needed),
      n_ctx_(n_ctx) {}

}  // namespace lathe
