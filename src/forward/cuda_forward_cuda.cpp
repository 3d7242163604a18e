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
#include "weights/cuda_weights.hpp"

namespace lathe {

using cuda::Epilogue;
using cuda::MatvecTarget;

struct CudaForward::Impl {
  const ModelWeights& w;
  const HParams& hp;
  CudaForwardOptions opt;
  std::shared_ptr<CudaWeights> dw;
  std::unique_ptr<ResidentLayersOf<CudaLayerWeights>> resident;
  CudaLayerSource* layers = nullptr;  // where each layer's weights come from (the weights seam)
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::Blas> blas;
  int multiprocessors = 1;
  std::string device_name;
  int64_t n_embd = 0, head_dim = 0, q_w = 0, kv_w = 0, qkv_w = 0, n_ff = 0, n_vocab = 0;

  cuda::DeviceBuffer rope_table;  // [n_ctx][rope_dim/2] (cos, sin), when it fits 256 MiB
  void** k_tab = nullptr;  // [layer][slot] (the runtime's DeviceKvCache)
  void** v_tab = nullptr;
  cuda::DeviceBuffer io;  // tokens | positions | slots, max_batch each
  cuda::PinnedBuffer io_host;
  cuda::DeviceBuffer act;
  float *x = nullptr, *xn = nullptr, *qkv = nullptr, *attn = nullptr, *gu = nullptr, *h = nullptr;
  int8_t* q8 = nullptr;
  float* ds = nullptr;
  // Decode attention rounds its output into q8/ds for an 8-bit output projection (saves a
  // quantize_q8 launch per layer); LATHE_CUDA_ATTN_Q8=0 turns that off, to measure what it brings.
  const bool attention_rounds_output = !cuda::turned_off_by_env("LATHE_CUDA_ATTN_Q8");
  // Decode attention applies the biases, Q/K norms and RoPE and stores the K/V row itself, instead
  // of a rope_kv launch before it (LATHE_CUDA_ROPE_IN_ATTENTION=0 keeps the separate launch).
  const bool rope_in_attention = !cuda::turned_off_by_env("LATHE_CUDA_ROPE_IN_ATTENTION");
  // Prefill: the RMSNorms, SwiGLU and attention write the cuBLAS products' 16-bit inputs themselves
  // (LATHE_CUDA_WRITE16=0: float32 rows, converted by a separate kernel, to measure the gain).
  const bool write16_direct = !cuda::turned_off_by_env("LATHE_CUDA_WRITE16");
  float* split_scratch = nullptr;
  cuda::GemmScratch gemm_scratch;
  cuda::DeviceBuffer logits_dev;
  cuda::PinnedBuffer logits_host;
  uint32_t logit_capacity = 0;  // rows
  uint32_t logit_rows = 0;      // rows written by the last call (on the device)
  bool logits_on_host = false;  // ... and already copied to logits_host
  cuda::DeviceBuffer argmax_dev;  // greedy ids, max_batch
  cuda::PinnedBuffer argmax_host;
  cuda::PinnedBuffer hook_rows;
  cudaGraphExec_t graph = nullptr;

  // The plan of the current pass, from its batch (host side).
  std::span<ResidualHooks* const> hooks;        // by slot; empty: none
  std::vector<uint32_t> row_slot, out_slot;     // slot of each row / of each logits row
  std::vector<uint8_t> row_ends, out_ends;      // ... and whether it ends its sequence's input
  std::vector<Batch::Run> runs;                 // the batch's runs of one sequence
  std::vector<int32_t> positions_host, slots_host;
  bool one_token_per_slot = true;               // a pure decode step (RoPE may fold into attention)
  std::vector<std::pair<int, int>> logit_stretches;  // (first row, count) of rows that keep logits

  int32_t* d_tokens() const { return io.as<int32_t>(); }
  int32_t* d_positions() const { return io.as<int32_t>() + opt.max_batch; }
  int32_t* d_slots() const { return io.as<int32_t>() + 2 * opt.max_batch; }

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
    dw = CudaWeights::get(w, opt.device);
    resident = std::make_unique<ResidentLayersOf<CudaLayerWeights>>(dw->layers);
    layers = resident.get();
    n_embd = hp.n_embd;
    q_w = int64_t{hp.n_head} * head_dim;
    kv_w = int64_t{hp.n_head_kv} * head_dim;
    qkv_w = q_w + 2 * kv_w;
    n_ff = hp.n_ff;
    n_vocab = dw->output.rows;

    cuda::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating a CUDA stream");
    blas = std::make_unique<cuda::Blas>(stream);
    k_tab = opt.kv.k_tables;
    v_tab = opt.kv.v_tables;
    allocate_rope_table();
    allocate_scratch();
    grow_logits(1);
  }

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (graph != nullptr) cudaGraphExecDestroy(graph);
    blas.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // The RoPE angles of every position, computed once as the CPU computes them (double angles).
  void allocate_rope_table() {
    const size_t half = static_cast<size_t>(w.rope.rope_dim / 2);
    const size_t floats = size_t{opt.kv.n_ctx} * half * 2;
    if (half == 0 || floats > (64u << 20)) return;  // long contexts: the kernel computes them
    std::vector<float> table(floats);
    for (uint32_t pos = 0; pos < opt.kv.n_ctx; ++pos) {
      const double position = static_cast<double>(pos) * w.rope.position_scale;
      for (size_t i = 0; i < half; ++i) {
        const double theta = position * w.rope.inv_freq[i];
        table[(pos * half + i) * 2] = static_cast<float>(std::cos(theta));
        table[(pos * half + i) * 2 + 1] = static_cast<float>(std::sin(theta));
      }
    }
    rope_table = cuda::DeviceBuffer(floats * sizeof(float), "the RoPE table");
    cuda::check(cudaMemcpy(rope_table.data(), table.data(), floats * sizeof(float), cudaMemcpyHostToDevice),
                "copying the RoPE table");
  }

  // Token-splits the decode attention may need at once: n tokens get n * splits <= max(n,
  // 2 * multiprocessors / n_head_kv) (see decode_splits in attention_decode.cu).
  size_t split_slots() const {
    return std::max<size_t>(opt.max_batch, 2 * static_cast<size_t>(multiprocessors) / hp.n_head_kv + 1);
  }

  void allocate_scratch() {
    const size_t B = opt.max_batch;
    const int64_t widest_input = std::max({n_embd, q_w, n_ff});
    struct Part {
      size_t bytes;
      void** where;
    };
    const bool use_gemm = B > cuda::kMatvecMaxTokens;
    // LATHE_CUDA_BF16_GEMM=f16: BF16 weights meet half activations in prefill (see GemmScratch).
    const char* bf16_mode = std::getenv("LATHE_CUDA_BF16_GEMM");
    gemm_scratch.bf16_as_f16 = bf16_mode != nullptr && std::string(bf16_mode) == "f16";
    const size_t w16_elems =
        use_gemm && (dw->any_quantized || (dw->any_bf16 && gemm_scratch.bf16_as_f16))
            ? static_cast<size_t>(std::min<int64_t>(dw->max_rows, std::max<int64_t>(1, (32ll << 20) / dw->max_cols))) *
                  dw->max_cols
            : 0;
    std::vector<Part> parts = {
        {B * n_embd * 4, reinterpret_cast<void**>(&x)},
        {B * n_embd * 4, reinterpret_cast<void**>(&xn)},
        {B * qkv_w * 4, reinterpret_cast<void**>(&qkv)},
        {B * q_w * 4, reinterpret_cast<void**>(&attn)},
        {use_gemm ? B * 2 * n_ff * 4 : 0, reinterpret_cast<void**>(&gu)},
        {B * std::max(n_ff, n_embd) * 4, reinterpret_cast<void**>(&h)},  // also gathers logit rows
        {B * widest_input, reinterpret_cast<void**>(&q8)},
        {B * (widest_input / 32) * 2 * 4, reinterpret_cast<void**>(&ds)},
        {cuda::split_scratch_floats(static_cast<int>(split_slots()), hp.n_head, static_cast<int>(head_dim), 1) * 4,
         reinterpret_cast<void**>(&split_scratch)},
        {use_gemm ? B * dw->max_cols * 2 : 0, &gemm_scratch.act16},
        {w16_elems * 2, &gemm_scratch.w16},
    };
    size_t total = 0;
    for (auto& p : parts) total += (p.bytes + 255) / 256 * 256;
    act = cuda::DeviceBuffer(total, fmt::format("activations for {} tokens per step", B));
    auto* base = act.as<uint8_t>();
    size_t offset = 0;
    for (auto& p : parts) {
      if (p.where != nullptr) *p.where = p.bytes ? base + offset : nullptr;
      offset += (p.bytes + 255) / 256 * 256;
    }
    gemm_scratch.act16_elems = use_gemm ? B * dw->max_cols : 0;
    gemm_scratch.w16_elems = w16_elems;
    io = cuda::DeviceBuffer(3 * B * sizeof(int32_t), "token ids and positions");
    io_host = cuda::PinnedBuffer(3 * B * sizeof(int32_t), "token ids and positions");
    hook_rows = cuda::PinnedBuffer(B * n_embd * sizeof(float), "hook rows");
    argmax_dev = cuda::DeviceBuffer(B * sizeof(int32_t), "greedy token ids");
    argmax_host = cuda::PinnedBuffer(B * sizeof(int32_t), "greedy token ids");
  }

  void grow_logits(uint32_t rows) {
    if (rows <= logit_capacity) return;
    if (graph != nullptr) {  // the captured step writes the old buffer
      cudaGraphExecDestroy(graph);
      graph = nullptr;
    }
    logits_dev = cuda::DeviceBuffer();
    logits_host = cuda::PinnedBuffer();
    logits_dev = cuda::DeviceBuffer(size_t{rows} * n_vocab * 4, fmt::format("logits for {} tokens", rows));
    logits_host = cuda::PinnedBuffer(size_t{rows} * n_vocab * 4, fmt::format("logits for {} tokens", rows));
    logit_capacity = rows;
  }

  // ---- building blocks -------------------------------------------------------------------

  // Runs each sequence's hooks of `site` on its device rows, through host memory (hooks are host
  // code). Row r of `rows` belongs to slot slots[r].
  void hook(HookPoint point, uint32_t layer, float* rows, const std::vector<uint32_t>& slots,
            const std::vector<uint8_t>& ends) {
    if (hooks.empty()) return;
    const HookSite site{point, layer};
    bool any = false;
    for (uint32_t s : slots) any = any || (hooks[s] != nullptr && hooks[s]->has(site));
    if (!any) return;
    const size_t bytes = slots.size() * n_embd * 4;
    cuda::check(cudaMemcpyAsync(hook_rows.data(), rows, bytes, cudaMemcpyDeviceToHost, stream), "reading hook rows");
    cuda::check(cudaStreamSynchronize(stream), "reading hook rows");
    float* host = hook_rows.as<float>();
    for (size_t begin = 0; begin < slots.size();) {
      size_t end = begin + 1;
      while (end < slots.size() && slots[end] == slots[begin]) ++end;
      ResidualHooks* h = hooks[slots[begin]];
      if (h != nullptr && h->has(site))
        h->apply(site, host + begin * n_embd, static_cast<int64_t>(end - begin), n_embd, ends[end - 1] != 0);
      begin = end;
    }
    cuda::check(cudaMemcpyAsync(rows, hook_rows.data(), bytes, cudaMemcpyHostToDevice, stream), "writing hook rows");
  }

  // The products' 16-bit input scratch, for a kernel that writes n rows of `cols` there itself.
  void* act16_for(int n, int64_t cols) const {
    if (gemm_scratch.act16_elems < static_cast<size_t>(n) * static_cast<size_t>(cols))
      throw InternalError(fmt::format("CudaForward: {} x {} activations exceed the 16-bit input scratch ({} values)", n,
                                      cols, gemm_scratch.act16_elems));
    return gemm_scratch.act16;
  }

  // The 16-bit type a kernel writes w's cuBLAS input in itself for n tokens, or None where w's
  // product reads float32 rows: mat-vecs (up to 8 tokens), float32 weights, LATHE_CUDA_WRITE16=0.
  cuda::Dtype16 written_type16(const cuda::DeviceMatrix& w, int n) const {
    if (n <= cuda::kMatvecMaxTokens || !write16_direct) return cuda::Dtype16::None;
    return cuda::gemm_activation_type(w, gemm_scratch);
  }

  // The 16-bit type every target's cuBLAS product wants its activations in, or None when they
  // differ or one wants float32.
  cuda::Dtype16 shared_type16(std::initializer_list<MatvecTarget> targets) const {
    const cuda::Dtype16 type = cuda::gemm_activation_type(targets.begin()->a, gemm_scratch);
    for (const auto& t : targets)
      if (cuda::gemm_activation_type(t.a, gemm_scratch) != type ||
          (t.b.qs != nullptr && cuda::gemm_activation_type(t.b, gemm_scratch) != type))
        return cuda::Dtype16::None;
    return type;
  }

  // y (per target) = W x for n tokens: mat-vec kernels up to 8 tokens, cuBLAS above. With
  // `norm`, x is first RMS-normalized with those weights: fused into the mat-vec and the 8-bit
  // rounding for up to 8 tokens (two launches fewer per layer in decode); above, the RMSNorm
  // writes the 16-bit input of the products itself (or float32 rows into xn, then converted).
  // `q8_ready`: the kernel that wrote xin also wrote its 8-bit rows into q8/ds (decode attention).
  // `swiglu_out16` (SwiGLU above 8 tokens): write h in that 16-bit type into the products' input
  // scratch instead of t.y, and return it as the input of the next product (the down projection).
  cuda::GemmInput linear(std::initializer_list<MatvecTarget> targets, const float* xin, int64_t ldx, int n,
                         Epilogue ep, const float* norm = nullptr, bool q8_ready = false,
                         cuda::Dtype16 swiglu_out16 = cuda::Dtype16::None) {
    const int64_t cols = targets.begin()->a.cols;
    cuda::GemmInput in;  // the products' input, once prepared
    if (norm != nullptr && n > cuda::kMatvecMaxTokens) {
      const cuda::Dtype16 type16 = write16_direct ? shared_type16(targets) : cuda::Dtype16::None;
      if (type16 != cuda::Dtype16::None) {
        cuda::rms_norm_16(xin, ldx, norm, n, static_cast<int>(cols), hp.rms_eps, act16_for(n, cols), type16, stream);
        in = cuda::gemm_input_written(n, cols, type16);
      } else {
        cuda::rms_norm(xin, ldx, norm, n, static_cast<int>(cols), hp.rms_eps, xn, n_embd, stream);
        xin = xn;
        ldx = n_embd;
      }
      norm = nullptr;
    }
    if (n <= cuda::kMatvecMaxTokens) {
      cuda::MatvecInput mv;
      mv.x = xin;
      mv.ldx = ldx;
      mv.norm = norm;
      mv.eps = hp.rms_eps;
      bool same_type = true, q8_needed = false;
      for (const auto& t : targets) {
        same_type = same_type && t.a.type == targets.begin()->a.type;
        q8_needed = q8_needed || cuda::matvec_reads_q8(t.a.type);
      }
      if (q8_needed) {
        if (!q8_ready) cuda::quantize_q8(xin, ldx, n, static_cast<int>(cols), q8, ds, stream, norm, hp.rms_eps);
        mv.q8 = q8;
        mv.ds = ds;
        mv.ld_q8 = cols;
        mv.ld_ds = cols / 16;
      }
      if (same_type) {
        cuda::matvec(targets.begin(), static_cast<int>(targets.size()), mv, n, ep, stream);
      } else {
        for (const auto& t : targets) cuda::matvec(&t, 1, mv, n, ep, stream);
      }
      return {};
    }
    // The matrices reading xin share its 16-bit conversion when they want the same one (written
    // by the RMSNorm above: the same for all of them).
    const auto input_for = [&](const cuda::DeviceMatrix& w) {
      if (in.n_tokens > 0 && in.x == nullptr) return in;
      in = cuda::gemm_input(w, xin, ldx, n, gemm_scratch, stream, in.x != nullptr ? &in : nullptr);
      return in;
    };
    for (const auto& t : targets) {
      if (ep == Epilogue::SwiGLU) {
        cuda::gemm(*blas, t.a, input_for(t.a), gu, 2 * n_ff, 0.0f, gemm_scratch, stream);
        cuda::gemm(*blas, t.b, input_for(t.b), gu + n_ff, 2 * n_ff, 0.0f, gemm_scratch, stream);
        if (swiglu_out16 != cuda::Dtype16::None && targets.size() == 1) {
          // The products above have read act16 (stream order): h may overwrite it.
          cuda::swiglu_16(gu, n, static_cast<int>(n_ff), act16_for(n, n_ff), swiglu_out16, stream);
          return cuda::gemm_input_written(n, n_ff, swiglu_out16);
        }
        cuda::swiglu(gu, n, static_cast<int>(n_ff), t.y, stream);
      } else {
        cuda::gemm(*blas, t.a, input_for(t.a), t.y, t.ldy, ep == Epilogue::Add ? 1.0f : 0.0f, gemm_scratch, stream);
      }
    }
    return {};
  }

  // Attention over rows row0 .. row0 + n - 1 of the pass.
  cuda::AttentionArgs attention_args(uint32_t layer, int row0, int n) const {
    cuda::AttentionArgs a;
    a.q = qkv + int64_t{row0} * qkv_w;
    a.ldq = qkv_w;
    a.out = attn + int64_t{row0} * q_w;
    a.ldo = q_w;
    a.n_tokens = n;
    a.n_head = static_cast<int>(hp.n_head);
    a.n_head_kv = static_cast<int>(hp.n_head_kv);
    a.head_dim = static_cast<int>(head_dim);
    a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    a.positions = d_positions() + row0;
    a.slots = d_slots() + row0;
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
    if (round_q8) a.out_q8 = {q8, ds, q_w, q_w / 16};
    const int n = a.n_tokens;
    const int splits =
        cuda::decode_splits(static_cast<int>(opt.kv.n_ctx), n, static_cast<int>(hp.n_head_kv), multiprocessors);
    const int split_len = static_cast<int>((opt.kv.n_ctx + splits - 1) / splits);
    const int per_block = cuda::decode_heads_per_block(splits, n, static_cast<int>(hp.n_head_kv),
                                                       static_cast<int>(hp.n_head / hp.n_head_kv), multiprocessors);
    cuda::attention_decode(a, splits, split_len, split_scratch, stream, per_block);
  }

  void attention_block(const CudaLayerWeights& L, uint32_t il, int n) {
    if (L.fused_qkv()) {
      linear({{L.wqkv, {}, qkv, qkv_w}}, x, n_embd, n, Epilogue::Store, L.attn_norm);
    } else {
      linear({{L.wq, {}, qkv, qkv_w}, {L.wk, {}, qkv + q_w, qkv_w}, {L.wv, {}, qkv + q_w + kv_w, qkv_w}}, x, n_embd, n,
             Epilogue::Store, L.attn_norm);
    }
    cuda::RopeKvArgs r;
    r.qkv = qkv;
    r.ld = qkv_w;
    r.n_tokens = n;
    r.n_head = static_cast<int>(hp.n_head);
    r.n_head_kv = static_cast<int>(hp.n_head_kv);
    r.head_dim = static_cast<int>(head_dim);
    r.bq = L.bq;
    r.bk = L.bk;
    r.bv = L.bv;
    r.q_norm = L.q_norm;
    r.k_norm = L.k_norm;
    r.eps = hp.rms_eps;
    r.inv_freq = dw->inv_freq;
    r.rope_dim = w.rope.rope_dim;
    r.neox = w.rope.order == cpu::RopeOrder::NeoX;
    r.position_scale = w.rope.position_scale;
    r.cos_sin = rope_table.as<float>();
    r.positions = d_positions();
    r.slots = d_slots();
    r.k_cache = k_tab + size_t{il} * opt.kv.n_slots;
    r.v_cache = v_tab + size_t{il} * opt.kv.n_slots;
    r.kv_format = opt.kv.format;
    r.n_ctx = static_cast<int>(opt.kv.n_ctx);
    // A pure decode step (one token per slot): decode attention does rope_kv's work itself, one
    // launch fewer per layer. Otherwise every row's K/V is stored first, so that a run of several
    // tokens of one sequence sees its own earlier rows.
    const bool all_decode = runs.size() == static_cast<size_t>(n);  // every run is one token
    const bool fold_rope = all_decode && one_token_per_slot && rope_in_attention;
    if (!fold_rope) cuda::rope_kv(r, stream);

    if (all_decode) {
      // An 8-bit output projection reads the attention output rounded by the attention kernel.
      const bool attn_q8_ready = attention_rounds_output && n <= cuda::kMatvecMaxTokens &&
                                 cuda::matvec_reads_q8(L.wo.type) && head_dim % 32 == 0;
      attention_decode_rows(attention_args(il, 0, n), fold_rope ? &r : nullptr, attn_q8_ready);
      linear({{L.wo, {}, x, n_embd}}, attn, q_w, n, Epilogue::Add, nullptr, attn_q8_ready);
      return;
    }
    if (runs.size() == 1) {
      // One sequence's chunk: above 8 tokens the tensor-core kernel writes the output
      // projection's 16-bit cuBLAS input itself (no float32 rows to convert).
      cuda::AttentionArgs a = attention_args(il, 0, n);
      const cuda::Dtype16 out16 =
          cuda::attention_prefill_uses_tensor_cores(a) ? written_type16(L.wo, n) : cuda::Dtype16::None;
      if (out16 != cuda::Dtype16::None) {
        a.out16 = act16_for(n, q_w);
        a.out16_type = out16;
      }
      cuda::attention_prefill(a, static_cast<int>(runs[0].first_pos), stream);
      if (out16 != cuda::Dtype16::None) {
        cuda::gemm(*blas, L.wo, cuda::gemm_input_written(n, q_w, out16), x, n_embd, 1.0f, gemm_scratch, stream);
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
    linear({{L.wo, {}, x, n_embd}}, attn, q_w, n, Epilogue::Add);
  }

  void mlp_block(const CudaLayerWeights& L, int n) {
    const cuda::DeviceMatrix gate = L.fused_gate_up() ? L.w_gate_up.row_slice(0, n_ff) : L.w_gate;
    const cuda::DeviceMatrix up = L.fused_gate_up() ? L.w_gate_up.row_slice(n_ff, n_ff) : L.w_up;
    // Above 8 tokens SwiGLU writes h straight in the 16-bit type the down projection reads.
    const cuda::GemmInput h16 =
        linear({{gate, up, h, n_ff}}, x, n_embd, n, Epilogue::SwiGLU, L.ffn_norm, false, written_type16(L.w_down, n));
    if (h16.n_tokens > 0) cuda::gemm(*blas, L.w_down, h16, x, n_embd, 1.0f, gemm_scratch, stream);
    else linear({{L.w_down, {}, x, n_embd}}, h, n_ff, n, Epilogue::Add);
  }

  // The whole pass over the n rows of the current plan, whose ids, positions and slots are
  // already on the device; logits for the rows in logit_stretches.
  void forward_pass(int n) {
    cuda::embed_rows(dw->token_embd, d_tokens(), n, x, stream);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
      const CudaLayerWeights& L = layers->acquire(il);
      hook(HookPoint::ResidPre, il, x, row_slot, row_ends);
      attention_block(L, il, n);
      hook(HookPoint::ResidMid, il, x, row_slot, row_ends);
      mlp_block(L, n);
      hook(HookPoint::ResidPost, il, x, row_slot, row_ends);
      layers->release(il);
    }
    const int rows = static_cast<int>(out_slot.size());
    if (rows == 0) return;
    // The rows that keep logits: in place when they are one stretch, else gathered into h (free
    // at this point of the pass) stretch by stretch.
    const float* last = x + int64_t{logit_stretches[0].first} * n_embd;
    if (logit_stretches.size() > 1) {
      int64_t at = 0;
      for (const auto& [first, count] : logit_stretches) {
        cuda::check(cudaMemcpyAsync(h + at * n_embd, x + int64_t{first} * n_embd, size_t(count) * n_embd * 4,
                                    cudaMemcpyDeviceToDevice, stream),
                    "gathering the rows that keep logits");
        at += count;
      }
      last = h;
    }
    const MatvecTarget head{dw->output, {}, logits_dev.as<float>(), n_vocab};
    const bool final_hooked = std::any_of(out_slot.begin(), out_slot.end(), [&](uint32_t s) {
      return !hooks.empty() && hooks[s] != nullptr && hooks[s]->has({HookPoint::FinalNorm, 0});
    });
    if (final_hooked) {  // the hook sees the normalized rows
      cuda::rms_norm(last, n_embd, dw->output_norm, rows, static_cast<int>(n_embd), hp.rms_eps, xn, n_embd, stream);
      hook(HookPoint::FinalNorm, 0, xn, out_slot, out_ends);
      linear({head}, xn, n_embd, rows, Epilogue::Store);
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
    auto* host = io_host.as<int32_t>();
    std::memcpy(host, tokens.data(), n * 4);
    std::memcpy(host + B, positions_host.data(), n * 4);
    std::memcpy(host + 2 * B, slots_host.data(), n * 4);
    cuda::check(cudaMemcpyAsync(io.data(), host, 3 * B * 4, cudaMemcpyHostToDevice, stream), "copying token ids");
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
      cuda::check(cudaMemcpyAsync(logits_host.data(), logits_dev.data(), size_t{logit_rows} * n_vocab * 4,
                                  cudaMemcpyDeviceToHost, stream),
                  "copying logits");
      cuda::check(cudaStreamSynchronize(stream), "copying logits");
      logits_on_host = true;
    }
    return logits_host.as<float>();
  }

  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) {
    if (n_rows > logit_rows || n > n_vocab || n == 0)
      throw InternalError(fmt::format("CudaForward::argmax: {} rows of {} logits asked, the last call left {} of {}",
                                      n_rows, n, logit_rows, n_vocab));
    cuda::argmax_rows(logits_dev.as<float>(), static_cast<int>(n_rows), static_cast<int>(n), n_vocab,
                      argmax_dev.as<int32_t>(), stream);
    cuda::check(cudaMemcpyAsync(argmax_host.data(), argmax_dev.data(), size_t{n_rows} * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream),
                "copying greedy token ids");
    cuda::check(cudaStreamSynchronize(stream), "picking greedy tokens");
    std::memcpy(out, argmax_host.data(), size_t{n_rows} * sizeof(int32_t));
  }

  // One token without hooks: replay the captured step (capturing it on first use).
  void decode_step_graph() {
    if (graph == nullptr) {
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
    const bool hooked =
        std::any_of(hooks.begin(), hooks.end(), [](const ResidualHooks* h) { return h != nullptr && !h->empty(); });
    // The captured step: one token that keeps its logits, no hooks (the same plan every time),
    // over weights that stay where the capture saw them.
    if (n == 1 && rows == 1 && !hooked && layers->resident()) decode_step_graph();
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
  m.weights = s.dw->bytes;
  m.kv = s.opt.kv.bytes;
  m.scratch = s.act.bytes() + s.logits_dev.bytes() + s.io.bytes() + s.opt.kv.table_bytes + s.rope_table.bytes() +
              s.argmax_dev.bytes();
  cuda::use_device(s.opt.device);
  const auto info = cuda::mem_info();
  m.free = info.free;
  m.total = info.total;
  return m;
}

}  // namespace lathe
