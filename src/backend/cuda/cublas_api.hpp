// cuBLAS, opened at run time on the first product that needs it (CUDA builds only). Linking it
// would load cuBLAS and cuBLASLt into every lathe process, CPU runs and `lathe --version`
// included: about 150 MB resident for nothing (docs/RELIABILITY.md states the memory budget).
// Only the functions lathe calls are resolved.
#pragma once

#include <cublas_v2.h>

namespace lathe::cuda {

struct CublasApi {
  decltype(&cublasCreate) create = nullptr;
  decltype(&cublasDestroy) destroy = nullptr;
  decltype(&cublasSetStream) set_stream = nullptr;
  decltype(&cublasSgemm) sgemm = nullptr;
  // The C function (the header adds a C++ overload taking a cudaDataType compute type).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// The library, opened once (thread-safe). Throws DeviceError naming the library file and the
// loader's reason when it cannot be opened or lacks a function, with what to do.
const CublasApi& cublas();

// Whether cuBLAS has been opened in this process (tests check that CPU work never opens it).
bool cublas_loaded() noexcept;

}  // namespace lathe::cuda
