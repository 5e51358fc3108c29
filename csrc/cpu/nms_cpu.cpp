// facenms::nms on the CPU: per identity, rows are normalised into a float32
// scratch block that stays in cache, then walked greedily; a candidate is
// compared only with faces kept so far, four at a time, and the walk stops
// as soon as every threshold lane has suppressed it. No similarity matrix is
// ever stored. Identities run in parallel, largest first.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <omp.h>
#include <vector>

#include "../checks.h"
#include "../nms_common.h"
#include "cpu_common.h"

namespace facenms {
namespace {

// Rows are converted to float32 and scaled to unit norm. The loops sit
// directly in the cloned function: a helper compiled for the baseline would
// not be inlined into the AVX clones.
#define FACENMS_LOAD_ROWS(T)                                                                     \
  FACENMS_CLONES void load_rows(const T* base, int64_t ld, const int64_t* rows, int64_t n,       \
                                int64_t d, float* dst) {                                         \
    for (int64_t i = 0; i < n; ++i, dst += d) {                                                  \
      const T* src = base + rows[i] * ld;                                                        \
      float ss = 0.f;                                                                            \
      _Pragma("omp simd reduction(+ : ss)") for (int64_t k = 0; k < d; ++k) {                    \
        const float v = to_float(src[k]);                                                         \
        dst[k] = v;                                                                              \
        ss += v * v;                                                                             \
      }                                                                                          \
      const float inv = ss > 0.f ? 1.f / std::sqrt(ss) : 0.f;                                    \
      _Pragma("omp simd") for (int64_t k = 0; k < d; ++k) dst[k] *= inv;                         \
    }                                                                                            \
  }
FACENMS_LOAD_ROWS(float)
FACENMS_LOAD_ROWS(double)
FACENMS_LOAD_ROWS(at::Half)
FACENMS_LOAD_ROWS(at::BFloat16)
#undef FACENMS_LOAD_ROWS

// 16 floats; GCC maps it to one zmm, two ymm or four xmm registers per clone.
typedef float v16 __attribute__((vector_size(64)));

FACENMS_INLINE v16 load16(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

FACENMS_INLINE float hsum(v16 v) {
  float s = 0.f;
  for (int k = 0; k < 16; ++k) s += v[k];
  return s;
}

// s[u] = <q, k[u]> for four kept rows at once: the candidate's chunk is
// loaded once for four products.
FACENMS_INLINE void dot4(const float* q, const float* const* k, int64_t d, float* s) {
  const int64_t d16 = d & ~int64_t(15);
  v16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  for (int64_t c = 0; c < d16; c += 16) {
    const v16 v = load16(q + c);
    a0 += v * load16(k[0] + c);
    a1 += v * load16(k[1] + c);
    a2 += v * load16(k[2] + c);
    a3 += v * load16(k[3] + c);
  }
  s[0] = hsum(a0), s[1] = hsum(a1), s[2] = hsum(a2), s[3] = hsum(a3);
  for (int64_t c = d16; c < d; ++c)
    for (int u = 0; u < 4; ++u) s[u] += q[c] * k[u][c];
}

// Greedy walk of one identity: y holds its n unit rows in rank order.
// bits[i] gets the lanes in which face i is kept; `kept` is scratch.
FACENMS_CLONES void walk(const float* y, int64_t n, int64_t d, const double* thr, int lanes,
                         uint64_t* bits, int64_t* kept) {
  const uint64_t all = all_lanes(lanes);
  int64_t nk = 0;  // faces kept in at least one lane: the only possible suppressors
  float s[4];
  for (int64_t i = 0; i < n; ++i) {
    const float* q = y + i * d;
    uint64_t alive = all;
    // Newest kept faces first: a near-duplicate sits next to its original in
    // rank order, so a suppressed face usually stops after a few products.
    for (int64_t j = nk; j > 0 && alive;) {
      const int m = j < 4 ? (int)j : 4;  // a short last group repeats a row
      const float* k[4];
      for (int u = 0; u < 4; ++u) k[u] = y + kept[j - 1 - (u < m ? u : 0)] * d;
      dot4(q, k, d, s);
      for (int u = 0; u < m; ++u)
        alive &= ~(bits[kept[j - 1 - u]] & lanes_below(thr, lanes, s[u]));
      j -= m;
    }
    bits[i] = alive;
    if (alive) kept[nk++] = i;
  }
}

// Lanes that kept fewer than `need` faces take back their best-ranked
// suppressed faces; then counts[j] += kept faces in lane j.
void fill_min_keep(uint64_t* bits, int64_t n, int lanes, int64_t need, int64_t* counts) {
  int64_t cnt[kMaxLanes];
  count_lanes(bits, n, lanes, cnt);
  fill_short_lanes(bits, n, lanes, need, cnt);
  for (int j = 0; j < lanes; ++j) counts[j] += cnt[j];
}

template <typename scalar_t>
void nms_kernel_impl(const at::Tensor& x, const int64_t* order, const int64_t* offsets,
                     int64_t n_ident, const double* thr, bool per_identity, int lanes,
                     int64_t min_per_identity, uint64_t* bits, int64_t* counts) {
  const int64_t d = x.size(1), ld = x.stride(0);
  const scalar_t* base = x.data_ptr<scalar_t>();

  std::vector<int64_t> sched(n_ident);  // largest identities first balances the threads
  std::iota(sched.begin(), sched.end(), 0);
  std::stable_sort(sched.begin(), sched.end(), [&](int64_t u, int64_t v) {
    return identity_cost(offsets[u + 1] - offsets[u]) > identity_cost(offsets[v + 1] - offsets[v]);
  });

  const int threads = std::max(1, std::min<int>(at::get_num_threads(), (int)n_ident));
  std::vector<std::vector<int64_t>> partial(threads, std::vector<int64_t>(per_identity ? 0 : lanes));
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    std::vector<float> y;
    std::vector<int64_t> kept;
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < n_ident; ++s) {
      const int64_t c = sched[s], a = offsets[c], n = offsets[c + 1] - a;
      if (n == 0) continue;
      if ((int64_t)y.size() < n * d) y.resize(n * d);
      if ((int64_t)kept.size() < n) kept.resize(n);
      load_rows(base, ld, order + a, n, d, y.data());
      const double* t = per_identity ? thr + c * lanes : thr;
      walk(y.data(), n, d, t, lanes, bits + a, kept.data());
      fill_min_keep(bits + a, n, lanes, min_keep(min_per_identity, n),
                    per_identity ? counts + c * lanes : partial[tid].data());
    }
  }
  if (!per_identity)
    for (const auto& p : partial)
      for (int j = 0; j < lanes; ++j) counts[j] += p[j];
}

std::tuple<at::Tensor, at::Tensor> nms_cpu(const at::Tensor& x, const at::Tensor& order,
                                           const at::Tensor& offsets,
                                           const at::Tensor& thresholds, int64_t min_per_identity) {
  check_inputs(x, order, offsets, "nms");
  const int64_t n_ident = offsets.numel() - 1;
  const int lanes = check_thresholds(x, thresholds, n_ident, min_per_identity);
  const bool per_identity = thresholds.dim() == 2;
  const double* thr = thresholds.data_ptr<double>();
  for (int64_t r = 0; r < thresholds.numel() / lanes; ++r)
    for (int j = 1; j < lanes; ++j)
      TORCH_CHECK(thr[r * lanes + j - 1] <= thr[r * lanes + j],
                  "nms: thresholds must be ascending in every row");

  auto bits = at::zeros({order.numel()}, order.options());
  auto counts = at::zeros(thresholds.sizes(), order.options());
  if (n_ident == 0 || order.numel() == 0) return {bits, counts};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nms_cpu", [&] {
    nms_kernel_impl<scalar_t>(x, order.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), n_ident,
                              thr, per_identity, lanes, min_per_identity,
                              reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>()),
                              counts.data_ptr<int64_t>());
  });
  return {bits, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("nms", &nms_cpu); }

}  // namespace facenms
