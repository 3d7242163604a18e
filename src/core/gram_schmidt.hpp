// Modified Gram-Schmidt in float64: the one orthonormalization of the rooms above (the ablation
// adapter's SVD start, ReFT's rotation rows).
#pragma once

#include <cmath>
#include <cstdint>

namespace lathe {

// Makes k vectors of length n, stored one after another in v, orthonormal in order: each loses its
// components along the ones before it and is scaled to unit length. A vector whose norm is then
// `tiny` or less (it depended on the ones before) is set to zero. Returns the index of the first
// such vector, or -1 when all k are orthonormal.
inline int64_t gram_schmidt(double* v, int64_t k, int64_t n, double tiny) {
  int64_t first_vanished = -1;
  for (int64_t j = 0; j < k; ++j) {
    double* vj = v + j * n;
    for (int64_t i = 0; i < j; ++i) {
      const double* vi = v + i * n;
      double dot = 0;
      for (int64_t t = 0; t < n; ++t) dot += vi[t] * vj[t];
      for (int64_t t = 0; t < n; ++t) vj[t] -= dot * vi[t];
    }
    double norm = 0;
    for (int64_t t = 0; t < n; ++t) norm += vj[t] * vj[t];
    norm = std::sqrt(norm);
    const bool vanished = !(norm > tiny);
    if (vanished && first_vanished < 0) first_vanished = j;
    for (int64_t t = 0; t < n; ++t) vj[t] = vanished ? 0.0 : vj[t] / norm;
  }
  return first_vanished;
}

}  // namespace lathe
