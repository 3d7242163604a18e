// One LoRA training step's forward + backward (src/train/lora_pass.hpp) on a model, for the CPU's
// training speed: `lathe_bench_train_step MODEL [TOKENS=64] [RANK=8] [REPS=3]` prints the seconds
// and tokens/s of each repetition (adapters on every projection, every position scored), the
// process's CPU seconds in it (beside the wall time: on a shared machine, a step that took longer
// than its CPU time over the threads was kept waiting), then the minimum and median.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <string>
#include <vector>

#include "train/lora_pass.hpp"
#include "weights/model_weights.hpp"

namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [TOKENS=64] [RANK=8] [REPS=3]\n", argv[0]);
    return 2;
  }
  const int n = argc > 2 ? std::atoi(argv[2]) : 64, rank = argc > 3 ? std::atoi(argv[3]) : 8;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 3;
  try {
    const auto w = lathe::load_model_weights(argv[1]);
    const std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                              "ffn_down"};
    const auto lora = lathe::train::init_lora(w, targets, rank, 2.0 * rank, 0);
    std::vector<int32_t> tokens(static_cast<size_t>(n)), next(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) tokens[t] = (t * 7919 + 11) % static_cast<int>(w.hp.n_vocab);
    for (int t = 0; t + 1 < n; ++t) next[t] = tokens[t + 1];
    next[n - 1] = -1;
    lathe::train::LoraGrads<float> grads;
    std::vector<double> seconds;
    for (int r = 0; r < reps; ++r) {
      grads.reset(lora);
      const double cpu_start = process_cpu_seconds();
      const auto start = std::chrono::steady_clock::now();
      const double loss = lathe::train::lora_forward_backward(w, lora, tokens, next, &grads);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double cpu = process_cpu_seconds() - cpu_start;
      seconds.push_back(s);
      std::printf("rep %d: %d tokens, rank %d: %.3f s (%.1f tokens/s), cpu %.3f s, loss %.3f\n", r + 1, n, rank, s,
                  n / s, cpu, loss);
    }
    std::sort(seconds.begin(), seconds.end());
    if (!seconds.empty())
      std::printf("min %.3f s, median %.3f s, max %.3f s over %d reps\n", seconds.front(), seconds[seconds.size() / 2],
                  seconds.back(), reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
