// Environment switches that turn one CUDA optimization off ("LATHE_CUDA_...=0"), to measure what
// it brings, or one not yet on by default on ("=1"). Plain C++: kernels' launchers (launch.cuh) and the forward pass both read them.
#pragma once

#include <cstdlib>
#include <string_view>

namespace lathe::cuda {

// Whether the environment sets `name` to "0" (callers keep the answer, read once).
inline bool turned_off_by_env(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string_view(e) == "0";
}

// Whether the environment sets `name` to "1": for a path that is off by default.
inline bool turned_on_by_env(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string_view(e) == "1";
}

}  // namespace lathe::cuda
