// facenms::nearest_centres on the CPU: the end of label_issues' search for
// each candidate's nearest other identity. Given a block of screened products
// (int8 sums or float products of rows against every centre), each row's
// largest other centre is found, the row is ruled out if it cannot pass its
// need, and otherwise its cosines to the few centres within the screen's
// error of that largest are taken in float64. One pass over each row of the
// block while it is in cache, instead of the masks and index lists of a
// torch version.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/cpu_common.h"

namespace facenms {
namespace {

constexpr int64_t kScan = 64;  // columns tested at once for one within the window

// max of v[lo..hi) a register at a time (a float max does not vectorise by
// itself: the compiler keeps the order of the comparisons; a max has none)
template <typename I, typename S>
FACENMS_INLINE S row_max(const S* v, int64_t lo, int64_t hi) {
  constexpr int L = 4 * I::W / sizeof(S);  // lanes of one register
  typedef S reg __attribute__((vector_size(L * sizeof(S))));
  S m = std::numeric_limits<S>::lowest();
  int64_t k = lo;
  if (hi - lo >= L) {
    reg acc, x;
    __builtin_memcpy(&acc, v + k, sizeof(reg));
    for (k += L; k + L <= hi; k += L) {
      __builtin_memcpy(&x, v + k, sizeof(reg));
      acc = acc > x ? acc : x;
    }
    for (int j = 0; j < L; ++j) m = std::max(m, acc[j]);
  }
  for (; k < hi; ++k) m = std::max(m, v[k]);
  return m;
}

// Row i: its screened products sims[0..K), own column `own`, the cosine of one
// product unit `unit`, the error bound `err` and the b it must pass `need`.
// Writes b (float64; -inf when the row is ruled out) and k.
template <typename I, typename S, typename T>
FACENMS_INLINE void nearest_row_impl(const S* sims, int64_t n_centres, int64_t own,
                                     double unit, double err, double need, const T* y,
                                     const T* centres, int64_t d, double* b, int64_t* k) {
  *b = -std::numeric_limits<double>::infinity(), *k = 0;
  if (n_centres < 2) return;
  const S raw = std::max(row_max<I>(sims, 0, own), row_max<I>(sims, own + 1, n_centres));
  const double top = (double)raw * unit;
  if (!(top > need - err)) return;  // the exact b is at most top + err <= need
  // every centre whose exact cosine can reach the largest one's: >= top - 2 err
  const double floor = (top - 2 * err) / unit;
  double best = -std::numeric_limits<double>::infinity();
  int64_t at = n_centres;
  for (int64_t k0 = 0; k0 < n_centres; k0 += kScan) {
    const int64_t k1 = std::min(k0 + kScan, n_centres);
    if ((double)row_max<I>(sims, k0, k1) < floor) continue;
    for (int64_t c = k0; c < k1; ++c) {
      if (c == own || (double)sims[c] < floor) continue;
      const double v = dot_f64(y, centres + c * d, d);
      if (v > best) best = v, at = c;  // ascending c: ties keep the smaller index
    }
  }
  *b = best, *k = at;
}

#define FACENMS_NEAREST_ROW(S, T)                                                          \
  FACENMS_ISA_VERSIONS(void, nearest_row, nearest_row_impl,                                \
                       (const S* sims, int64_t n_centres, int64_t own, double unit,        \
                        double err, double need, const T* y, const T* centres, int64_t d,  \
                        double* b, int64_t* k),                                            \
                       (sims, n_centres, own, unit, err, need, y, centres, d, b, k))
FACENMS_NEAREST_ROW(int32_t, float)
FACENMS_NEAREST_ROW(float, float)
FACENMS_NEAREST_ROW(double, double)
#undef FACENMS_NEAREST_ROW

std::tuple<Tensor, Tensor> nearest_centres_cpu(const Tensor& sims, const Tensor& bounds,
                                               const Tensor& own, const Tensor& y,
                                               const Tensor& centres) {
  check_cpu_isa();
  FACENMS_CHECK(sims.dim() == 2 && sims.is_contiguous() && y.dim() == 2 && y.is_contiguous() &&
                    centres.dim() == 2 && centres.is_contiguous(),
                "nearest_centres: expected contiguous sims (n, K), y (n, d) and centres (K, d)");
  const int64_t n = sims.size(0), n_centres = sims.size(1), d = y.size(1);
  FACENMS_CHECK(y.size(0) == n && centres.size(0) == n_centres && centres.size(1) == d,
                "nearest_centres: sims ", shape_str(sims), ", y ", shape_str(y),
                " and centres ", shape_str(centres), " do not match");
  FACENMS_CHECK(y.scalar_type() == centres.scalar_type() &&
                    (y.scalar_type() == ScalarType::Float ||
                     y.scalar_type() == ScalarType::Double),
                "nearest_centres: expected y and centres both float32 or both float64, got ",
                y.scalar_type(), " and ", centres.scalar_type());
  const bool as_int = sims.scalar_type() == ScalarType::Int;
  FACENMS_CHECK(as_int ? y.scalar_type() == ScalarType::Float
                       : sims.scalar_type() == y.scalar_type(),
                "nearest_centres: expected int32 sims (float32 rows) or sims of the rows' "
                "type, got ", sims.scalar_type(), " for ", y.scalar_type(), " rows");
  FACENMS_CHECK(bounds.dim() == 2 && bounds.size(0) == n && bounds.size(1) == 3 &&
                    bounds.scalar_type() == ScalarType::Double && bounds.is_contiguous(),
                "nearest_centres: expected bounds as a contiguous float64 tensor of shape (", n,
                ", 3), got ", bounds.scalar_type(), " of shape ", shape_str(bounds));
  FACENMS_CHECK(own.dim() == 1 && own.numel() == n && own.scalar_type() == ScalarType::Long &&
                    own.is_contiguous(),
                "nearest_centres: expected own as a contiguous int64 tensor of shape (", n,
                ",), got ", own.scalar_type(), " of shape ", shape_str(own));
  const int64_t* o = own.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    FACENMS_CHECK(o[i] >= 0 && o[i] < n_centres, "nearest_centres: own[", i, "] = ", o[i],
                  " is not one of ", n_centres, " centres");
  auto b = torch::stable::new_empty(bounds, {n});
  auto k = torch::stable::new_empty(own, {n});
  const double* bd = bounds.const_data_ptr<double>();  // per row: unit, err, need
  double* bp = b.mutable_data_ptr<double>();
  int64_t* kp = k.mutable_data_ptr<int64_t>();
  auto run = [&](auto stag, auto ttag) {
    using S = decltype(stag);
    using T = decltype(ttag);
    const S* s = sims.const_data_ptr<S>();
    const T *yp = y.const_data_ptr<T>(), *cp = centres.const_data_ptr<T>();
    torch::stable::parallel_for(0, n, 8, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        nearest_row(s + i * n_centres, n_centres, o[i], bd[3 * i], bd[3 * i + 1],
                    bd[3 * i + 2], yp + i * d, cp, d, bp + i, kp + i);
    });
  };
  if (as_int) run(int32_t{}, float{});
  else if (y.scalar_type() == ScalarType::Float) run(float{}, float{});
  else run(double{}, double{});
  return {b, k};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) {
  m.impl("nearest_centres", TORCH_BOX(&nearest_centres_cpu));
}

}  // namespace facenms
