// Every position's logits of one token sequence, concatenated row by row ([n x n_vocab]): through
// a Session (the engine as an API user drives it), or straight through the CPU forward pass on
// loaded weights (F32 KV cache, one thread), for tests that compare a model with another path.
#pragma once

#include <span>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "forward/forward.hpp"
#include "lathe/lathe.hpp"
#include "runtime/kv_cache.hpp"
#include "weights/model_weights.hpp"

namespace lathe::test {

// Evaluates `ids` in one call (the session should be fresh or reset) and returns all their logits.
inline std::vector<float> session_logits(Session& session, std::span<const TokenId> ids) {
  session.eval(ids, true);
  std::vector<float> all;
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto row = session.logits_at(t);
    all.insert(all.end(), row.begin(), row.end());
  }
  return all;
}

inline std::vector<float> forward_logits(const ModelWeights& w, std::span<const TokenId> tokens) {
  const auto n = static_cast<uint32_t>(tokens.size());
  cpu::ThreadPool pool(1);
  KvCache kv(w.hp, n, KvFormat::F32);
  Forward forward(w, n, n);
  Batch batch;
  batch.add_chunk(0, tokens, 0, /*all_logits=*/true, true, true);
  KvCacheView* caches[] = {&kv.view()};
  std::vector<float> logits(tokens.size() * static_cast<size_t>(w.output.rows));
  forward.forward(batch, caches, {}, logits.data(), pool);
  return logits;
}

}  // namespace lathe::test
