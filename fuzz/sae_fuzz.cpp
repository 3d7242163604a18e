// libFuzzer target for the SAE reader (edit/sae.hpp): cfg.json and sae_weights.safetensors in one
// input, split at the first NUL byte (JSON text holds none). Any input must load into an SAE or
// throw a lathe::Error naming what is wrong; it must never crash, read out of bounds, hit
// undefined behaviour or allocate more than the file's own tensors need. A loaded SAE is checked
// for the shapes the gate relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>

#include "edit/sae.hpp"
#include "lathe/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  if (nul == nullptr) return 0;
  const auto cfg_size = static_cast<size_t>(nul - data);
  try {
    const auto sae = lathe::edit::parse_sae(std::string_view(reinterpret_cast<const char*>(data), cfg_size),
                                            std::span<const uint8_t>(nul + 1, size - cfg_size - 1), "fuzz/cfg.json",
                                            "fuzz/sae_weights.safetensors");
    const auto d_in = static_cast<size_t>(sae.d_in), d_sae = static_cast<size_t>(sae.d_sae);
    if (sae.w_enc_t.size() != d_in * d_sae || sae.w_dec.size() != d_sae * d_in) std::abort();
    if (sae.b_enc.size() != d_sae || sae.b_dec.size() != d_in) std::abort();
    if (sae.architecture == lathe::edit::SaeArchitecture::JumpRelu && sae.threshold.size() != d_sae) std::abort();
    if (sae.architecture == lathe::edit::SaeArchitecture::TopK && (sae.k < 1 || sae.k > sae.d_sae)) std::abort();
  } catch (const lathe::Error&) {
  }
  return 0;
}
