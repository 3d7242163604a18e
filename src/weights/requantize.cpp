#include "weights/requantize.hpp"

#include <fmt/format.h>

#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace lathe {

void requantize_matrices(ModelWeights& w, DType type, int n_threads) {
  requantize_matrices(w, type, n_threads, {});
  w.weight_type = std::string(dtype_name(type));
}

void requantize_matrices(ModelWeights& w, DType type, int n_threads,
                         const std::function<bool(const MatrixView&)>& which) {
  refuse_moe(w.hp, w.source, "re-quantizing loaded weights");
  if (!can_quantize(type))
    throw UnsupportedError(fmt::format("cannot quantize to {}: lathe quantizes to F32, F16, BF16, Q8_0, Q4_0, Q4_1",
                                       dtype_name(type)));
  // Each matrix once (tied embeddings share their buffer with the output).
  std::vector<MatrixView*> views;
  views.push_back(&w.token_embd);
  views.push_back(&w.output);
  for (auto& lw : w.layers)
    lw.for_each_matrix([&](MatrixView& m) { views.push_back(&m); });
  std::map<const uint8_t*, size_t> job_of;  // source buffer -> job
  struct Job {
    MatrixView source;
    std::vector<MatrixView*> views;
    ModelWeights::OwnedMatrix out;
    size_t row_bytes = 0;
  };
  std::vector<Job> jobs;
  const uint32_t block = dtype_info(type).block_size;
  for (auto* v : views) {
    if (v->data == nullptr || v->type == type || (which && !which(*v))) continue;
    if (v->cols % block != 0)
      throw InvalidArgumentError(fmt::format("{}: tensor {} has {} columns, not a multiple of {}'s block of {}",
                                             w.source, v->name, v->cols, dtype_name(type), block));
    auto [it, fresh] = job_of.emplace(v->data, jobs.size());
    if (fresh) {
      Job job;
      job.source = *v;
      job.row_bytes = *dtype_bytes(type, static_cast<uint64_t>(v->cols));
      job.out.size = job.row_bytes * static_cast<size_t>(v->rows);
      jobs.push_back(std::move(job));
    }
    jobs[it->second].views.push_back(v);
  }
  for (auto& job : jobs) {
    try {
      job.out.bytes = std::make_unique<uint8_t[]>(job.out.size);
    } catch (const std::bad_alloc&) {
      throw OutOfMemoryError(fmt::format("{}: no memory for the {} copy of tensor {} ({} bytes)", w.source,
                                         dtype_name(type), job.source.name, job.out.size));
    }
  }

  // Rows are independent: threads take chunks of rows of one matrix after another.
  struct Chunk {
    size_t job;
    int64_t first, count;
  };
  std::vector<Chunk> chunks;
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t r = 0; r < jobs[j].source.rows; r += 256)
      chunks.push_back({j, r, std::min<int64_t>(256, jobs[j].source.rows - r)});
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    std::vector<float> row;
    for (size_t c; (c = next.fetch_add(1)) < chunks.size();) {
      const Chunk& chunk = chunks[c];
      Job& job = jobs[chunk.job];
      row.resize(static_cast<size_t>(job.source.cols));
      try {
        for (int64_t r = chunk.first; r < chunk.first + chunk.count; ++r) {
          dequantize_row(job.source.type, job.source.data + r * job.source.row_bytes, row.data(), job.source.cols);
          quantize_row(type, row.data(), job.out.bytes.get() + r * job.row_bytes, job.source.cols);
        }
      } catch (...) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    }
  };
  const unsigned n = static_cast<unsigned>(n_threads > 0 ? n_threads : cpu::default_threads());
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);

  for (auto& job : jobs) {
    w.weight_bytes = w.weight_bytes - static_cast<uint64_t>(job.source.rows) * job.source.row_bytes + job.out.size;
    for (auto* v : job.views) {
      v->type = type;
      v->data = job.out.bytes.get();
      v->row_bytes = job.row_bytes;
    }
    w.owned_matrices.push_back(std::move(job.out));
  }
}

}  // namespace lathe
