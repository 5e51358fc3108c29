// facenms::trimmed_centres on the CPU: per identity, the centrality ranking
// (as prepare scores it), the normalised sum of the nearer half and every
// face's cosine to it, while the identity's rows are in cache: the first
// pass of label_issues in one read of the features.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <numeric>
#include <vector>

#include "cpu/scores.h"
#include "cpu/walk.h"  // load_rows

namespace facenms {
namespace {

constexpr double kNoCentre = 0x1p-32;  // as facenms.reference: shorter is no direction

// Rows rows[0..n) in rank order with inverse norms inv[]: the centre of the
// first `take` unit rows into centre[] and every row's cosine to it into a[].
// The sum and the cosines are float64 (sum: d doubles of scratch).
template <typename I, typename T, typename O>
FACENMS_INLINE void trim_identity_impl(const T* base, int64_t ld, const int64_t* rows,
                                       int64_t n, int64_t take, int64_t d, const double* inv,
                                       double* sum, O* centre, O* a) {
  std::fill(sum, sum + d, 0.0);
  for (int64_t i = 0; i < take; ++i) {
    const T* src = base + rows[i] * ld;
    const double w = inv[i];
    for (int64_t k = 0; k < d; ++k) sum[k] += to_double(src[k]) * w;
  }
  const double len = std::sqrt(dot_f64(sum, sum, d));
  const double scale = len > (double)take * kNoCentre ? 1.0 / len : 0.0;
  for (int64_t k = 0; k < d; ++k) sum[k] *= scale, centre[k] = static_cast<O>(sum[k]);
  for (int64_t i = 0; i < n; ++i)
    a[i] = static_cast<O>(dot_f64(base + rows[i] * ld, sum, d) * inv[i]);
}

#define FACENMS_TRIM_IDENTITY(T, O)                                                        \
  FACENMS_ISA_VERSIONS(void, trim_identity, trim_identity_impl,                            \
                       (const T* base, int64_t ld, const int64_t* rows, int64_t n,         \
                        int64_t take, int64_t d, const double* inv, double* sum,           \
                        O* centre, O* a),                                                  \
                       (base, ld, rows, n, take, d, inv, sum, centre, a))
FACENMS_TRIM_IDENTITY(float, float)
FACENMS_TRIM_IDENTITY(double, double)
#undef FACENMS_TRIM_IDENTITY

struct TrimScratch {
  std::vector<double> centre, norms, scores, inv;
  std::vector<int64_t> perm, src_rows, pos;
  std::vector<float> raw;  // 16-bit rows as float32
};

// One identity: rows src_rows[0..n) of src, whose row indices in x are
// index[0..n). Writes zeros and notes the smallest bad index in `bad` if a row
// is zero or not finite.
template <typename U, typename O>
void centre_rows(const U* src, int64_t ld, const int64_t* src_rows, const int64_t* index,
                 int64_t n, int64_t d, int64_t min_faces, TrimScratch& s, int64_t* ranked,
                 O* centre, O* a, std::atomic<int64_t>& bad) {
  if (!score_identity(src, ld, src_rows, n, d, s.centre.data(), s.norms.data(),
                      s.scores.data())) {
    const int64_t first = first_bad_row(s.norms.data(), index, n);
    int64_t seen = bad.load();
    while (first < seen && !bad.compare_exchange_weak(seen, first)) {}
    std::fill(centre, centre + d, O(0));
    std::fill(a, a + n, O(0));
    return;
  }
  int64_t* p = s.perm.data();
  rank_positions(s.scores.data(), index, n, /*centrality=*/true, p);
  for (int64_t i = 0; i < n; ++i)
    ranked[i] = index[p[i]], s.src_rows[i] = src_rows[p[i]], s.inv[i] = 1.0 / s.norms[p[i]];
  const int64_t take = n >= min_faces ? (n + 1) / 2 : n;
  trim_identity(src, ld, s.src_rows.data(), n, take, d, s.inv.data(), s.centre.data(), centre,
                a);
}

// One identity, rows `rows[0..n)` of x. 16-bit rows are converted to float32
// once (exactly, as rank_nms does); the five passes then read that copy.
template <typename T, typename O>
void centre_identity(const T* base, int64_t ld, int64_t d, const int64_t* rows, int64_t n,
                     int64_t min_faces, TrimScratch& s, int64_t* ranked, O* centre, O* a,
                     std::atomic<int64_t>& bad) {
  if ((int64_t)s.norms.size() < n) {
    s.norms.resize(n), s.scores.resize(n), s.inv.resize(n), s.perm.resize(n);
    s.src_rows.resize(n), s.pos.resize(n);
    std::iota(s.pos.begin(), s.pos.end(), int64_t(0));
  }
  s.centre.resize(d);
  if constexpr (sizeof(T) == 2) {
    if ((int64_t)s.raw.size() < n * d) s.raw.resize(n * d);
    load_rows(base, ld, rows, n, d, s.raw.data(), /*unit=*/false);
    centre_rows(s.raw.data(), d, s.pos.data(), rows, n, d, min_faces, s, ranked, centre, a,
                bad);
  } else {
    centre_rows(base, ld, rows, rows, n, d, min_faces, s, ranked, centre, a, bad);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> trimmed_centres_cpu(const Tensor& x,
                                                               const Tensor& order,
                                                               const Tensor& offsets,
                                                               int64_t min_faces) {
  check_inputs(x, order, offsets, "trimmed_centres");
  check_cpu_isa();
  const int64_t n_ident = offsets.numel() - 1, d = x.size(1), ld = x.stride(0);
  const auto out_type = x.scalar_type() == ScalarType::Double ? ScalarType::Double
                                                              : ScalarType::Float;
  auto ranked = torch::stable::clone(order);
  auto centres = torch::stable::new_empty(x, {std::max<int64_t>(n_ident, 0), d}, out_type);
  auto a = torch::stable::new_empty(x, {order.numel()}, out_type);
  auto bad = torch::stable::fill_(torch::stable::new_empty(order, {}), -1);
  if (n_ident <= 0) return {ranked, centres, a, bad};
  const int64_t* ord = order.const_data_ptr<int64_t>();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  int64_t* rk = ranked.mutable_data_ptr<int64_t>();
  std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
  dispatch_floating(x.scalar_type(), "trimmed_centres_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* base = x.const_data_ptr<scalar_t>();
    out_t* cent = centres.mutable_data_ptr<out_t>();
    out_t* sim = a.mutable_data_ptr<out_t>();
    torch::stable::parallel_for(0, n_ident, 16, [&](int64_t c0, int64_t c1) {
      TrimScratch s;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t lo = off[c];
        centre_identity(base, ld, d, ord + lo, off[c + 1] - lo, min_faces, s, rk + lo,
                        cent + c * d, sim + lo, first_bad);
      }
    });
  });
  if (first_bad.load() != std::numeric_limits<int64_t>::max())
    torch::stable::fill_(bad, (double)first_bad.load());  // exact: row indices are < 2**53
  return {ranked, centres, a, bad};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) {
  m.impl("trimmed_centres", TORCH_BOX(&trimmed_centres_cpu));
}

}  // namespace facenms
