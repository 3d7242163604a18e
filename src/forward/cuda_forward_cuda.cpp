#include "forward/cuda_forward.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/switches.hpp"
#include "lathe/error.hpp"
#include "forward/cuda_layer_stream.hpp"
#include "forward/cuda_linear.hpp"
#include "forward/cuda_scratch.hpp"
#include "forward/moe_routing.hpp"
#include "lathe/compute.hpp"
#include "weights/cuda_weights.hpp"
#include "weights/stream_plan.hpp"

namespace lathe {

using cuda::Epilogue;
using cuda::MatvecTarget;

struct CudaForward::Impl {
  const ModelWeights& w;
  const HParams& hp;
  CudaForwardOptions opt;
  std::shared_ptr<CudaWeights> dw;
  std::unique_ptr<ResidentLayersOf<CudaLayerWeights>> resident;
  std::unique_ptr<StreamedCudaLayers> streamed;  // when some layers stream (docs/STREAMING.md)
  uint64_t min_budget = 0;                       // the least --vram-budget streaming runs in
  CudaLayerSource* layers = nullptr;  // where each layer's weights come from (the weights seam)
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::Blas> blas;
  int multiprocessors = 1;
  std::string device_name;
  int64_t n_embd = 0, head_dim = 0, q_w = 0, kv_w = 0, qkv_w = 0, n_ff = 0, n_vocab = 0;

  cuda::DeviceBuffer rope_table;  // [n_ctx][rope_dim/2] (cos, sin), when it fits 256 MiB
  void** k_tab = nullptr;  // [layer][slot] (the runtime's DeviceKvCache)
  void** v_tab = nullptr;
  std::unique_ptr<CudaScratch> scratch;  // activations of max_batch tokens, staging buffers
  std::unique_ptr<CudaLinear> products;  // the linear layers, over that scratch
  CudaLogits logits;
  uint32_t logit_rows = 0;      // rows written by the last call (on the device)
  bool logits_on_host = false;  // ... and already copied to logits.host
  // Decode attention rounds its output into q8/ds for an 8-bit output projection (saves a
  // quantize_q8 launch per layer); LATHE_CUDA_ATTN_Q8=0 turns that off, to measure what it brings.
  const bool attention_rounds_output = !cuda::turned_off_by_env("LATHE_CUDA_ATTN_Q8");
  // Decode attention applies the biases, Q/K norms and RoPE and stores the K/V row itself, instead
  // of a rope_kv launch before it (LATHE_CUDA_ROPE_IN_ATTENTION=0 keeps the separate launch).
  const bool rope_in_attention = !cuda::turned_off_by_env("LATHE_CUDA_ROPE_IN_ATTENTION");
  // Hooks with a device path (the SAE gate) run on the device rows, and a decode step with them
  // still replays as the captured graph (LATHE_CUDA_DEVICE_HOOKS=0: host copies of the rows, no
  // graph, as every other hook; docs/PERFORMANCE.md has both).
  const bool device_hooks = !cuda::turned_off_by_env("LATHE_CUDA_DEVICE_HOOKS");
  cudaGraphExec_t graph = nullptr;
  uint64_t graph_hooks = 0;  // generation of the hooks the captured step runs (0: none)

  // The plan of the current pass, from its batch (host side).
  std::span<ResidualHooks* const> hooks;        // by slot; empty: none
  bool hooks_on_device = false;                 // the pass's hooks (if any) all run on device rows
  std::vector<uint32_t> row_slot, out_slot;     // slot of each row / of each logits row
  std::vector<uint8_t> row_ends, out_ends;      // ... and whether it ends its sequence's input
  std::vector<Batch::Run> runs;                 // the batch's runs of one sequence
  std::vector<int32_t> positions_host, slots_host;
  bool one_token_per_slot = true;               // a pure decode step (RoPE may fold into attention)
  std::vector<std::pair<int, int>> logit_stretches;  // (first row, count) of rows that keep logits
  ExpertRoutes routes;                          // the current layer's (mixtures of experts)
  std::vector<std::pair<size_t, int>> expert_spans;  // ... as spans of the uploaded routes

  Impl(const ModelWeights& weights, const CudaForwardOptions& o) : w(weights), hp(weights.hp), opt(o) {
    if (opt.max_batch == 0 || opt.kv.n_slots == 0 || opt.kv.n_ctx == 0 || opt.kv.k_tables == nullptr)
      throw InvalidArgumentError("CUDA forward: max_batch, n_slots and n_ctx must be at least 1, with a KV cache");
    head_dim = hp.head_dim;
    if (head_dim % 8 != 0 || head_dim > 256 || hp.n_head % hp.n_head_kv != 0)
      throw UnsupportedError(fmt::format("{}: the CUDA kernels need head_dim a multiple of 8 up to 256 and whole "
                                         "groups of query heads per K/V head (this model: head_dim {}, {} / {} "
                                         "heads); use --device cpu",
                                         w.source, hp.head_dim, hp.n_head, hp.n_head_kv));
    cuda::use_device(opt.device);
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, opt.device), "reading the device properties");
    multiprocessors = prop.multiProcessorCount;
    device_name = prop.name;
    n_embd = hp.n_embd;
    q_w = int64_t{hp.n_head} * head_dim;
    kv_w = int64_t{hp.n_head_kv} * head_dim;
    qkv_w = q_w + 2 * kv_w;
    n_ff = hp.n_ff;
    n_vocab = w.output.rows;

    // The scratch first: what the weights may take of a budget is what it and the KV cache leave.
    const CudaWeightsSizes sizes = CudaWeights::sizes(w);
    cuda::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating a CUDA stream");
    blas = std::make_unique<cuda::Blas>(stream);
    k_tab = opt.kv.k_tables;
    v_tab = opt.kv.v_tables;
    rope_table = make_device_rope_table(w.rope, opt.kv.n_ctx);
    scratch = std::make_unique<CudaScratch>(hp, sizes.shape, opt.max_batch, multiprocessors, opt.batch_invariant);
    products = std::make_unique<CudaLinear>(*scratch, *blas, stream, hp.rms_eps, n_embd, opt.batch_invariant);
    logits.n_vocab = n_vocab;
    grow_logits(1);
    dw = CudaWeights::get(w, opt.device, streaming_plan(sizes));
    if (dw->n_streamed > 0) {
      streamed = std::make_unique<StreamedCudaLayers>(dw, stream);
      layers = streamed.get();
    } else {
      resident = std::make_unique<ResidentLayersOf<CudaLayerWeights>>(dw->layers);
      layers = resident.get();
    }
  }

  // Which layers stream (empty: none) under opt.vram_budget: the room left for weights is the
  // budget less the KV cache and the scratch (all allocated by now); `auto` takes what is free,
  // less a margin for cuBLAS's workspace and the captured graphs.
  std::vector<bool> streaming_plan(const CudaWeightsSizes& sizes) {
    const uint64_t others =
        opt.kv.bytes + opt.kv.table_bytes + scratch->bytes() + rope_table.bytes() + logits.dev.bytes();
    min_budget = others + streaming_minimum(sizes.always_resident, sizes.layers);
    // LATHE_CUDA_STREAM_LAYERS=all streams every layer whatever the budget: the tests run the
    // streaming path on models that fit (tests/forward/test_cuda_stream.cpp, scripts/gpu-check.sh).
    if (const char* env = std::getenv("LATHE_CUDA_STREAM_LAYERS"); env != nullptr && std::string(env) == "all")
      return plan_layer_streaming(sizes.always_resident, sizes.layers, UINT64_MAX, 2, 0).streamed;
    if (opt.vram_budget == 0) return {};
    uint64_t room = 0;
    if (opt.vram_budget == kVramBudgetAuto) {
      constexpr uint64_t kMargin = uint64_t{1} << 30;
      const uint64_t free = cuda::mem_info().free;
      room = free > kMargin ? free - kMargin : 0;
    } else {
      room = opt.vram_budget > others ? opt.vram_budget - others : 0;
    }
    const StreamPlan plan = plan_layer_streaming(sizes.always_resident, sizes.layers, room, 2, UINT32_MAX, "--vram-budget");
    return plan.n_streamed > 0 ? plan.streamed : std::vector<bool>{};
  }

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    streamed.reset();
    if (graph != nullptr) cudaGraphExecDestroy(graph);
    products.reset();
    blas.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  void grow_logits(uint32_t rows) {
    if (!logits.grow(rows) || graph == nullptr) return;
    cudaGraphExecDestroy(graph);  // the captured step wrote the old buffer
    graph = nullptr;
  }

  // ---- building blocks -------------------------------------------------------------------

  // y (per target) = W x for n tokens, with the RMSNorm before and the SwiGLU after fused in
  // where the path allows (forward/cuda_linear.hpp).
  cuda::GemmInput linear(std::initializer_list<MatvecTarget> targets, const float* xin, int64_t ldx, int n,
                         Epilogue ep, const float* norm = nullptr, bool q8_ready = false,
                         cuda::Dtype16 swiglu_out16 = cuda::Dtype16::None) {
    return (*products)(targets, xin, ldx, n, ep, norm, q8_ready, swiglu_out16);
  }

  // Runs each sequence's hooks of `site` on its device rows: in place where they all have a
  // device path (hooks_on_device), else through host memory. Row r of `rows` belongs to slot
  // slots[r].
  void hook(HookPoint point, uint32_t layer, float* rows, const std::vector<uint32_t>& slots,
            const std::vector<uint8_t>& ends) {
    if (hooks.empty()) return;
    const HookSite site{point, layer};
    bool any = false;
    for (uint32_t s : slots) any = any || (hooks[s] != nullptr && hooks[s]->has(site));
    if (!any) return;
    if (hooks_on_device) {
      for_each_run(slots, [&](size_t begin, size_t end) {
        ResidualHooks* h = hooks[slots[begin]];
        if (h != nullptr && h->has(site))
          h->apply_on_device(site, rows + begin * n_embd, static_cast<int64_t>(end - begin), n_embd, stream);
      });
      return;
    }
    const size_t bytes = slots.size() * n_embd * 4;
    cuda::check(cudaMemcpyAsync(scratch->hook_rows.data(), rows, bytes, cudaMemcpyDeviceToHost, stream),
                "reading hook rows");
    cuda::check(cudaStreamSynchronize(stream), "reading hook rows");
    float* host = scratch->hook_rows.as<float>();
    for_each_run(slots, [&](size_t begin, size_t end) {
      ResidualHooks* h = hooks[slots[begin]];
      if (h != nullptr && h->has(site))
        h->apply(site, host + begin * n_embd, static_cast<int64_t>(end - begin), n_embd, ends[end - 1] != 0);
    });
    cuda::check(cudaMemcpyAsync(rows, scratch->hook_rows.data(), bytes, cudaMemcpyHostToDevice, stream),
                "writing hook rows");
  }

  // Calls f(begin, end) for each run of equal slots in `slots` (the rows of one sequence).
  template <typename F>
  static void for_each_run(const std::vector<uint32_t>& slots, F&& f) {
    for (size_t begin = 0; begin < slots.size();) {
      size_t end = begin + 1;
      while (end < slots.size() && slots[end] == slots[begin]) ++end;
      f(begin, end);
      begin = end;
    }
  }

  // Whether the pass may run its hooks on the device rows (and so take the captured graph): when
  // the hooks of every sequence in the pass (if any) have a device path, readying them; with
  // LATHE_CUDA_DEVICE_HOOKS=0, only when no slot has hooks.
  bool pass_hooks_on_device() {
    const auto hooked = [](const ResidualHooks* h) { return h != nullptr && !h->empty(); };
    if (!device_hooks) return std::none_of(hooks.begin(), hooks.end(), hooked);
    bool all = true;
    for_each_run(row_slot, [&](size_t begin, size_t) {
      ResidualHooks* h = hooks.empty() ? nullptr : hooks[row_slot[begin]];
      if (all && hooked(h)) all = h->on_device(opt.device, opt.max_batch);
    });
    return all;
  }

  // Attention over rows row0 .. row0 + n - 1 of the pass.
  cuda::AttentionArgs attention_args(uint32_t layer, int row0, int n) const {
    cuda::AttentionArgs a;
    a.q = scratch->qkv + int64_t{row0} * qkv_w;
    a.ldq = qkv_w;
    a.out = scratch->attn + int64_t{row0} * q_w;
    a.ldo = q_w;
    a.n_tokens = n;
    a.n_head = static_cast<int>(hp.n_head);
    a.n_head_kv = static_cast<int>(hp.n_head_kv);
    a.head_dim = static_cast<int>(head_dim);
    a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    a.positions = scratch->d_positions() + row0;
    a.slots = scratch->d_slots() + row0;
    a.k_cache = k_tab + size_t{layer} * opt.kv.n_slots;
    a.v_cache = v_tab + size_t{layer} * opt.kv.n_slots;
    a.kv_format = opt.kv.format;
    a.n_ctx = static_cast<int>(opt.kv.n_ctx);
    return a;
  }

  // Decode attention over rows row0 .. row0 + n - 1, one token each (of any sequences) at its own
  // position; `rope`: the kernel also applies RoPE and stores the K/V rows (one token per slot).
  void attention_decode_rows(const cuda::AttentionArgs& a_in, const cuda::RopeKvArgs* rope, bool round_q8) {
    cuda::AttentionArgs a = a_in;
    if (rope != nullptr) a.rope = *rope;
    if (round_q8) a.out_q8 = {scratch->q8, scratch->ds, q_w, q_w / 16};
    const int n = a.n_tokens;
    const int splits =
        cuda::decode_splits(static_cast<int>(opt.kv.n_ctx), n, static_cast<int>(hp.n_head_kv), multiprocessors);
    const int split_len = static_cast<int>((opt.kv.n_ctx + splits - 1) / splits);
    const int per_block = cuda::decode_heads_per_block(splits, n, static_cast<int>(hp.n_head_kv),
                                                       static_cast<int>(hp.n_head / hp.n_head_kv), multiprocessors);
    cuda::attention_decode(a, splits, split_len, scratch->split_scratch, stream, per_block);
  }

  // Batch-invariant attention (ComputeOptions::batch_invariant): every row, of a prefill chunk or
  // a decode step, through the decode kernel at its own position, with the split and the heads per
  // block of a one-token step (the defaults choose both by the number of rows). Rows go in groups
  // small enough for the split scratch; with one split (contexts up to 1024) all at once.
  void attention_rows_invariant(uint32_t il, int n) {
    const int n_ctx = static_cast<int>(opt.kv.n_ctx), kv_heads = static_cast<int>(hp.n_head_kv);
    const int splits = cuda::decode_splits(n_ctx, 1, kv_heads, multiprocessors);
    const int split_len = (n_ctx + splits - 1) / splits;
    const int per_block = cuda::decode_heads_per_block(splits, 1, kv_heads, static_cast<int>(hp.n_head / hp.n_head_kv),
                                                       multiprocessors);
    const int group = splits == 1 ? n
                                  : static_cast<int>(CudaScratch::split_slots(opt.max_batch, multiprocessors,
                                                                              hp.n_head_kv) /
                                                     static_cast<size_t>(splits));
    for (int row0 = 0; row0 < n; row0 += group)
      cuda::attention_decode(attention_args(il, row0, std::min(group, n - row0)), splits, split_len,
                             scratch->split_scratch, stream, per_block);
  }

  void attention_block(const CudaLayerWeights& L, uint32_t il, int n) {
    if (L.fused_qkv()) {
      linear({{L.wqkv, {}, scratch->qkv, qkv_w}}, scratch->x, n_embd, n, Epilogue::Store, L.attn_norm);
    } else {
      float* qkv = scratch->qkv;
      linear({{L.wq, {}, qkv, qkv_w}, {L.wk, {}, qkv + q_w, qkv_w}, {L.wv, {}, qkv + q_w + kv_w, qkv_w}}, scratch->x,
             n_embd, n, Epilogue::Store, L.attn_norm);
    }
    // OLMoE normalizes the whole Q and K projections (norm weights of q_w and kv_w values), not
    // each head: in place here, so that RoPE (rope_kv or decode attention) sees no norms. qwen3's
    // per-head norms stay in those kernels.
    const bool whole_qk_norm = L.q_norm != nullptr && w.layers[il].q_norm.size() != static_cast<size_t>(head_dim);
    if (whole_qk_norm) {
      if (L.bq != nullptr || L.bk != nullptr)
        throw UnsupportedError(fmt::format("{}: Q/K biases before whole-projection Q/K norms are not supported on "
                                           "CUDA; use --device cpu",
                                           w.source));
      float* qkv = scratch->qkv;
      cuda::rms_norm(qkv, qkv_w, L.q_norm, n, static_cast<int>(q_w), hp.rms_eps, qkv, qkv_w, stream);
      if (L.k_norm != nullptr)
        cuda::rms_norm(qkv + q_w, qkv_w, L.k_norm, n, static_cast<int>(kv_w), hp.rms_eps, qkv + q_w, qkv_w, stream);
    }
    cuda::RopeKvArgs r;
    r.qkv = scratch->qkv;
    r.ld = qkv_w;
    r.n_tokens = n;
    r.n_head = static_cast<int>(hp.n_head);
    r.n_head_kv = static_cast<int>(hp.n_head_kv);
    r.head_dim = static_cast<int>(head_dim);
    r.bq = L.bq;
    r.bk = L.bk;
    r.bv = L.bv;
    r.q_norm = whole_qk_norm ? nullptr : L.q_norm;
    r.k_norm = whole_qk_norm ? nullptr : L.k_norm;
    r.eps = hp.rms_eps;
    r.inv_freq = dw->inv_freq;
    r.rope_dim = w.rope.rope_dim;
    r.neox = w.rope.order == RopeOrder::NeoX;
    r.position_scale = w.rope.position_scale;
    r.cos_sin = rope_table.as<float>();
    r.positions = scratch->d_positions();
    r.slots = scratch->d_slots();
    r.k_cache = k_tab + size_t{il} * opt.kv.n_slots;
    r.v_cache = v_tab + size_t{il} * opt.kv.n_slots;
    r.kv_format = opt.kv.format;
    r.n_ctx = static_cast<int>(opt.kv.n_ctx);
    // A pure decode step (one token per slot): decode attention does rope_kv's work itself, one
    // launch fewer per layer. Otherwise every row's K/V is stored first, so that a run of several
    // tokens of one sequence sees its own earlier rows.
    const bool all_decode = runs.size() == static_cast<size_t>(n);  // every run is one token
    const bool fold_rope = all_decode && one_token_per_slot && rope_in_attention && !opt.batch_invariant;
    if (!fold_rope) cuda::rope_kv(r, stream);

    if (opt.batch_invariant) {
      attention_rows_invariant(il, n);
      linear({{L.wo, {}, scratch->x, n_embd}}, scratch->attn, q_w, n, Epilogue::Add);
      return;
    }

    if (all_decode) {
      // An 8-bit output projection reads the attention output rounded by the attention kernel.
      const bool attn_q8_ready = attention_rounds_output && n <= cuda::kMatvecMaxTokens &&
                                 cuda::matvec_reads_q8(L.wo.type) && head_dim % 32 == 0;
      attention_decode_rows(attention_args(il, 0, n), fold_rope ? &r : nullptr, attn_q8_ready);
      linear({{L.wo, {}, scratch->x, n_embd}}, scratch->attn, q_w, n, Epilogue::Add, nullptr, attn_q8_ready);
      return;
    }
    if (runs.size() == 1) {
      // One sequence's chunk: above 8 tokens the tensor-core kernel writes the output
      // projection's 16-bit cuBLAS input itself (no float32 rows to convert).
      cuda::AttentionArgs a = attention_args(il, 0, n);
      const cuda::Dtype16 out16 =
          cuda::attention_prefill_uses_tensor_cores(a) ? products->written_type16(L.wo, n) : cuda::Dtype16::None;
      if (out16 != cuda::Dtype16::None) {
        a.out16 = products->act16_for(n, q_w);
        a.out16_type = out16;
      }
      cuda::attention_prefill(a, static_cast<int>(runs[0].first_pos), stream);
      if (out16 != cuda::Dtype16::None) {
        products->gemm(L.wo, cuda::gemm_input_written(n, q_w, out16), scratch->x, n_embd, true);
        return;
      }
    } else {
      // A mixed batch: each run of several tokens through prefill attention, each stretch of
      // single tokens through one decode attention launch.
      for (size_t i = 0; i < runs.size();) {
        const Batch::Run& run = runs[i];
        if (run.size > 1) {
          cuda::attention_prefill(attention_args(il, static_cast<int>(run.begin), static_cast<int>(run.size)),
                                  static_cast<int>(run.first_pos), stream);
          ++i;
          continue;
        }
        size_t j = i;
        while (j < runs.size() && runs[j].size == 1) ++j;
        attention_decode_rows(attention_args(il, static_cast<int>(run.begin), static_cast<int>(j - i)), nullptr, false);
        i = j;
      }
    }
    linear({{L.wo, {}, scratch->x, n_embd}}, scratch->attn, q_w, n, Epilogue::Add);
  }

  void mlp_block(const CudaLayerWeights& L, int n) {
    const cuda::DeviceMatrix gate = L.fused_gate_up() ? L.w_gate_up.row_slice(0, n_ff) : L.w_gate;
    const cuda::DeviceMatrix up = L.fused_gate_up() ? L.w_gate_up.row_slice(n_ff, n_ff) : L.w_up;
    // Above 8 tokens SwiGLU writes h straight in the 16-bit type the down projection reads.
    const cuda::GemmInput h16 =
        linear({{gate, up, scratch->h, n_ff}}, scratch->x, n_embd, n, Epilogue::SwiGLU, L.ffn_norm, false,
               products->written_type16(L.w_down, n));
    if (h16.n_tokens > 0) products->gemm(L.w_down, h16, scratch->x, n_embd, true);
    else linear({{L.w_down, {}, scratch->x, n_embd}}, scratch->h, n_ff, n, Epilogue::Add);
  }

  // A mixture-of-experts block (forward/moe_routing.hpp has the routing): the router's logits go
  // to the host, which routes (the CPU's code, so both backends pick the same experts from the
  // same logits) and uploads each expert's tokens and weights; then each chosen expert runs once
  // over its gathered rows, mat-vecs up to 8 of them and cuBLAS above, and its output rows are
  // added to their tokens' residual rows. qwen2moe's shared expert runs on every row, weighted by
  // sigmoid(w . x) from the router's extra column. The host round trip per layer keeps such steps
  // out of the captured graph (forward()).
  void moe_block(const CudaLayerWeights& L, uint32_t il, int n) {
    const int64_t n_expert = hp.n_expert, cols = scratch->moe_cols;
    if (L.exp_gate.size() != static_cast<size_t>(n_expert) || L.exp_up.size() != L.exp_gate.size() ||
        L.exp_down.size() != L.exp_gate.size() || L.shared_expert() != (cols > n_expert) ||
        (L.shared_expert() && L.shexp_gate_inp.qs == nullptr))
      throw InternalError(fmt::format("CUDA forward: layer {} has {} experts (the model {}) or a shared expert where "
                                      "the scratch has none",
                                      il, L.exp_gate.size(), n_expert));
    float* xn = scratch->xn;
    cuda::rms_norm(scratch->x, n_embd, L.ffn_norm, n, static_cast<int>(n_embd), hp.rms_eps, xn, n_embd, stream);
    auto* logits = scratch->moe_logits.as<float>();
    if (L.shared_expert())
      linear({{L.router, {}, logits, cols}, {L.shexp_gate_inp, {}, logits + n_expert, cols}}, xn, n_embd, n,
             Epilogue::Store);
    else
      linear({{L.router, {}, logits, cols}}, xn, n_embd, n, Epilogue::Store);
    auto* host_logits = scratch->moe_logits_host.as<float>();
    cuda::check(cudaMemcpyAsync(host_logits, logits, size_t(n) * cols * sizeof(float), cudaMemcpyDeviceToHost, stream),
                "reading the router logits");
    cuda::check(cudaStreamSynchronize(stream), "routing the tokens to experts");
    route_tokens(hp, host_logits, cols, n, routes);

    // Routes as the device reads them: every expert's tokens, then the shared expert's (all rows);
    // the weights in the same order after max_routes values.
    const size_t max_routes = (size_t{hp.n_expert_used} + 1) * opt.max_batch;
    auto* host_ids = scratch->moe_routes_host.as<int32_t>();
    auto* host_weights = reinterpret_cast<float*>(host_ids + max_routes);
    std::vector<std::pair<size_t, int>>& spans = expert_spans;  // (first route, count) per expert
    spans.assign(static_cast<size_t>(n_expert), {0, 0});
    size_t at = 0;
    for (int64_t e = 0; e < n_expert; ++e) {
      const auto& routed = routes.by_expert[static_cast<size_t>(e)];
      spans[static_cast<size_t>(e)] = {at, static_cast<int>(routed.size())};
      for (const auto& [token, weight] : routed) {
        host_ids[at] = static_cast<int32_t>(token);
        host_weights[at++] = weight;
      }
    }
    const size_t shared_at = at;
    if (L.shared_expert())
      for (int t = 0; t < n; ++t) {
        host_ids[at] = t;
        host_weights[at++] = static_cast<float>(1.0 / (1.0 + std::exp(-double(host_logits[t * cols + n_expert]))));
      }
    auto* ids = scratch->moe_routes.as<int32_t>();
    auto* weights = reinterpret_cast<float*>(ids + max_routes);
    cuda::check(cudaMemcpyAsync(ids, host_ids, at * sizeof(int32_t), cudaMemcpyHostToDevice, stream),
                "copying the expert routes");
    cuda::check(cudaMemcpyAsync(weights, host_weights, at * sizeof(float), cudaMemcpyHostToDevice, stream),
                "copying the expert routes");

    auto* rows = scratch->moe_rows.as<float>();
    auto* out = scratch->moe_out.as<float>();
    const int width = static_cast<int>(n_embd);
    for (int64_t e = 0; e < n_expert; ++e) {
      const auto [first, m] = spans[static_cast<size_t>(e)];
      if (m == 0) continue;
      const auto ei = static_cast<size_t>(e);
      const int64_t ff = L.exp_gate[ei].rows;
      cuda::gather_rows(xn, n_embd, ids + first, m, width, rows, stream);
      linear({{L.exp_gate[ei], L.exp_up[ei], scratch->h, ff}}, rows, n_embd, m, Epilogue::SwiGLU);
      linear({{L.exp_down[ei], {}, out, n_embd}}, scratch->h, ff, m, Epilogue::Store);
      cuda::scatter_add_rows(out, ids + first, weights + first, m, width, scratch->x, n_embd, stream);
    }
    if (L.shared_expert()) {
      const int64_t ff = L.shexp_gate.rows;
      linear({{L.shexp_gate, L.shexp_up, scratch->h, ff}}, xn, n_embd, n, Epilogue::SwiGLU);
      linear({{L.shexp_down, {}, out, n_embd}}, scratch->h, ff, n, Epilogue::Store);
      cuda::scatter_add_rows(out, ids + shared_at, weights + shared_at, n, width, scratch->x, n_embd, stream);
    }
  }

  // The whole pass over the n rows of the current plan, whose ids, positions and slots are
  // already on the device; logits for the rows in logit_stretches.
  void forward_pass(int n) {
    layers->begin_pass();
    cuda::embed_rows(dw->token_embd, scratch->d_tokens(), n, scratch->x, stream);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
      const CudaLayerWeights& L = layers->acquire(il);
      hook(HookPoint::ResidPre, il, scratch->x, row_slot, row_ends);
      attention_block(L, il, n);
      hook(HookPoint::ResidMid, il, scratch->x, row_slot, row_ends);
      if (L.moe()) moe_block(L, il, n);
      else mlp_block(L, n);
      hook(HookPoint::ResidPost, il, scratch->x, row_slot, row_ends);
      layers->release(il);
    }
    const int rows = static_cast<int>(out_slot.size());
    if (rows == 0) return;
    // The rows that keep logits: in place when they are one stretch, else gathered into h (free
    // at this point of the pass) stretch by stretch.
    const float* last = scratch->x + int64_t{logit_stretches[0].first} * n_embd;
    if (logit_stretches.size() > 1) {
      int64_t at = 0;
      for (const auto& [first, count] : logit_stretches) {
        cuda::check(cudaMemcpyAsync(scratch->h + at * n_embd, scratch->x + int64_t{first} * n_embd,
                                    size_t(count) * n_embd * 4, cudaMemcpyDeviceToDevice, stream),
                    "gathering the rows that keep logits");
        at += count;
      }
      last = scratch->h;
    }
    const MatvecTarget head{dw->output, {}, logits.dev.as<float>(), n_vocab};
    const bool final_hooked = std::any_of(out_slot.begin(), out_slot.end(), [&](uint32_t s) {
      return !hooks.empty() && hooks[s] != nullptr && hooks[s]->has({HookPoint::FinalNorm, 0});
    });
    if (final_hooked) {  // the hook sees the normalized rows
      cuda::rms_norm(last, n_embd, dw->output_norm, rows, static_cast<int>(n_embd), hp.rms_eps, scratch->xn, n_embd,
                     stream);
      hook(HookPoint::FinalNorm, 0, scratch->xn, out_slot, out_ends);
      linear({head}, scratch->xn, n_embd, rows, Epilogue::Store);
    } else {
      linear({head}, last, n_embd, rows, Epilogue::Store, dw->output_norm);
    }
  }

  // The host-side plan of a pass: rows' slots, runs, the rows that keep logits.
  void plan(const Batch& batch, std::span<ResidualHooks* const> hooks_by_slot) {
    const size_t n = batch.size();
    hooks = hooks_by_slot;
    row_slot.assign(batch.slots().begin(), batch.slots().end());
    row_ends.resize(n);
    out_slot.clear();
    out_ends.clear();
    logit_stretches.clear();
    positions_host.resize(n);
    slots_host.resize(n);
    for (size_t i = 0; i < n; ++i) {
      row_ends[i] = batch.ends_input(i) ? 1 : 0;
      positions_host[i] = static_cast<int32_t>(batch.positions()[i]);
      slots_host[i] = static_cast<int32_t>(batch.slots()[i]);
      if (!batch.wants_logits(i)) continue;
      out_slot.push_back(row_slot[i]);
      out_ends.push_back(row_ends[i]);
      const bool extends = !logit_stretches.empty() &&
                           logit_stretches.back().first + logit_stretches.back().second == static_cast<int>(i);
      if (extends)
        ++logit_stretches.back().second;
      else
        logit_stretches.emplace_back(static_cast<int>(i), 1);
    }
    runs = batch.runs();
    one_token_per_slot = runs.size() == n && batch.one_token_per_slot();
  }

  void upload_io(std::span<const int32_t> tokens) {
    const size_t n = tokens.size(), B = opt.max_batch;
    auto* host = scratch->io_host.as<int32_t>();
    std::memcpy(host, tokens.data(), n * 4);
    std::memcpy(host + B, positions_host.data(), n * 4);
    std::memcpy(host + 2 * B, slots_host.data(), n * 4);
    cuda::check(cudaMemcpyAsync(scratch->io.data(), host, 3 * B * 4, cudaMemcpyHostToDevice, stream),
                "copying token ids");
  }

  // Waits for the pass (so that its errors surface in run()); its logits stay on the device
  // until host_logits() or argmax() asks for them.
  void finish_run(int rows) {
    cuda::check(cudaStreamSynchronize(stream), "running the forward pass");
    logit_rows = static_cast<uint32_t>(rows);
    logits_on_host = false;
  }

  const float* host_logits() {
    if (!logits_on_host && logit_rows > 0) {
      cuda::check(cudaMemcpyAsync(logits.host.data(), logits.dev.data(), size_t{logit_rows} * n_vocab * 4,
                                  cudaMemcpyDeviceToHost, stream),
                  "copying logits");
      cuda::check(cudaStreamSynchronize(stream), "copying logits");
      logits_on_host = true;
    }
    return logits.host.as<float>();
  }

  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) {
    if (n_rows > logit_rows || n > n_vocab || n == 0)
      throw InternalError(fmt::format("CudaForward::argmax: {} rows of {} logits asked, the last call left {} of {}",
                                      n_rows, n, logit_rows, n_vocab));
    cuda::argmax_rows(logits.dev.as<float>(), static_cast<int>(n_rows), static_cast<int>(n), n_vocab,
                      scratch->argmax_dev.as<int32_t>(), stream);
    cuda::check(cudaMemcpyAsync(scratch->argmax_host.data(), scratch->argmax_dev.data(),
                                size_t{n_rows} * sizeof(int32_t), cudaMemcpyDeviceToHost, stream),
                "copying greedy token ids");
    cuda::check(cudaStreamSynchronize(stream), "picking greedy tokens");
    std::memcpy(out, scratch->argmax_host.data(), size_t{n_rows} * sizeof(int32_t));
  }

  // One token: replay the captured step (capturing it on first use, and again when the hooks it
  // runs are not the ones it was captured with: `hooks_generation`, 0 for none).
  void decode_step_graph(uint64_t hooks_generation) {
    if (graph != nullptr && graph_hooks != hooks_generation) {
      cudaGraphExecDestroy(graph);
      graph = nullptr;
    }
    if (graph == nullptr) {
      graph_hooks = hooks_generation;
      cudaGraph_t captured = nullptr;
      cuda::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capturing the decode step");
      try {
        forward_pass(1);
      } catch (...) {
        cudaStreamEndCapture(stream, &captured);
        if (captured != nullptr) cudaGraphDestroy(captured);
        throw;
      }
      cuda::check(cudaStreamEndCapture(stream, &captured), "capturing the decode step");
      const cudaError_t err = cudaGraphInstantiate(&graph, captured, 0);
      cudaGraphDestroy(captured);
      cuda::check(err, "instantiating the decode graph");
    }
    cuda::check(cudaGraphLaunch(graph, stream), "launching the decode graph");
  }

  void forward(const Batch& batch, std::span<ResidualHooks* const> hooks_by_slot) {
    const int n = static_cast<int>(batch.size());
    if (n < 1 || batch.size() > opt.max_batch) throw InternalError("CudaForward::forward: batch size out of range");
    plan(batch, hooks_by_slot);
    const int rows = static_cast<int>(batch.n_logits());
    grow_logits(static_cast<uint32_t>(std::max(rows, 1)));
    upload_io(batch.tokens());
    const ResidualHooks* h = hooks.empty() ? nullptr : hooks[row_slot[0]];
    const uint64_t hooks_generation = h != nullptr ? h->generation() : 0;
    hooks_on_device = pass_hooks_on_device();
    // The captured step: one token that keeps its logits, with no hooks or hooks that run on the
    // device (the same plan every time), over weights that stay where the capture saw them. Not
    // for mixtures of experts: their routing reads the router's logits on the host (moe_block).
    if (n == 1 && rows == 1 && hooks_on_device && layers->capturable() && !hp.is_moe())
      decode_step_graph(hooks_generation);
    else forward_pass(n);
    finish_run(rows);
  }
};

CudaForward::CudaForward(const ModelWeights& weights, const CudaForwardOptions& options)
    : impl_(std::make_unique<Impl>(weights, options)) {}
CudaForward::~CudaForward() = default;

void CudaForward::forward(const Batch& batch, std::span<ResidualHooks* const> hooks) {
  impl_->forward(batch, hooks);
}

const float* CudaForward::logits() const { return impl_->host_logits(); }
void CudaForward::argmax(uint32_t n_rows, uint32_t n, int32_t* out) const { impl_->argmax(n_rows, n, out); }
uint32_t CudaForward::max_batch() const noexcept { return impl_->opt.max_batch; }

CudaMemoryUse CudaForward::memory() const {
  const auto& s = *impl_;
  CudaMemoryUse m;
  m.device = s.opt.device;
  m.device_name = s.device_name;
  m.weights = s.dw->bytes + (s.streamed ? s.streamed->device_bytes() : 0);
  m.n_layers = static_cast<uint32_t>(s.dw->layers.size());
  m.streamed_layers = s.dw->n_streamed;
  m.slots = s.streamed ? s.streamed->slots() : 0;
  m.slot_bytes = s.streamed ? s.streamed->slot_bytes() : 0;
  m.pinned_host = s.dw->pinned_bytes;
  m.pinning_seconds = s.dw->image_seconds;
  m.min_budget = s.min_budget;
  m.kv = s.opt.kv.bytes;
  m.scratch = s.scratch->bytes() + s.logits.dev.bytes() + s.opt.kv.table_bytes + s.rope_table.bytes();
  cuda::use_device(s.opt.device);
  const auto info = cuda::mem_info();
  m.free = info.free;
  m.total = info.total;
  return m;
}

}  // namespace lathe
