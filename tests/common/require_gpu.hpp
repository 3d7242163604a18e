// LATHE_REQUIRE_GPU(): GPU tests skip cleanly, saying why, where no CUDA device is usable (a build
// without CUDA, or no device); scripts/gpu-check.sh runs them on the GPU machine.
#pragma once

#include <gtest/gtest.h>

#include "backend/cuda/device.hpp"

#define LATHE_REQUIRE_GPU()                                                                 \
  do {                                                                                      \
    if (lathe::cuda::list_devices().empty())                                                \
      GTEST_SKIP() << "no CUDA device (" << lathe::cuda::no_device_reason() << ")";        \
  } while (0)
