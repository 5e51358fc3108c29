// Logic shared by the CPU and CUDA kernels: threshold lanes, scheduling.
// Kept in __host__ __device__ functions so the CPU build (and its tests)
// exercise exactly the code the GPU runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FACENMS_HD __host__ __device__ __forceinline__
#else
#define FACENMS_HD inline
#endif

namespace facenms {

// Up to 64 thresholds run in one pass, one bit of a uint64 per threshold.
constexpr int kMaxLanes = 64;

// Bits 0..p-1 set.
FACENMS_HD uint64_t prefix_mask(int p) {
  return p >= 64 ? ~uint64_t(0) : ((uint64_t(1) << p) - 1);
}

// All lanes of a pass with `lanes` thresholds.
FACENMS_HD uint64_t all_lanes(int lanes) { return prefix_mask(lanes); }

// Lanes j with thr[j] < sim, i.e. the lanes in which a kept face at
// similarity `sim` suppresses. `thr` is ascending, so they form a prefix.
FACENMS_HD uint64_t lanes_below(const double* thr, int lanes, double sim) {
  int lo = 0, hi = lanes;  // count of thresholds < sim, by bisection
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if (thr[mid] < sim) lo = mid + 1; else hi = mid;
  }
  return prefix_mask(lo);
}

// Faces an identity must keep whatever the threshold: min(m, n).
FACENMS_HD int64_t min_keep(int64_t m, int64_t n) { return m < n ? m : n; }

// Pairs the walk of an identity of n faces may compare: its cost estimate,
// used to schedule the largest identities first.
FACENMS_HD int64_t identity_cost(int64_t n) { return n * (n - 1) / 2; }

}  // namespace facenms
