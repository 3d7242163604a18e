#include <atomic>
#include <charconv>
#include <cmath>
#include <fmt/format.h>

#include "lathe/error.hpp"
#include "lathe/hooks.hpp"

namespace lathe {
namespace {

constexpr std::string_view kPointNames[] = {"resid_pre", "resid_mid", "resid_post"};

[[noreturn]] void bad_site(std::string_view name) {
  throw InvalidArgumentError(fmt::format("unknown hook point '{}': use blocks.<layer>.resid_pre, "
                                         "blocks.<layer>.resid_mid, blocks.<layer>.resid_post or final_norm",
                                         name));
}

// Source of ResidualHooks::generation(): one counter for the process, so that two sets never
// share a generation (0 is the empty set's).
std::atomic<uint64_t> g_last_generation{0};

}  // namespace

void ResidualHooks::changed() noexcept { generation_ = ops_.empty() ? 0 : ++g_last_generation; }

HookSite HookSite::parse(std::string_view name) {
  if (name == "final_norm") return {HookPoint::FinalNorm, 0};
  constexpr std::string_view prefix = "blocks.";
  if (!name.starts_with(prefix)) bad_site(name);
  const auto rest = name.substr(prefix.size());
  const auto dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0) bad_site(name);
  uint32_t layer = 0;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, layer);
  if (ec != std::errc() || end != rest.data() + dot) bad_site(name);
  const auto point = rest.substr(dot + 1);
  for (size_t i = 0; i < std::size(kPointNames); ++i)
    if (point == kPointNames[i]) return {static_cast<HookPoint>(i), layer};
  bad_site(name);
}

std::string HookSite::name() const {
  if (point == HookPoint::FinalNorm) return "final_norm";
  return fmt::format("blocks.{}.{}", layer, kPointNames[static_cast<size_t>(point)]);
}

bool HookSite::operator==(const HookSite& other) const noexcept {
  return point == other.point && (point == HookPoint::FinalNorm || layer == other.layer);
}

void ResidualHooks::add(HookSite site, std::vector<float> vector, float scale) {
  if (!std::isfinite(scale)) throw InvalidArgumentError(fmt::format("hook {}: scale must be finite", site.name()));
  for (float v : vector)
    if (!std::isfinite(v))
      throw InvalidArgumentError(fmt::format("hook {}: the vector has a non-finite element", site.name()));
  ops_.push_back({site, Kind::Add, std::move(vector), scale, 0, nullptr});
  changed();
}

void ResidualHooks::project_out(HookSite site, std::vector<float> direction) {
  double norm2 = 0;
  for (float v : direction) norm2 += double(v) * v;
  if (!(norm2 > 0) || !std::isfinite(norm2))
    throw InvalidArgumentError(fmt::format("hook {}: the direction to project out is zero or not finite", site.name()));
  const double inv = 1.0 / std::sqrt(norm2);
  for (float& v : direction) v = static_cast<float>(v * inv);
  ops_.push_back({site, Kind::ProjectOut, std::move(direction), 1.0f, 0, nullptr});
  changed();
}

void ResidualHooks::transform(HookSite site, std::shared_ptr<RowTransform> transform) {
  if (!transform) throw InvalidArgumentError(fmt::format("hook {}: the row transform is null", site.name()));
  ops_.push_back({site, Kind::Transform, {}, 1.0f, 0, std::move(transform)});
  changed();
}

size_t ResidualHooks::capture(HookSite site, CaptureRows rows) {
  captures_.push_back({site, rows, {}, 0});
  ops_.push_back({site, Kind::Capture, {}, 1.0f, captures_.size() - 1, nullptr});
  changed();
  return captures_.size() - 1;
}

std::vector<double> ResidualHooks::Capture::mean() const {
  if (count == 0)
    throw InvalidArgumentError(fmt::format("capture at {} holds no rows yet: evaluate some tokens first", site.name()));
  std::vector<double> m(sum);
  for (double& v : m) v /= static_cast<double>(count);
  return m;
}

const ResidualHooks::Capture& ResidualHooks::captured(size_t id) const {
  if (id >= captures_.size())
    throw InvalidArgumentError(fmt::format("capture id {} does not exist ({} captures)", id, captures_.size()));
  return captures_[id];
}

void ResidualHooks::reset_captures() {
  for (auto& c : captures_) {
    std::fill(c.sum.begin(), c.sum.end(), 0.0);
    c.count = 0;
  }
}

void ResidualHooks::clear() {
  ops_.clear();
  captures_.clear();
  changed();
}

void ResidualHooks::validate(uint32_t n_layer, uint32_t n_embd) const {
  for (const auto& op : ops_) {
    if (op.site.point != HookPoint::FinalNorm && op.site.layer >= n_layer)
      throw InvalidArgumentError(fmt::format("hook {}: the model has layers 0..{}", op.site.name(), n_layer - 1));
    if (op.kind == Kind::Transform) {
      if (op.transform->width() != static_cast<int64_t>(n_embd))
        throw InvalidArgumentError(fmt::format("hook {}: {} works on rows of {} elements but the model's hidden size "
                                               "is {}",
                                               op.site.name(), op.transform->describe(), op.transform->width(), n_embd));
      continue;
    }
    if (op.kind != Kind::Capture && op.vector.size() != n_embd)
      throw InvalidArgumentError(fmt::format("hook {}: the vector has {} elements but the model's hidden size is {}",
                                             op.site.name(), op.vector.size(), n_embd));
  }
}

bool ResidualHooks::has(HookSite site) const noexcept {
  for (const auto& op : ops_)
    if (op.site == site) return true;
  return false;
}

bool ResidualHooks::on_device(int device, int64_t max_rows) {
  for (const auto& op : ops_)
    if (op.kind != Kind::Transform || !op.transform->prepare_device(device, max_rows)) return false;
  return true;
}

void ResidualHooks::apply_on_device(HookSite site, float* rows, int64_t n_rows, int64_t width, void* stream) {
  for (const auto& op : ops_)
    if (op.site == site && n_rows > 0) op.transform->apply_on_device(rows, n_rows, width, stream);
}

void ResidualHooks::apply(HookSite site, float* rows, int64_t n_rows, int64_t width, bool last_rows_of_call) {
  for (const auto& op : ops_) {
    if (!(op.site == site)) continue;
    switch (op.kind) {
      case Kind::Add:
        for (int64_t t = 0; t < n_rows; ++t)
          for (int64_t i = 0; i < width; ++i) rows[t * width + i] += op.scale * op.vector[i];
        break;
      case Kind::ProjectOut:
        for (int64_t t = 0; t < n_rows; ++t) {
          float* x = rows + t * width;
          double dot = 0;
          for (int64_t i = 0; i < width; ++i) dot += double(x[i]) * op.vector[i];
          for (int64_t i = 0; i < width; ++i) x[i] -= static_cast<float>(dot * op.vector[i]);
        }
        break;
      case Kind::Capture: {
        auto& c = captures_[op.capture];
        int64_t first = 0;
        if (c.rows == CaptureRows::Last) {
          if (!last_rows_of_call || n_rows == 0) break;
          first = n_rows - 1;
        }
        if (c.sum.empty()) c.sum.assign(width, 0.0);
        for (int64_t t = first; t < n_rows; ++t) {
          for (int64_t i = 0; i < width; ++i) c.sum[i] += rows[t * width + i];
          ++c.count;
        }
        break;
      }
      case Kind::Transform:
        if (n_rows > 0) op.transform->apply(rows, n_rows, width);
        break;
    }
  }
}

}  // namespace lathe
