// A mixed workload on one long-lived engine: N sequences arrive over time (one every --interval-ms,
// submitted from a client thread while the engine steps), with prompts of different lengths
// (--min-prompt .. --max-prompt random tokens) and --gen tokens each, greedy. Reports the total
// generated tokens per second over the run, and per sequence the time to first token (from its
// arrival: waiting, queue and prefill) and the decode rate. The same arrivals served one sequence
// at a time (each waiting for the previous one) are reported beside it, so the gain of continuous
// batching is measured in the same run on the same machine.
//
//   lathe_bench_mixed -m MODEL [--device cuda] [-t N] [--sequences 16] [--slots 16]
//                     [--interval-ms 50] [--min-prompt 8] [--max-prompt 256] [--gen 64] [--json]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>

#include "api/model_impl.hpp"
#include "lathe/lathe.hpp"
#include "runtime/scheduler.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using lathe::TokenId;

struct Workload {
  std::vector<std::vector<TokenId>> prompts;
  int32_t gen = 64;
  double interval_ms = 50;
};

struct RunResult {
  double seconds = 0;  // first arrival to last completion
  std::vector<lathe::GenerateResult> results;
  std::vector<double> late;  // seconds from each sequence's arrival to its submission
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double at = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(at);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

// Prompt i arrives at i * interval; a client thread submits it then, while this thread steps the
// scheduler. `serial`: a prompt is submitted at its arrival or when the previous one has finished,
// whichever is later (a server that runs one request at a time); the wait counts in its time to
// first token.
RunResult run(lathe::Engine& engine, const Workload& w, bool serial) {
  const auto& model = internals(engine.model());
  lathe::runtime::Scheduler scheduler(*internals(engine).engine, model.vocabulary());
  RunResult out;
  out.results.resize(w.prompts.size());
  out.late.resize(w.prompts.size());
  std::mutex mutex;
  size_t done = 0;
  auto request = [&](size_t i) {
    lathe::runtime::SequenceRequest r;
    r.prompt = w.prompts[i];
    r.options.max_tokens = w.gen;
    r.options.sampling.temperature = 0;
    r.options.stop_at_end_of_generation = false;
    r.on_done = [&, i](lathe::GenerateResult&& g) {
      std::lock_guard lock(mutex);
      out.results[i] = std::move(g);
      ++done;
    };
    return r;
  };
  const auto start = Clock::now();
  auto arrive = [&](size_t i) {
    const auto arrival = start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double, std::milli>(w.interval_ms * double(i)));
    std::this_thread::sleep_until(arrival);
    out.late[i] = std::chrono::duration<double>(Clock::now() - arrival).count();
  };
  if (serial) {
    for (size_t i = 0; i < w.prompts.size(); ++i) {
      arrive(i);
      scheduler.submit(request(i));
      scheduler.run_until_idle();
    }
  } else {
    std::thread client([&] {
      for (size_t i = 0; i < w.prompts.size(); ++i) {
        arrive(i);
        scheduler.submit(request(i));
      }
    });
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (done == w.prompts.size()) break;
      }
      if (!scheduler.step()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    client.join();
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return out;
}

nlohmann::json summarize(const char* mode, const RunResult& r) {
  std::vector<double> ttft, decode_rate;
  size_t generated = 0, prompt_tokens = 0;
  for (size_t i = 0; i < r.results.size(); ++i) {
    const auto& g = r.results[i];
    ttft.push_back(r.late[i] + g.queue_seconds + g.prompt_seconds);
    if (g.tokens.size() > 1 && g.generate_seconds > 0)
      decode_rate.push_back(static_cast<double>(g.tokens.size() - 1) / g.generate_seconds);
    generated += g.tokens.size();
    prompt_tokens += g.n_prompt;
  }
  const double mean_rate = decode_rate.empty() ? 0 : std::accumulate(decode_rate.begin(), decode_rate.end(), 0.0) /
                                                         static_cast<double>(decode_rate.size());
  return {{"mode", mode},
          {"seconds", r.seconds},
          {"prompt_tokens", prompt_tokens},
          {"generated_tokens", generated},
          {"generated_tok_s", static_cast<double>(generated) / r.seconds},
          {"ttft_mean_s", std::accumulate(ttft.begin(), ttft.end(), 0.0) / static_cast<double>(ttft.size())},
          {"ttft_p50_s", percentile(ttft, 0.5)},
          {"ttft_p90_s", percentile(ttft, 0.9)},
          {"ttft_max_s", percentile(ttft, 1.0)},
          {"decode_tok_s_per_sequence_mean", mean_rate}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("lathe mixed-workload benchmark: sequences arriving over time on one engine");
  std::string model_path, device = "cpu";
  int threads = 0;
  uint32_t n_seq = 16, slots = 16, min_prompt = 8, max_prompt = 256;
  int32_t gen = 64;
  double interval_ms = 50;
  bool json = false, no_serial = false;
  app.add_option("-m,--model", model_path, "GGUF file or model directory")->required();
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("-t,--threads", threads, "CPU threads (0: one per hardware thread)");
  app.add_option("--sequences", n_seq, "sequences in the workload")->check(CLI::Range(1u, 4096u));
  app.add_option("--slots", slots, "sequences the engine runs at once")->check(CLI::Range(1u, 4096u));
  app.add_option("--interval-ms", interval_ms, "time between arrivals")->check(CLI::NonNegativeNumber);
  app.add_option("--min-prompt", min_prompt, "shortest prompt (tokens)")->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-prompt", max_prompt, "longest prompt (tokens)")->check(CLI::Range(1u, 1u << 20));
  app.add_option("--gen", gen, "tokens generated per sequence")->check(CLI::Range(1, 1 << 20));
  app.add_flag("--json", json, "print JSON");
  app.add_flag("--no-serial", no_serial, "skip the one-at-a-time reference run");
  CLI11_PARSE(app, argc, argv);
  try {
    if (min_prompt > max_prompt) throw lathe::InvalidArgumentError("--min-prompt is larger than --max-prompt");
    const auto model = lathe::Model::load(model_path);
    Workload w;
    w.gen = gen;
    w.interval_ms = interval_ms;
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> length(min_prompt, max_prompt);
    std::uniform_int_distribution<TokenId> token(0, static_cast<TokenId>(internals(*model).n_samplable() - 1));
    uint32_t longest = 0;
    for (uint32_t i = 0; i < n_seq; ++i) {
      std::vector<TokenId> p(length(rng));
      for (auto& t : p) t = token(rng);
      longest = std::max<uint32_t>(longest, static_cast<uint32_t>(p.size()));
      w.prompts.push_back(std::move(p));
    }
    lathe::Engine engine(model, {.n_slots = slots,
                                 .n_ctx = longest + static_cast<uint32_t>(gen),
                                 .compute = {.n_threads = threads, .device = lathe::Device::parse(device)}});
    // A short warm-up (first-use costs: CUDA graph capture, cuBLAS handles, page faults).
    run(engine, {{w.prompts[0]}, 4, 0}, false);
    nlohmann::json report = nlohmann::json::array();
    report.push_back(summarize("continuous batching", run(engine, w, false)));
    if (!no_serial) report.push_back(summarize("one at a time", run(engine, w, true)));
    if (json) {
      fmt::print("{}\n", report.dump(2));
    } else {
      fmt::print("{} sequences, prompts {}..{} tokens, {} generated each, one arriving every {} ms, {} slots, {}\n",
                 n_seq, min_prompt, max_prompt, gen, interval_ms, slots, engine.memory_use().device);
      fmt::print("| mode | seconds | generated tok/s | TTFT mean / p50 / p90 / max (s) | decode tok/s per seq |\n");
      fmt::print("|---|---:|---:|---:|---:|\n");
      for (const auto& r : report)
        fmt::print("| {} | {:.2f} | {:.1f} | {:.3f} / {:.3f} / {:.3f} / {:.3f} | {:.1f} |\n",
                   r["mode"].get<std::string>(), r["seconds"].get<double>(), r["generated_tok_s"].get<double>(),
                   r["ttft_mean_s"].get<double>(), r["ttft_p50_s"].get<double>(), r["ttft_p90_s"].get<double>(),
                   r["ttft_max_s"].get<double>(), r["decode_tok_s_per_sequence_mean"].get<double>());
    }
    return 0;
  } catch (const lathe::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
