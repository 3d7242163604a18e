// libFuzzer target for the model loader over GGUF (weights/model_weights.cpp with arch/'s
// hyper-parameters and tensor names: dense and mixture-of-experts layers): any input must either
// load or throw a lathe::Error; it must never crash, read outside the file (ASan), hit undefined
// behaviour (UBSan) or allocate without bound. Every view a loaded model exposes is read end to
// end, so a view that points outside its tensor surfaces.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "weights/model_weights.hpp"

namespace {

size_t read_all(const lathe::MatrixView& m) {
  if (m.data == nullptr) return 0;
  size_t sum = 0;
  const size_t bytes = static_cast<size_t>(m.rows) * m.row_bytes;
  for (size_t i = 0; i < bytes; i += 61) sum += m.data[i];
  return sum + (bytes > 0 ? m.data[bytes - 1] : 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = std::make_shared<const lathe::gguf::File>(lathe::gguf::File::parse({data, size}, "fuzz.gguf"));
    const auto w = lathe::load_model_weights(file);
    volatile size_t sink = read_all(w.token_embd) + read_all(w.output) + w.output_norm.size();
    for (const auto& lw : w.layers) {
      lw.for_each_matrix([&](const lathe::MatrixView& m) { sink = sink + read_all(m); });
      for (const auto* m : {&lw.router, &lw.shexp_gate, &lw.shexp_up, &lw.shexp_down}) sink = sink + read_all(*m);
      for (const auto* experts : {&lw.exp_gate, &lw.exp_up, &lw.exp_down})
        for (const auto& m : *experts) sink = sink + read_all(m);
      sink = sink + lw.attn_norm.size() + lw.ffn_norm.size() + lw.q_norm.size() + lw.shexp_gate_inp.size();
    }
    (void)sink;
    // LATHE_FUZZ_SHOW=1: say what loaded (to check that the seeds are complete models).
    if (std::getenv("LATHE_FUZZ_SHOW") != nullptr)
      std::fprintf(stderr, "loaded %s: %zu layers, %u experts\n", lathe::arch_name(w.hp.arch).data(), w.layers.size(),
                   w.hp.n_expert);
  } catch (const lathe::Error&) {
    // Malformed input is expected; only crashes and non-lathe exceptions are findings.
  }
  return 0;
}
