#include "train/reft.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "core/gram_schmidt.hpp"
#include "core/splitmix.hpp"
#include "lathe/error.hpp"

namespace lathe::train {

template <class T>
void ReftGrads<T>::reset(const ReftSet<T>& reft) {
  dr.assign(reft.sites.size(), {});
  dw.assign(reft.sites.size(), {});
  db.assign(reft.sites.size(), {});
  for (size_t i = 0; i < reft.sites.size(); ++i) {
    dr[i].assign(reft.sites[i].r.size(), T(0));
    dw[i].assign(reft.sites[i].w.size(), T(0));
    db[i].assign(reft.sites[i].b.size(), T(0));
  }
}

template <class T>
void orthonormalize_rows(std::vector<T>& r, int64_t rank, int64_t width) {
  std::vector<double> rows(r.begin(), r.end());
  if (const int64_t row = gram_schmidt(rows.data(), rank, width, 1e-12); row >= 0)
    throw InvalidArgumentError(fmt::format("ReFT: row {} of the rotation R is (nearly) a combination of the rows "
                                           "before it; R needs {} independent rows",
                                           row, rank));
  std::transform(rows.begin(), rows.end(), r.begin(), [](double v) { return static_cast<T>(v); });
}

ReftSet<float> init_reft(int64_t width, std::span<const uint32_t> layers, int64_t rank, uint32_t first, uint32_t last,
                         uint64_t seed) {
  if (rank < 1 || rank > width)
    throw InvalidArgumentError(fmt::format("ReFT rank {} is outside 1..{} (the model's width)", rank, width));
  if (layers.empty()) throw InvalidArgumentError("ReFT needs at least one layer to intervene on");
  if (first + last == 0)
    throw InvalidArgumentError("ReFT positions f0+l0 intervene nowhere; give first and/or last tokens, e.g. f1+l1");
  std::set<uint32_t> seen;
  for (uint32_t l : layers)
    if (!seen.insert(l).second) throw InvalidArgumentError(fmt::format("ReFT layer {} is given twice", l));
  ReftSet<float> out;
  out.rank = rank;
  out.width = width;
  out.first = first;
  out.last = last;
  const double bound = 1.0 / std::sqrt(static_cast<double>(width));
  for (uint32_t layer : seen) {  // in layer order
    std::mt19937_64 rng(splitmix64_mix(seed + kSplitmixGamma * (uint64_t{layer} + 1)));
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(-bound, bound);
    ReftSet<float>::Site site;
    site.layer = layer;
    site.r.resize(static_cast<size_t>(rank * width));
    for (auto& v : site.r) v = static_cast<float>(normal(rng));
    orthonormalize_rows(site.r, rank, width);
    site.w.resize(site.r.size());
    for (auto& v : site.w) v = static_cast<float>(uniform(rng));
    site.b.resize(static_cast<size_t>(rank));
    for (auto& v : site.b) v = static_cast<float>(uniform(rng));
    out.sites.push_back(std::move(site));
  }
  return out;
}

std::vector<int64_t> reft_positions(uint32_t first, uint32_t last, int64_t prompt_len) {
  std::set<int64_t> at;
  for (int64_t t = 0; t < std::min<int64_t>(first, prompt_len); ++t) at.insert(t);
  for (int64_t t = std::max<int64_t>(0, prompt_len - last); t < prompt_len; ++t) at.insert(t);
  return {at.begin(), at.end()};
}

template <class T>
void reft_forward(const typename ReftSet<T>::Site& site, int64_t rank, int64_t width, std::span<const int64_t> positions,
                  T* x, std::vector<T>& saved) {
  saved.resize(positions.size() * static_cast<size_t>(width));
  std::vector<T> u(static_cast<size_t>(rank));
  for (size_t p = 0; p < positions.size(); ++p) {
    T* h = x + positions[p] * width;
    std::copy(h, h + width, saved.begin() + static_cast<std::ptrdiff_t>(p * width));
    for (int64_t i = 0; i < rank; ++i) {  // u = W h + b - R h
      const T* wi = site.w.data() + i * width;
      const T* ri = site.r.data() + i * width;
      T acc = site.b[static_cast<size_t>(i)];
      for (int64_t c = 0; c < width; ++c) acc += (wi[c] - ri[c]) * h[c];
      u[static_cast<size_t>(i)] = acc;
    }
    for (int64_t i = 0; i < rank; ++i) {  // h += R^T u
      const T* ri = site.r.data() + i * width;
      const T ui = u[static_cast<size_t>(i)];
      for (int64_t c = 0; c < width; ++c) h[c] += ri[c] * ui;
    }
  }
}

template <class T>
void reft_backward(const typename ReftSet<T>::Site& site, int64_t rank, int64_t width,
                   std::span<const int64_t> positions, const std::vector<T>& saved, T* dx, T* dr, T* dw, T* db) {
  std::vector<T> gu(static_cast<size_t>(rank)), u(static_cast<size_t>(rank));
  for (size_t p = 0; p < positions.size(); ++p) {
    const T* h = saved.data() + p * static_cast<size_t>(width);
    T* g = dx + positions[p] * width;  // g' on entry, dh on exit
    for (int64_t i = 0; i < rank; ++i) {
      const T* wi = site.w.data() + i * width;
      const T* ri = site.r.data() + i * width;
      T acc_g = 0, acc_u = site.b[static_cast<size_t>(i)];
      for (int64_t c = 0; c < width; ++c) {
        acc_g += ri[c] * g[c];
        acc_u += (wi[c] - ri[c]) * h[c];
      }
      gu[static_cast<size_t>(i)] = acc_g;
      u[static_cast<size_t>(i)] = acc_u;
    }
    for (int64_t i = 0; i < rank && dr != nullptr; ++i) {
      const T gi = gu[static_cast<size_t>(i)], ui = u[static_cast<size_t>(i)];
      T* dri = dr + i * width;
      T* dwi = dw + i * width;
      for (int64_t c = 0; c < width; ++c) {
        dwi[c] += gi * h[c];
        dri[c] += ui * g[c] - gi * h[c];
      }
      db[i] += gi;
    }
    // dh = g' + (W - R)^T g_u, after the parameter sums read g'.
    for (int64_t i = 0; i < rank; ++i) {
      const T* wi = site.w.data() + i * width;
      const T* ri = site.r.data() + i * width;
      const T gi = gu[static_cast<size_t>(i)];
      for (int64_t c = 0; c < width; ++c) g[c] += (wi[c] - ri[c]) * gi;
    }
  }
}

template struct ReftGrads<float>;
template struct ReftGrads<double>;
template void orthonormalize_rows<float>(std::vector<float>&, int64_t, int64_t);
template void orthonormalize_rows<double>(std::vector<double>&, int64_t, int64_t);
template void reft_forward<float>(const ReftSet<float>::Site&, int64_t, int64_t, std::span<const int64_t>, float*,
                                  std::vector<float>&);
template void reft_forward<double>(const ReftSet<double>::Site&, int64_t, int64_t, std::span<const int64_t>, double*,
                                   std::vector<double>&);
template void reft_backward<float>(const ReftSet<float>::Site&, int64_t, int64_t, std::span<const int64_t>,
                                   const std::vector<float>&, float*, float*, float*, float*);
template void reft_backward<double>(const ReftSet<double>::Site&, int64_t, int64_t, std::span<const int64_t>,
                                    const std::vector<double>&, double*, double*, double*, double*);

}  // namespace lathe::train
