// Sparsity scores of one identity in float64, shared by facenms::prepare and
// facenms::rank_nms so that both rank every identity bit for bit alike.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu_common.h"

namespace facenms {
namespace {

// One identity: float64 norms of rows `rows` into norms[], the sum of the unit
// rows into centre[], and its rows converted to float64 into buf (reused for
// the scores). Returns false if a row is zero or not finite.
#define FACENMS_LOAD_IDENTITY(T)                                                               \
  FACENMS_CLONES bool load_identity(const T* base, int64_t ld, const int64_t* rows, int64_t n, \
                                    int64_t d, double* buf, double* norms, double* centre) {   \
    bool ok = true;                                                                            \
    for (int64_t k = 0; k < d; ++k) centre[k] = 0.0;                                           \
    for (int64_t i = 0; i < n; ++i) {                                                          \
      const T* src = base + rows[i] * ld;                                                      \
      double* r = buf + i * d;                                                                 \
      double ss = 0.0;                                                                         \
      _Pragma("omp simd reduction(+ : ss)") for (int64_t k = 0; k < d; ++k) {                  \
        r[k] = to_double(src[k]);                                                              \
        ss += r[k] * r[k];                                                                     \
      }                                                                                        \
      norms[i] = std::sqrt(ss);                                                                \
      if (!(norms[i] > 0) || !std::isfinite(norms[i])) { ok = false; continue; }               \
      const double inv = 1.0 / norms[i];                                                       \
      _Pragma("omp simd") for (int64_t k = 0; k < d; ++k) centre[k] += r[k] * inv;             \
    }                                                                                          \
    return ok;                                                                                 \
  }
FACENMS_LOAD_IDENTITY(float)
FACENMS_LOAD_IDENTITY(double)
FACENMS_LOAD_IDENTITY(at::Half)
FACENMS_LOAD_IDENTITY(at::BFloat16)
#undef FACENMS_LOAD_IDENTITY

// scores[i] = 1 - cos(row i, centre), rounded to a multiple of 2**-20.
FACENMS_CLONES void centre_scores(const double* buf, int64_t n, int64_t d, const double* norms,
                                  const double* centre, double* scores) {
  double cc = 0.0;
#pragma omp simd reduction(+ : cc)
  for (int64_t k = 0; k < d; ++k) cc += centre[k] * centre[k];
  const double cn = std::sqrt(cc);
  for (int64_t i = 0; i < n; ++i) {
    if (!(cn > 0)) { scores[i] = 1.0; continue; }  // no centre: all faces tie
    const double* r = buf + i * d;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t k = 0; k < d; ++k) dot += r[k] * centre[k];
    const double s = 1.0 - dot / (norms[i] * cn);
    scores[i] = std::nearbyint(s * 1048576.0) / 1048576.0;
  }
}

// Norms and scores of rows `rows` (buf: n * d doubles, centre: d doubles of
// scratch). Returns false if some row is zero or not finite; its norm says so.
template <typename T>
bool score_identity(const T* base, int64_t ld, const int64_t* rows, int64_t n, int64_t d,
                    double* buf, double* centre, double* norms, double* scores) {
  if (load_identity(base, ld, rows, n, d, buf, norms, centre)) {
    centre_scores(buf, n, d, norms, centre, scores);
    return true;
  }
  for (int64_t i = 0; i < n; ++i) scores[i] = 1.0;
  return false;
}

}  // namespace
}  // namespace facenms
