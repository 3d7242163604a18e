// Builds without CUDA: asking for a CUDA device is an error that says how to get one.
#include <fmt/format.h>

#include "lathe/error.hpp"
#include "runtime/engine.hpp"

namespace lathe::runtime {

std::unique_ptr<Engine> make_cuda_engine(const ModelWeights&, const EngineConfig& config) {
  throw UnsupportedError(fmt::format(
      "cuda:{} was requested but this lathe was built without CUDA; install the CUDA toolkit (nvcc) and rebuild "
      "(cmake -DLATHE_CUDA=ON), or use --device cpu",
      config.compute.device.index));
}

}  // namespace lathe::runtime
