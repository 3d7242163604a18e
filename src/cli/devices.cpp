#include <fmt/format.h>

#include "backend/cuda/device.hpp"
#include "cli/commands.hpp"

namespace lathe::cli {

Runner add_devices(CLI::App& app) {
  app.add_subcommand("devices", "List the compute devices this build can use");
  return [] {
    fmt::print("cpu        available\n");
    const auto devices = cuda::list_devices();
    if (devices.empty()) {
      fmt::print("cuda       unavailable: {}\n", cuda::no_device_reason());
      return 0;
    }
    for (const auto& d : devices)
      fmt::print("cuda:{:<5} {} (sm_{}{}, {} SMs, {:.1f} GiB, {:.1f} GiB free)\n", d.index, d.name, d.compute_major,
                 d.compute_minor, d.multiprocessors, d.total_bytes / 1073741824.0, d.free_bytes / 1073741824.0);
    return 0;
  };
}

}  // namespace lathe::cli
