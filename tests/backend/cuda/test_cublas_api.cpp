// cuBLAS opened at run time (backend/cuda/cublas_api.hpp): no device needed, only the toolkit's
// library, so this runs wherever lathe was built with CUDA (CI included). A process that has not
// asked for a product has not opened it.
#include "backend/cuda/cublas_api.hpp"

#include <gtest/gtest.h>

#include <string>

namespace lathe::cuda {
namespace {

TEST(CublasApi, OpenedOnlyWhenAskedThenEveryFunctionIsThere) {
  EXPECT_FALSE(cublas_loaded());  // nothing in this test program has run a product
  const CublasApi& api = cublas();
  EXPECT_TRUE(cublas_loaded());
  EXPECT_NE(api.create, nullptr);
  EXPECT_NE(api.destroy, nullptr);
  EXPECT_NE(api.set_stream, nullptr);
  EXPECT_NE(api.sgemm, nullptr);
  EXPECT_NE(api.gemm_ex, nullptr);
  // A call into the library that needs no device: its own names for its status codes.
  EXPECT_EQ(std::string(api.status_name(CUBLAS_STATUS_SUCCESS)), "CUBLAS_STATUS_SUCCESS");
  EXPECT_EQ(std::string(api.status_name(CUBLAS_STATUS_ALLOC_FAILED)), "CUBLAS_STATUS_ALLOC_FAILED");
  EXPECT_EQ(&cublas(), &api);  // opened once
}

}  // namespace
}  // namespace lathe::cuda
