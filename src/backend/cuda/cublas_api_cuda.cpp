#include "backend/cuda/cublas_api.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <atomic>
#include <string>
#include <vector>

#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

std::atomic<bool> loaded{false};

// The cuBLAS of the toolkit lathe was compiled against: its major version's soname, found through
// the loader's search path (lathe's run path names the toolkit's library folder), then in the
// toolkit folder seen at configure time.
std::vector<std::string> candidates() {
  const std::string soname = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
  std::vector<std::string> names = {soname};
#ifdef LATHE_CUDA_LIBRARY_DIR
  names.push_back(std::string(LATHE_CUDA_LIBRARY_DIR) + "/" + soname);
#endif
  return names;
}

template <class F>
void resolve(void* library, const char* symbol, F& out, const std::string& file) {
  out = reinterpret_cast<F>(dlsym(library, symbol));
  if (out == nullptr)
    throw DeviceError(fmt::format("{} lacks the function {}: this cuBLAS is not the one lathe was built for (CUDA "
                                  "{}); install the CUDA {} toolkit's cuBLAS or rebuild lathe against yours",
                                  file, symbol, CUBLAS_VER_MAJOR, CUBLAS_VER_MAJOR));
}

CublasApi open_cublas() {
  std::string reasons;
  for (const std::string& file : candidates()) {
    void* library = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* why = dlerror();
      reasons += fmt::format("\n  {}: {}", file, why != nullptr ? why : "not found");
      continue;
    }
    CublasApi api;
    // The _v2 names are what cublas_v2.h's macros (cublasCreate, ...) stand for.
    resolve(library, "cublasCreate_v2", api.create, file);
    resolve(library, "cublasDestroy_v2", api.destroy, file);
    resolve(library, "cublasSetStream_v2", api.set_stream, file);
    resolve(library, "cublasSgemm_v2", api.sgemm, file);
    resolve(library, "cublasGemmEx", api.gemm_ex, file);
    resolve(library, "cublasGetStatusName", api.status_name, file);
    resolve(library, "cublasGetStatusString", api.status_string, file);
    loaded = true;
    return api;  // the library stays open for the life of the process
  }
  throw DeviceError(fmt::format("cannot open cuBLAS (CUDA {}), which the CUDA backend needs for products of more "
                                "than 8 tokens:{}\nInstall the CUDA toolkit's cuBLAS (or add its folder to "
                                "LD_LIBRARY_PATH), or use --device cpu",
                                CUBLAS_VER_MAJOR, reasons));
}

}  // namespace

const CublasApi& cublas() {
  static const CublasApi api = open_cublas();  // a failed open throws and is tried again next time
  return api;
}

bool cublas_loaded() noexcept { return loaded; }

}  // namespace lathe::cuda
