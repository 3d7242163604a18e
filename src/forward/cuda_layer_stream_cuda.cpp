#include "forward/cuda_layer_stream.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "lathe/error.hpp"

namespace lathe {

StreamedCudaLayers::StreamedCudaLayers(std::shared_ptr<const CudaWeights> weights, cudaStream_t compute, uint32_t slots)
    : weights_(std::move(weights)), compute_(compute) {
  const auto n_layers = static_cast<uint32_t>(weights_->layers.size());
  rank_.assign(n_layers, -1);
  for (uint32_t l = 0; l < n_layers; ++l) {
    if (!weights_->streamed(l)) continue;
    rank_[l] = static_cast<int>(order_.size());
    order_.push_back(l);
    slot_bytes_ = std::max<uint64_t>(slot_bytes_, weights_->host_image(l).size());
    bytes_per_pass_ += weights_->host_image(l).size();
  }
  if (order_.empty() || slots < 2)
    throw InternalError(fmt::format("StreamedCudaLayers: {} streamed layers, {} slots", order_.size(), slots));
  slots = std::min<uint32_t>(slots, static_cast<uint32_t>(order_.size()));
  cuda::use_device(weights_->device);
  for (uint32_t s = 0; s < slots; ++s)
    slot_buffers_.emplace_back(slot_bytes_, fmt::format("layer slot {} of {} for streamed layers", s + 1, slots));
  for (size_t k = 0; k < order_.size(); ++k)
    in_slot_.push_back(weights_->layer_in(order_[k], slot_buffers_[k % slots].as<uint8_t>()));
  cuda::check(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "creating the layer copy stream");
  loaded_.assign(slots, nullptr);
  freed_.assign(slots, nullptr);
  for (uint32_t s = 0; s < slots; ++s) {
    cuda::check(cudaEventCreateWithFlags(&loaded_[s], cudaEventDisableTiming), "creating a layer copy event");
    cuda::check(cudaEventCreateWithFlags(&freed_[s], cudaEventDisableTiming), "creating a layer slot event");
  }
  cuda::check(cudaEventCreateWithFlags(&pass_start_, cudaEventDisableTiming), "creating a pass event");
}

StreamedCudaLayers::~StreamedCudaLayers() {
  if (copy_ != nullptr) cudaStreamSynchronize(copy_);
  for (cudaEvent_t e : loaded_)
    if (e != nullptr) cudaEventDestroy(e);
  for (cudaEvent_t e : freed_)
    if (e != nullptr) cudaEventDestroy(e);
  if (pass_start_ != nullptr) cudaEventDestroy(pass_start_);
  if (copy_ != nullptr) cudaStreamDestroy(copy_);
}

void StreamedCudaLayers::copy_in(size_t k) {
  const size_t slot = k % slot_buffers_.size();
  const auto image = weights_->host_image(order_[k]);
  cuda::check(cudaMemcpyAsync(slot_buffers_[slot].data(), image.data(), image.size(), cudaMemcpyHostToDevice, copy_),
              fmt::format("copying streamed layer {} to the GPU", order_[k]));
  cuda::check(cudaEventRecord(loaded_[slot], copy_), "recording a layer copy");
}

void StreamedCudaLayers::begin_pass() {
  // The copy stream joins the compute stream here: the slots' last readers (the previous pass)
  // are done before they are overwritten. In a capture this is the fork of the copy stream.
  cuda::check(cudaEventRecord(pass_start_, compute_), "starting a streamed pass");
  cuda::check(cudaStreamWaitEvent(copy_, pass_start_, 0), "starting a streamed pass");
  for (size_t k = 0; k < slot_buffers_.size(); ++k) copy_in(k);
}

const CudaLayerWeights& StreamedCudaLayers::acquire(uint32_t layer) {
  const int k = rank_.at(layer);
  if (k < 0) return weights_->layers[layer];
  cuda::check(cudaStreamWaitEvent(compute_, loaded_[static_cast<size_t>(k) % slot_buffers_.size()], 0),
              fmt::format("waiting for streamed layer {}", layer));
  return in_slot_[static_cast<size_t>(k)];
}

void StreamedCudaLayers::release(uint32_t layer) {
  const int k = rank_.at(layer);
  if (k < 0) return;
  const size_t slot = static_cast<size_t>(k) % slot_buffers_.size();
  cuda::check(cudaEventRecord(freed_[slot], compute_), fmt::format("releasing streamed layer {}", layer));
  const size_t next = static_cast<size_t>(k) + slot_buffers_.size();
  if (next >= order_.size()) return;
  cuda::check(cudaStreamWaitEvent(copy_, freed_[slot], 0), fmt::format("releasing streamed layer {}", layer));
  copy_in(next);
}

}  // namespace lathe
