#include "edit/control_vector_train.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

// Power iteration stops when the unit vector moves less than this (llama.cpp's PCA uses 1e-7 in
// float32) or after kMaxIterations.
constexpr double kTolerance = 1e-12;
constexpr int kMaxIterations = 5000;

double norm(std::span<const double> v) {
  double sum = 0;
  for (double x : v) sum += x * x;
  return std::sqrt(sum);
}

// Top eigenvector of the symmetric positive semi-definite k x k matrix `s` (row-major).
std::vector<double> top_eigenvector(const std::vector<double>& s, size_t k) {
  std::mt19937_64 rng(0x5eed);  // a fixed start: the same input always gives the same output
  std::uniform_real_distribution<double> uniform(0.5, 1.5);
  std::vector<double> v(k), next(k);
  for (double& x : v) x = uniform(rng);
  const double start_norm = norm(v);
  for (double& x : v) x /= start_norm;
  for (int iteration = 0; iteration < kMaxIterations; ++iteration) {
    for (size_t i = 0; i < k; ++i) {
      double sum = 0;
      for (size_t j = 0; j < k; ++j) sum += s[i * k + j] * v[j];
      next[i] = sum;
    }
    const double length = norm(next);
    if (!(length > 0)) break;  // s v = 0: v lies in the null space; the caller checks for all-zero input
    double moved = 0;
    for (size_t i = 0; i < k; ++i) {
      next[i] /= length;
      moved += (next[i] - v[i]) * (next[i] - v[i]);
    }
    v.swap(next);
    if (std::sqrt(moved) < kTolerance) break;
  }
  return v;
}

std::vector<float> to_unit_float(std::span<const double> v, uint32_t layer) {
  const double length = norm(v);
  if (!(length > 0) || !std::isfinite(length))
    throw InvalidArgumentError(fmt::format("the positive and negative prompts give the same activations at the output "
                                           "of block {}, so there is no direction; use prompts that differ",
                                           layer));
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i] / length);
  return out;
}

// The last-token rows at blocks.{L}.resid_post of one prompt, for every layer of `layers`.
class LayerReader {
 public:
  LayerReader(Session& session, const std::vector<uint32_t>& layers) : session_(session) {
    hooks_ = std::make_shared<ResidualHooks>();
    for (uint32_t layer : layers) ids_.push_back(hooks_->capture({HookPoint::ResidPost, layer}, CaptureRows::Last));
    session_.set_hooks(hooks_);
  }
  // Evaluates `tokens` on an empty context; row(i) is then layer i's capture.
  void run(const std::vector<TokenId>& tokens) {
    hooks_->reset_captures();
    session_.reset();
    session_.eval(tokens);
  }
  const std::vector<double>& row(size_t i, uint32_t n_embd) const {
    const ResidualHooks::Capture& capture = hooks_->captured(ids_[i]);
    if (capture.count != 1 || capture.sum.size() != n_embd)
      throw InternalError(fmt::format("cvector: the capture at {} holds {} rows of {} values, expected 1 row of {}",
                                      capture.site.name(), capture.count, capture.sum.size(), n_embd));
    return capture.sum;
  }

 private:
  Session& session_;
  std::shared_ptr<ResidualHooks> hooks_;
  std::vector<size_t> ids_;
};

}  // namespace

DirectionMethod parse_direction_method(std::string_view name) {
  if (name == "mean") return DirectionMethod::Mean;
  if (name == "pca") return DirectionMethod::Pca;
  throw InvalidArgumentError(fmt::format("--method '{}' is not a method; use mean or pca", name));
}

std::vector<double> principal_direction(std::span<const double> differences, size_t n_rows, size_t n_embd,
                                        std::span<const double> reference) {
  if (n_rows == 0 || n_embd == 0 || differences.size() != n_rows * n_embd)
    throw InvalidArgumentError(fmt::format("principal_direction: {} values are not {} rows of {}", differences.size(),
                                           n_rows, n_embd));
  if (!(norm(differences) > 0)) throw InvalidArgumentError("principal_direction: every difference is zero");
  const auto at = [&](size_t r, size_t c) { return differences[r * n_embd + c]; };
  std::vector<double> direction(n_embd, 0.0);
  if (n_rows <= n_embd) {
    // D^T D and the Gram matrix D D^T share their non-zero eigenvalues; for an eigenvector u of
    // the (smaller) Gram matrix, D^T u is the matching eigenvector of D^T D.
    std::vector<double> gram(n_rows * n_rows);
    for (size_t i = 0; i < n_rows; ++i)
      for (size_t j = 0; j <= i; ++j) {
        double sum = 0;
        for (size_t c = 0; c < n_embd; ++c) sum += at(i, c) * at(j, c);
        gram[i * n_rows + j] = gram[j * n_rows + i] = sum;
      }
    const std::vector<double> u = top_eigenvector(gram, n_rows);
    for (size_t r = 0; r < n_rows; ++r)
      for (size_t c = 0; c < n_embd; ++c) direction[c] += u[r] * at(r, c);
  } else {
    std::vector<double> square(n_embd * n_embd, 0.0);
    for (size_t r = 0; r < n_rows; ++r)
      for (size_t i = 0; i < n_embd; ++i)
        for (size_t j = 0; j <= i; ++j) square[i * n_embd + j] += at(r, i) * at(r, j);
    for (size_t i = 0; i < n_embd; ++i)
      for (size_t j = 0; j < i; ++j) square[j * n_embd + i] = square[i * n_embd + j];
    direction = top_eigenvector(square, n_embd);
  }
  const double length = norm(direction);
  double alignment = 0;
  for (size_t c = 0; c < n_embd && c < reference.size(); ++c) alignment += direction[c] * reference[c];
  const double sign = alignment < 0 ? -1.0 : 1.0;
  for (double& x : direction) x = sign * x / length;
  return direction;
}

ControlVector train_control_vector(const std::shared_ptr<const Model>& model, const std::vector<std::string>& positive,
                                   const std::vector<std::string>& negative, const ControlVectorTraining& options) {
  if (positive.empty()) throw InvalidArgumentError("cvector: there are no prompt pairs");
  if (positive.size() != negative.size())
    throw InvalidArgumentError(fmt::format("cvector: {} positive prompts but {} negative ones; the prompts are used "
                                           "in pairs, so give as many of each (or use --limit)",
                                           positive.size(), negative.size()));
  const ModelSummary& summary = model->summary();
  const uint32_t n_layer = summary.n_layer, n_embd = summary.n_embd;
  // direction.0 does not exist in the format, so block 0's output is never measured.
  const auto [first, last] = options.layers.value_or(std::pair<uint32_t, uint32_t>{1, n_layer - 1});
  // A given range is used as given: layers outside 1..n_layer-1 are refused, not skipped.
  if (options.layers && (first < 1 || last >= n_layer))
    throw InvalidArgumentError(fmt::format("cvector: --layers {}-{} goes outside the steerable layers 1..{} of {} (it "
                                           "has blocks 0..{}; direction.0 does not exist in the format)",
                                           first, last, n_layer - 1, summary.path, n_layer - 1));
  std::vector<uint32_t> layers;
  for (uint32_t layer = std::max(first, 1u); layer <= last && layer < n_layer; ++layer) layers.push_back(layer);
  if (layers.empty())
    throw InvalidArgumentError(fmt::format("cvector: --layers {}-{} hold no steerable layer; {} has blocks 0..{} and "
                                           "directions exist for 1..{}",
                                           first, last, summary.path, n_layer - 1, n_layer - 1));

  // Tokenize everything first: errors (no template, over-long prompts) surface before any work,
  // and the context is sized to the longest prompt.
  std::vector<std::vector<TokenId>> pos_tokens, neg_tokens;
  size_t longest = 1;
  for (size_t i = 0; i < positive.size(); ++i) {
    pos_tokens.push_back(chat_prompt_tokens(*model, positive[i], options.chat));
    neg_tokens.push_back(chat_prompt_tokens(*model, negative[i], options.chat));
    for (const auto* tokens : {&pos_tokens.back(), &neg_tokens.back()}) {
      if (tokens->empty())
        throw InvalidArgumentError(fmt::format("cvector: prompt pair {} gives no tokens; remove the empty prompt", i + 1));
      longest = std::max(longest, tokens->size());
    }
  }
  if (summary.n_ctx_train > 0 && longest > summary.n_ctx_train)
    throw InvalidArgumentError(fmt::format("cvector: a prompt has {} tokens, more than the model's context of {}; "
                                           "shorten it",
                                           longest, summary.n_ctx_train));
  SessionOptions session_options;
  session_options.n_ctx = static_cast<uint32_t>(longest);
  session_options.compute = options.compute;
  Session session(model, session_options);
  LayerReader reader(session, layers);

  const size_t n_pairs = positive.size();
  std::vector<std::vector<double>> mean_sum(layers.size(), std::vector<double>(n_embd, 0.0));
  // PCA needs every pair's difference: n_pairs x n_embd per layer.
  std::vector<std::vector<double>> differences(options.method == DirectionMethod::Pca ? layers.size() : 0);
  std::vector<std::vector<double>> pos_rows(layers.size());
  for (size_t pair = 0; pair < n_pairs; ++pair) {
    reader.run(pos_tokens[pair]);
    for (size_t l = 0; l < layers.size(); ++l) pos_rows[l] = reader.row(l, n_embd);
    reader.run(neg_tokens[pair]);
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::vector<double>& neg_row = reader.row(l, n_embd);
      for (size_t c = 0; c < n_embd; ++c) {
        const double diff = pos_rows[l][c] - neg_row[c];
        mean_sum[l][c] += diff;
        if (!differences.empty()) differences[l].push_back(diff);
      }
    }
    if (options.progress) options.progress(pair + 1, n_pairs);
  }

  ControlVector cv;
  cv.n_embd = n_embd;
  cv.model_hint = summary.architecture;
  for (size_t l = 0; l < layers.size(); ++l) {
    std::vector<double> mean = mean_sum[l];
    for (double& x : mean) x /= static_cast<double>(n_pairs);
    if (options.method == DirectionMethod::Mean) {
      cv.directions[layers[l]] = to_unit_float(mean, layers[l]);
    } else {
      if (!(norm(differences[l]) > 0)) to_unit_float(differences[l], layers[l]);  // throws: no direction
      cv.directions[layers[l]] = to_unit_float(principal_direction(differences[l], n_pairs, n_embd, mean), layers[l]);
    }
  }
  return cv;
}

}  // namespace lathe::edit
