// The greedy walk of the CPU kernels, shared by facenms::nms and
// facenms::rank_nms. Per identity, rows are normalised into a float32 scratch
// block that stays in cache, then walked in rank order. Candidates go four at
// a time: a register tile of dot products sized per CPU level (four
// candidates against four kept faces, newest kept first, on AVX-512; against
// three on AVX2 and the baseline, whose 16 registers hold no more) loads each
// row chunk once for several products; a candidate leaves the tile as soon
// as every threshold lane has suppressed it. No similarity matrix is ever stored. Identities run in parallel,
// largest first, and while a thread walks one identity it prefetches the rows
// of its next one, so reading memory overlaps with computing.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <omp.h>
#include <vector>

#include "checks.h"
#include "nms_common.h"
#include "cpu/cpu_common.h"

namespace facenms {
namespace {

// A row whose float32 sum of squares would overflow or underflow (|x| around
// 1e19 or 1e-19 and beyond) is first scaled by the power of two that brings
// its largest element into [0.5, 1): exact, so the unit row is the one its
// direction gives, and bit-identical to the direct path wherever both work.
// A zero or non-finite row becomes zeros (the float64 norms report it).
template <typename T>
void unit_row_scaled(const T* src, int64_t d, float* dst) {
  double m = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double a = std::fabs(to_double(src[k]));
    m = a > m || a != a ? a : m;  // NaN propagates
  }
  if (!(m > 0.0) || !std::isfinite(m)) {
    for (int64_t k = 0; k < d; ++k) dst[k] = 0.f;
    return;
  }
  int e;
  std::frexp(m, &e);
  const double scale = std::ldexp(1.0, -e);
  float ss = 0.f;
  for (int64_t k = 0; k < d; ++k) {
    dst[k] = static_cast<float>(to_double(src[k]) * scale);
    ss += dst[k] * dst[k];
  }
  const float inv = 1.f / std::sqrt(ss);
  for (int64_t k = 0; k < d; ++k) dst[k] *= inv;
}

// Rows are converted to float32 and, with `unit`, scaled to unit norm (the
// conversion alone is exact). One version per level and element type.
template <typename I, typename T>
FACENMS_INLINE void load_rows_impl(const T* base, int64_t ld, const int64_t* rows, int64_t n,
                                   int64_t d, float* dst, bool unit) {
  constexpr int W = I::W;
  const int64_t dw = d & ~int64_t(W - 1);
  for (int64_t i = 0; i < n; ++i, dst += d) {
    const T* src = base + rows[i] * ld;
    float inv = 1.f;
    if (unit) {
      const float ss = sumsq_f32<W>(src, d);
      if (!(ss >= 0x1p-100f && ss <= 0x1p100f)) {  // squares near under/overflow
        unit_row_scaled(src, d, dst);
        continue;
      }
      inv = 1.f / std::sqrt(ss);
    }
    int64_t k = 0;
    for (; k < dw; k += W) {
      const typename Vec<W>::f v = loadv<W>(src + k) * inv;
      __builtin_memcpy(dst + k, &v, sizeof(v));
    }
    for (; k < d; ++k) dst[k] = to_float(src[k]) * inv;
  }
}
#define FACENMS_LOAD_ROWS(T)                                                              \
  FACENMS_ISA_VERSIONS(void, load_rows, load_rows_impl,                                   \
                       (const T* base, int64_t ld, const int64_t* rows, int64_t n,        \
                        int64_t d, float* dst, bool unit = true),                         \
                       (base, ld, rows, n, d, dst, unit))
FACENMS_LOAD_ROWS(float)
FACENMS_LOAD_ROWS(double)
FACENMS_LOAD_ROWS(c10::Half)
FACENMS_LOAD_ROWS(c10::BFloat16)
#undef FACENMS_LOAD_ROWS

// Pulls the rows of a thread's next identity into L2, a row at a time, from
// inside the walk of the current one.
struct Prefetcher {
  const char* base = nullptr;
  int64_t row_stride = 0, row_bytes = 0;  // in bytes
  const int64_t* rows = nullptr;
  int64_t n = 0, i = 0;

  void start(const char* b, int64_t stride, int64_t bytes, const int64_t* r, int64_t count) {
    base = b, row_stride = stride, row_bytes = bytes, rows = r, i = 0;
    n = std::min<int64_t>(count, (512 << 10) / std::max<int64_t>(bytes, 1));  // half of L2
  }
  FACENMS_INLINE void step() {
    if (i >= n) return;
    const char* p = base + rows[i++] * row_stride;
    for (int64_t at = 0; at < row_bytes; at += 64) __builtin_prefetch(p + at, 0, 2);
  }
};

// s[r][u] = <q[r], k[u]> for R candidates and U kept rows: R * U products
// from R + U loads per chunk of W floats, the level's register tile (I).
// Every pair's arithmetic is the same whatever R is, so a similarity never
// depends on which tile computed it.
template <typename I, int R>
FACENMS_INLINE void tile(const float* const* q, const float* const* k, int64_t d,
                         float (*s)[I::U]) {
  constexpr int W = I::W, U = I::U;
  using V = typename Vec<W>::f;
  const int64_t dw = d & ~int64_t(W - 1);
  V acc[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = V{};
  for (int64_t c = 0; c < dw; c += W) {
    V kc[U];
    for (int u = 0; u < U; ++u) kc[u] = loadv<W>(k[u] + c);
    for (int r = 0; r < R; ++r) {
      const V v = loadv<W>(q[r] + c);
      for (int u = 0; u < U; ++u) acc[r][u] += v * kc[u];
    }
  }
  for (int r = 0; r < R; ++r) {
    if constexpr (W == 16 && U == 4) {
      hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], s[r]);
    } else {
      for (int u = 0; u < U; ++u) s[r][u] = hsum<W>(acc[r][u]);
    }
  }
  if (dw < d)
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u)
        for (int64_t c = dw; c < d; ++c) s[r][u] += q[r][c] * k[u][c];
}

// tile<I, r> for 1 <= r <= R.
template <typename I, int R = I::B>
FACENMS_INLINE void tile_n(int r, const float* const* q, const float* const* k, int64_t d,
                           float (*s)[I::U]) {
  if constexpr (R > 1) {
    if (r < R) return tile_n<I, R - 1>(r, q, k, d, s);
  }
  tile<I, R>(q, k, d, s);
}

// alive &= the lanes in which a kept face with lanes `kept_bits` at
// similarity s does not suppress. Most pairs lie below every threshold.
FACENMS_INLINE void suppress(uint64_t& alive, uint64_t kept_bits, float s, const double* thr,
                             int lanes) {
  if (s > thr[0]) alive &= ~(kept_bits & lanes_below(thr, lanes, s));
}

// Greedy walk of one identity: y holds its n unit rows in rank order.
// bits[i] gets the lanes in which face i is kept; `kept` is scratch.
// Candidates go B at a time against the kept faces U at a time.
template <typename I>
FACENMS_INLINE void walk_impl(const float* y, int64_t n, int64_t d, const double* thr,
                              int lanes, uint64_t* bits, int64_t* kept, Prefetcher& pf) {
  constexpr int B = I::B, U = I::U;
  static_assert(U >= B - 1, "the within-block tile needs B - 1 kept slots");
  const uint64_t all = all_lanes(lanes);
  int64_t nk = 0;  // faces kept in at least one lane: the only possible suppressors
  float s[B][U];
  for (int64_t i0 = 0; i0 < n; i0 += B) {
    const int nb = n - i0 < B ? (int)(n - i0) : B;
    uint64_t alive[B];
    int act[B], na = nb;  // candidates still alive in some lane
    for (int b = 0; b < nb; ++b) alive[b] = all, act[b] = b;
    // Against the faces kept before the block, newest first: a near-duplicate
    // sits next to its original in rank order, so it leaves early.
    for (int64_t j = nk; j > 0 && na > 0;) {
      const int m = j < U ? (int)j : U;  // a short last group repeats a row
      const float *k[U], *q[B];
      for (int u = 0; u < U; ++u) k[u] = y + kept[j - 1 - (u < m ? u : 0)] * d;
      for (int r = 0; r < na; ++r) q[r] = y + (i0 + act[r]) * d;
      tile_n<I>(na, q, k, d, s);
      pf.step();
      int w = 0;
      for (int r = 0; r < na; ++r) {
        uint64_t& a = alive[act[r]];
        for (int u = 0; u < m; ++u) suppress(a, bits[kept[j - 1 - u]], s[r][u], thr, lanes);
        if (a) act[w++] = act[r];
      }
      na = w;
      j -= m;
    }
    // Within the block: candidate b against the block's faces 0..b-1, in order.
    if (na > 0 && (na > 1 || act[0] > 0)) {
      const float *k[U], *q[B];
      for (int u = 0; u < U; ++u) k[u] = y + (i0 + (u < nb - 1 ? u : 0)) * d;
      int r = 0;
      for (int t = 0; t < na; ++t)
        if (act[t] > 0) q[r++] = y + (i0 + act[t]) * d;
      tile_n<I>(r, q, k, d, s);
      for (int t = 0, r2 = 0; t < na; ++t) {
        if (act[t] == 0) continue;
        for (int c = 0; c < act[t]; ++c) suppress(alive[act[t]], alive[c], s[r2][c], thr, lanes);
        ++r2;
      }
    }
    for (int b = 0; b < nb; ++b) {
      bits[i0 + b] = alive[b];
      if (alive[b]) kept[nk++] = i0 + b;
    }
  }
}
FACENMS_ISA_VERSIONS(void, walk, walk_impl,
                     (const float* y, int64_t n, int64_t d, const double* thr, int lanes,
                      uint64_t* bits, int64_t* kept, Prefetcher& pf),
                     (y, n, d, thr, lanes, bits, kept, pf))

// Lanes that kept fewer than `need` faces take back their best-ranked
// suppressed faces; then counts[j] += kept faces in lane j.
inline void fill_min_keep(uint64_t* bits, int64_t n, int lanes, int64_t need, int64_t* counts) {
  int64_t cnt[kMaxLanes];
  count_lanes(bits, n, lanes, cnt);
  fill_short_lanes(bits, n, lanes, need, cnt);
  for (int j = 0; j < lanes; ++j) counts[j] += cnt[j];
}

// Calls body(c, tid, prefetcher) for every identity c with faces, largest
// first, on `threads` threads. Each thread claims its next identity before
// working on the current one and prefetches its rows (order[offsets[c']..])
// during the walk.
template <typename T, typename Body>
void for_each_identity(const T* base, int64_t ld, int64_t d, const int64_t* order,
                       const int64_t* offsets, int64_t n_ident, int threads, Body body) {
  std::vector<int64_t> sched;  // largest identities first balances the threads
  sched.reserve(n_ident);
  for (int64_t c = 0; c < n_ident; ++c)
    if (offsets[c + 1] > offsets[c]) sched.push_back(c);
  std::stable_sort(sched.begin(), sched.end(), [&](int64_t u, int64_t v) {
    return offsets[u + 1] - offsets[u] > offsets[v + 1] - offsets[v];
  });
  const int64_t total = (int64_t)sched.size();
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    Prefetcher pf;
    int64_t s = next.fetch_add(1, std::memory_order_relaxed);
    while (s < total) {
      const int64_t s_next = next.fetch_add(1, std::memory_order_relaxed);
      if (s_next < total) {
        const int64_t c = sched[s_next];
        pf.start(reinterpret_cast<const char*>(base), ld * (int64_t)sizeof(T),
                 d * (int64_t)sizeof(T), order + offsets[c], offsets[c + 1] - offsets[c]);
      } else {
        pf.n = 0;
      }
      body(sched[s], tid, pf);
      s = s_next;
    }
  }
}

// The walk of every identity: load(c, tid, y) puts the n unit rows of
// identity c into y in rank order, or returns false to skip it. bits follow
// the rank positions; counts are per lane, or per identity and lane when
// per_identity.
template <typename T, typename Load>
void walk_identities(const Tensor& x, const int64_t* order, const int64_t* offsets,
                     int64_t n_ident, const double* thr, bool per_identity, int lanes,
                     int64_t min_keep, uint64_t* bits, int64_t* counts, Load load) {
  check_cpu_isa();
  const int64_t d = x.size(1);
  const int64_t torch_threads = torch::stable::get_num_threads();
  const int threads = std::max<int64_t>(1, std::min<int64_t>(torch_threads, n_ident));
  std::vector<std::vector<int64_t>> partial(threads, std::vector<int64_t>(per_identity ? 0 : lanes));
  std::vector<std::vector<float>> ys(threads);
  std::vector<std::vector<int64_t>> kepts(threads);
  for_each_identity(x.const_data_ptr<T>(), x.stride(0), d, order, offsets, n_ident, threads,
                    [&](int64_t c, int tid, Prefetcher& pf) {
    const int64_t a = offsets[c], n = offsets[c + 1] - a;
    std::vector<float>& y = ys[tid];
    std::vector<int64_t>& kept = kepts[tid];
    if ((int64_t)y.size() < n * d) y.resize(n * d);
    if ((int64_t)kept.size() < n) kept.resize(n);
    if (!load(c, tid, y.data())) return;
    const double* t = per_identity ? thr + c * lanes : thr;
    walk(y.data(), n, d, t, lanes, bits + a, kept.data(), pf);
    fill_min_keep(bits + a, n, lanes, faces_to_keep(min_keep, n),
                  per_identity ? counts + c * lanes : partial[tid].data());
  });
  if (!per_identity)
    for (const auto& p : partial)
      for (int j = 0; j < lanes; ++j) counts[j] += p[j];
}

// The (bits, counts) outputs of a pass, after checking the thresholds.
inline std::tuple<Tensor, Tensor> nms_outputs(const Tensor& x, const Tensor& order,
                                              const Tensor& offsets, const Tensor& thresholds,
                                              int64_t min_keep, int* lanes) {
  *lanes = check_thresholds(x, thresholds, offsets.numel() - 1, min_keep);
  const double* thr = thresholds.const_data_ptr<double>();
  for (int64_t r = 0; r < thresholds.numel() / *lanes; ++r)
    for (int j = 1; j < *lanes; ++j)
      FACENMS_CHECK(thr[r * *lanes + j - 1] <= thr[r * *lanes + j],
                    "nms: thresholds must be ascending in every row");
  return {torch::stable::new_zeros(order, {order.numel()}),
          torch::stable::new_zeros(order, thresholds.sizes())};
}

}  // namespace
}  // namespace facenms
