#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "edit/sae_device.hpp"

namespace lathe::edit {
namespace {

// TopK's scratch covers this many rows; longer passes are gated chunk by chunk.
constexpr int kTopKChunkRows = 64;

class CudaSaeGate final : public SaeGateDevice {
 public:
  CudaSaeGate(const Sae& sae, const std::vector<SaeFeatureEdit>& edits, const SaeGateOptions& options, int device)
      : device_(device) {  // make_sae_gate_device() made `device` current
    const bool topk = sae.architecture == SaeArchitecture::TopK;
    const auto d_in = static_cast<size_t>(sae.d_in);
    const size_t n_edits = edits.size();
    args_.n_edits = static_cast<int>(n_edits);
    args_.d_in = static_cast<int>(sae.d_in);
    args_.d_sae = static_cast<int>(sae.d_sae);
    args_.k = static_cast<int>(sae.k);
    args_.architecture = topk ? cuda::SaeGateArgs::kTopK
                         : sae.architecture == SaeArchitecture::JumpRelu ? cuda::SaeGateArgs::kJumpRelu
                                                                         : cuda::SaeGateArgs::kStandard;
    args_.normalization = sae.normalization == SaeNormalization::ConstantNormRescale ? cuda::SaeGateArgs::kConstantNormRescale
                          : sae.normalization == SaeNormalization::LayerNorm        ? cuda::SaeGateArgs::kLayerNorm
                                                                                    : cuda::SaeGateArgs::kNoNorm;
    args_.apply_b_dec_to_input = sae.apply_b_dec_to_input;
    args_.clamp_everywhere = options.clamp_everywhere;

    // Standard and jumprelu read only the edited features' encoder rows, so only those go to the
    // device (ids 0..n-1); topk ranks every feature, so it takes the whole encoder.
    std::vector<uint32_t> ids(n_edits);
    std::vector<float> values(n_edits), w_dec(n_edits * d_in), w_enc, b_enc, threshold;
    std::vector<uint8_t> scales(n_edits);
    for (size_t e = 0; e < n_edits; ++e) {
      const uint32_t j = edits[e].id;
      ids[e] = topk ? j : static_cast<uint32_t>(e);
      values[e] = edits[e].value;
      scales[e] = edits[e].kind == SaeFeatureEdit::Kind::Scale ? 1 : 0;
      std::copy_n(sae.w_dec.begin() + static_cast<ptrdiff_t>(j * d_in), d_in, w_dec.begin() + static_cast<ptrdiff_t>(e * d_in));
      if (topk) continue;
      w_enc.insert(w_enc.end(), sae.w_enc_t.begin() + static_cast<ptrdiff_t>(j * d_in),
                   sae.w_enc_t.begin() + static_cast<ptrdiff_t>((j + 1) * d_in));
      b_enc.push_back(sae.b_enc[j]);
      if (!sae.threshold.empty()) threshold.push_back(sae.threshold[j]);
    }
    if (topk) {
      w_enc = sae.w_enc_t;
      b_enc = sae.b_enc;
    }
    const std::string what = sae.describe();
    args_.w_enc_t = upload(w_enc, "encoder", what);
    args_.b_enc = upload(b_enc, "encoder bias", what);
    args_.w_dec = upload(w_dec, "decoder rows", what);
    args_.b_dec = upload(sae.b_dec, "decoder bias", what);
    args_.threshold = threshold.empty() ? nullptr : upload(threshold, "thresholds", what);
    args_.ids = upload(ids, "feature ids", what);
    args_.values = upload(values, "edit values", what);
    args_.scales = upload(scales, "edit kinds", what);
    if (topk) {
      args_.chunk_rows = kTopKChunkRows;
      args_.sae_in = alloc<float>(size_t{kTopKChunkRows} * d_in, "topk input scratch", what);
      args_.pre = alloc<float>(size_t{kTopKChunkRows} * static_cast<size_t>(sae.d_sae), "topk scratch", what);
    }
    args_.rows_changed = alloc<unsigned long long>(1, "changed-row counter", what);
    cuda::check(cudaMemset(args_.rows_changed, 0, sizeof(unsigned long long)), "zeroing the SAE gate's counter");
    cuda::sae_gate_prepare(args_);
  }

  int device() const noexcept override { return device_; }

  void apply(float* rows, int64_t n_rows, void* stream) override {
    cuda::sae_gate(args_, rows, static_cast<int>(n_rows), static_cast<cudaStream_t>(stream));
  }

  uint64_t rows_changed() const override {
    unsigned long long n = 0;
    cuda::check(cudaMemcpy(&n, args_.rows_changed, sizeof(n), cudaMemcpyDeviceToHost),
                "reading the SAE gate's counter");
    return n;
  }

 private:
  template <typename T>
  T* alloc(size_t count, std::string_view part, const std::string& what) {
    buffers_.emplace_back(std::max<size_t>(count, 1) * sizeof(T), fmt::format("the {} of {}", part, what));
    return buffers_.back().as<T>();
  }
  template <typename T>
  T* upload(const std::vector<T>& host, std::string_view part, const std::string& what) {
    T* dev = alloc<T>(host.size(), part, what);
    if (!host.empty())
      cuda::check(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
                  fmt::format("copying the {} of {} to the device", part, what));
    return dev;
  }

  int device_;
  std::vector<cuda::DeviceBuffer> buffers_;
  cuda::SaeGateArgs args_;
};

}  // namespace

std::unique_ptr<SaeGateDevice> make_sae_gate_device(const Sae& sae, const std::vector<SaeFeatureEdit>& edits,
                                                    const SaeGateOptions& options, int device) {
  cuda::use_device(device);
  // One block gates one row with sae_in (standard, jumprelu) and the edits' deltas in shared
  // memory: a gate wider than the device allows stays on the host path.
  int max_shared = 0;
  cuda::check(cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
              "reading the device's shared memory size");
  cuda::SaeGateArgs probe;
  probe.n_edits = static_cast<int>(edits.size());
  probe.d_in = static_cast<int>(sae.d_in);
  probe.architecture = sae.architecture == SaeArchitecture::TopK ? cuda::SaeGateArgs::kTopK : cuda::SaeGateArgs::kStandard;
  if (cuda::sae_gate_shared_bytes(probe) + 1024 > static_cast<size_t>(max_shared)) return nullptr;
  if (sae.d_sae > INT32_MAX / 2 || sae.d_in > INT32_MAX / 2) return nullptr;
  return std::make_unique<CudaSaeGate>(sae, edits, options, device);
}

}  // namespace lathe::edit
