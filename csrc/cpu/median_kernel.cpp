// facenms::median_mad on the CPU: the lower median mu of the values v[mask]
// and the lower median of |v - mu| over them (in v's type), as label_issues'
// scale takes them. Exact:
// a radix select on the order-preserving integer keys of the values, a byte
// at a time, keeping only the values that share the chosen digits; no
// comparisons to mispredict, unlike a quickselect.
#include <torch/csrc/stable/library.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"

namespace facenms {
namespace {

template <typename F>
using KeyOf = std::conditional_t<sizeof(F) == 4, uint32_t, uint64_t>;

// Unsigned keys that sort as the values do (negatives: all bits flipped;
// others: the sign bit set). -0.0 sorts before 0.0; both are zero as values.
template <typename F>
KeyOf<F> key_of(F f) {
  using U = KeyOf<F>;
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  U u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & sign) ? ~u : (u | sign);
}

template <typename F>
F value_of(KeyOf<F> k) {
  using U = KeyOf<F>;
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  const U u = (k & sign) ? (k & ~sign) : ~k;
  F f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// The k-th smallest (0-based) of keys[0..n); keys are overwritten. Bytes all
// keys share are skipped (cosines share their top bits); four histograms in
// turn keep equal digits from chaining their increments.
template <typename U>
U kth_key(U* keys, int64_t n, int64_t k) {
  U all = ~U(0), any = 0;
  for (int64_t i = 0; i < n; ++i) all &= keys[i], any |= keys[i];
  const U differ = all ^ any;  // bits where some keys differ
  U prefix = all & ~differ;
  for (int shift = 8 * (int)sizeof(U) - 8; shift >= 0; shift -= 8) {
    if (((differ >> shift) & 0xff) == 0) continue;
    int64_t hist[4][256] = {};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) ++hist[j][(keys[i + j] >> shift) & 0xff];
    for (; i < n; ++i) ++hist[0][(keys[i] >> shift) & 0xff];
    int digit = 0;
    for (;; ++digit) {
      const int64_t count = hist[0][digit] + hist[1][digit] + hist[2][digit] + hist[3][digit];
      if (k < count) break;
      k -= count;
    }
    prefix = (prefix & ~(U(0xff) << shift)) | (U(digit) << shift);
    int64_t m = 0;  // keep the keys with this digit (all earlier digits already match)
    for (i = 0; i < n; ++i)
      if ((int)((keys[i] >> shift) & 0xff) == digit) keys[m++] = keys[i];
    n = m;
  }
  return prefix;
}

template <typename F>
void median_mad_impl(const F* v, const bool* mask, int64_t n, double* out) {
  using U = KeyOf<F>;
  std::vector<U> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) keys.push_back(key_of(v[i]));
  const int64_t m = (int64_t)keys.size(), k = (m - 1) / 2;
  if (m == 0) {
    out[0] = out[1] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  const F mu = value_of<F>(kth_key(keys.data(), m, k));
  keys.clear();
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) keys.push_back(key_of(std::fabs(F(v[i] - mu))));
  out[0] = (double)mu;
  out[1] = (double)value_of<F>(kth_key(keys.data(), m, k));
}

Tensor median_mad_cpu(const Tensor& v, const Tensor& mask) {
  FACENMS_CHECK(v.dim() == 1 && v.is_contiguous() &&
                    (v.scalar_type() == ScalarType::Float ||
                     v.scalar_type() == ScalarType::Double),
                "median_mad: expected a contiguous 1-D float32 or float64 tensor, got ",
                v.scalar_type(), " of shape ", shape_str(v));
  FACENMS_CHECK(mask.dim() == 1 && mask.numel() == v.numel() && mask.is_contiguous() &&
                    mask.scalar_type() == ScalarType::Bool,
                "median_mad: expected a contiguous bool mask of shape (", v.numel(),
                ",), got ", mask.scalar_type(), " of shape ", shape_str(mask));
  auto out = torch::stable::new_empty(v, {2}, ScalarType::Double);
  double* o = out.mutable_data_ptr<double>();
  const bool* keep = mask.const_data_ptr<bool>();
  if (v.scalar_type() == ScalarType::Float)
    median_mad_impl(v.const_data_ptr<float>(), keep, v.numel(), o);
  else
    median_mad_impl(v.const_data_ptr<double>(), keep, v.numel(), o);
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("median_mad", TORCH_BOX(&median_mad_cpu)); }

}  // namespace facenms
