// Sparsity scores of one identity in float64 and the rank order they give,
// shared by facenms::prepare, rank_nms and trimmed_centres so that all rank
// every identity bit for bit alike.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>

#include "cpu/cpu_common.h"
#include "nms_common.h"

namespace facenms {
namespace {

// One identity: float64 norms of rows `rows` into norms[] and the sum of the
// unit rows into centre[]. Returns false if a row is zero or not finite.
// The centre is summed a few columns at a time over all rows, in registers.
template <typename I, typename T>
FACENMS_INLINE bool load_identity_impl(const T* base, int64_t ld, const int64_t* rows,
                                       int64_t n, int64_t d, double* norms, double* centre) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    const T* src = base + rows[i] * ld;
    norms[i] = std::sqrt(dot_f64(src, src, d));
    ok = ok && norms[i] > 0 && std::isfinite(norms[i]);
  }
  // C columns: eight of the level's float64 registers (each column's sum runs
  // over the rows in order whatever C is, so every level gets the same bits)
  constexpr int C = 4 * I::W;
  int64_t k0 = 0;
  for (; k0 + C <= d; k0 += C) {
    double acc[C] = {};
    for (int64_t i = 0; i < n; ++i) {
      if (!(norms[i] > 0) || !std::isfinite(norms[i])) continue;
      const T* src = base + rows[i] * ld + k0;
      const double inv = 1.0 / norms[i];
      for (int j = 0; j < C; ++j) acc[j] += to_double(src[j]) * inv;
    }
    __builtin_memcpy(centre + k0, acc, sizeof(acc));
  }
  for (; k0 < d; ++k0) {
    double c = 0.0;
    for (int64_t i = 0; i < n; ++i)
      if (norms[i] > 0 && std::isfinite(norms[i]))
        c += to_double(base[rows[i] * ld + k0]) * (1.0 / norms[i]);
    centre[k0] = c;
  }
  return ok;
}

// scores[i] = 1 - cos(row i, centre), rounded to a multiple of 2**-20.
template <typename I, typename T>
FACENMS_INLINE void centre_scores_impl(const T* base, int64_t ld, const int64_t* rows,
                                       int64_t n, int64_t d, const double* norms,
                                       const double* centre, double* scores) {
  const double cn = std::sqrt(dot_f64(centre, centre, d));
  for (int64_t i = 0; i < n; ++i) {
    if (!has_centre(cn, n)) {  // no centre: all tie
      scores[i] = 1.0;
      continue;
    }
    scores[i] = rounded_score(dot_f64(base + rows[i] * ld, centre, d), norms[i], cn);
  }
}

// One version of each per level and element type.
#define FACENMS_LOAD_IDENTITY(T)                                                            \
  FACENMS_ISA_VERSIONS(bool, load_identity, load_identity_impl,                             \
                       (const T* base, int64_t ld, const int64_t* rows, int64_t n,          \
                        int64_t d, double* norms, double* centre),                          \
                       (base, ld, rows, n, d, norms, centre))                               \
  FACENMS_ISA_VERSIONS(void, centre_scores, centre_scores_impl,                             \
                       (const T* base, int64_t ld, const int64_t* rows, int64_t n,          \
                        int64_t d, const double* norms, const double* centre,               \
                        double* scores),                                                    \
                       (base, ld, rows, n, d, norms, centre, scores))
FACENMS_LOAD_IDENTITY(float)
FACENMS_LOAD_IDENTITY(double)
FACENMS_LOAD_IDENTITY(c10::Half)
FACENMS_LOAD_IDENTITY(c10::BFloat16)
#undef FACENMS_LOAD_IDENTITY

// Norms and scores of rows `rows` (centre: d doubles of scratch). Returns
// false if some row is zero or not finite; its norm says which.
template <typename T>
bool score_identity(const T* base, int64_t ld, const int64_t* rows, int64_t n, int64_t d,
                    double* centre, double* norms, double* scores) {
  if (load_identity(base, ld, rows, n, d, norms, centre)) {
    centre_scores(base, ld, rows, n, d, norms, centre, scores);
    return true;
  }
  for (int64_t i = 0; i < n; ++i) scores[i] = 1.0;
  return false;
}

// Positions 0..n) of one identity in rank order into perm[]: descending
// score (ascending with centrality), ties by the smaller row index index[i].
inline void rank_positions(const double* scores, const int64_t* index, int64_t n,
                           bool centrality, int64_t* perm) {
  // Rows in ascending order (as grouping leaves them) and not too many: one
  // integer key per face, the score in units of 2**-20 (rounded_score: exact,
  // 0..2**21) flipped for the descending order, then the position, so that
  // the sort compares single integers.
  constexpr int64_t kUnits = int64_t(1) << 21;
  bool packed = n < (int64_t(1) << 32);
  for (int64_t i = 1; i < n && packed; ++i) packed = index[i - 1] < index[i];
  if (packed) {
    uint64_t* key = reinterpret_cast<uint64_t*>(perm);
    for (int64_t i = 0; i < n && packed; ++i) {
      const int64_t q = (int64_t)std::llround(scores[i] * 1048576.0);
      packed = q >= 0 && q <= kUnits;
      key[i] = ((uint64_t)(centrality ? q : kUnits - q) << 32) | (uint64_t)i;
    }
    if (packed) {
      std::sort(key, key + n);
      for (int64_t i = 0; i < n; ++i) perm[i] = (int64_t)(key[i] & 0xffffffffu);
      return;
    }
  }
  const double sign = centrality ? -1.0 : 1.0;
  std::iota(perm, perm + n, int64_t(0));
  std::sort(perm, perm + n, [&](int64_t u, int64_t v) {
    const double su = sign * scores[u], sv = sign * scores[v];
    return su > sv || (su == sv && index[u] < index[v]);
  });
}

// The smallest index[i] whose norm is zero or not finite (INT64_MAX if none).
inline int64_t first_bad_row(const double* norms, const int64_t* index, int64_t n) {
  int64_t first = std::numeric_limits<int64_t>::max();
  for (int64_t i = 0; i < n; ++i)
    if (!(norms[i] > 0) || !std::isfinite(norms[i])) first = std::min(first, index[i]);
  return first;
}

}  // namespace
}  // namespace facenms
