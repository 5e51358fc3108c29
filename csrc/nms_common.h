// Logic shared by the CPU and CUDA kernels: the score rounding and the no-centre
// rule, threshold lanes, scheduling, tiling and the min_keep fill. Kept in
// __host__ __device__ functions so that both backends compile one definition of
// each: CPU/GPU parity depends on them (the GPU's own use is tested on a GPU).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FACENMS_HD __host__ __device__ __forceinline__
#else
#define FACENMS_HD inline
#endif

namespace facenms {

// Up to 64 thresholds run in one pass, one bit of a uint64 per threshold.
constexpr int kMaxLanes = 64;

// Identities of at most this many faces are done by one warp on the GPU,
// similarities and walk fused in shared memory. Larger ones go through
// kTile x kTile similarity tiles and a byte mask in global memory.
constexpr int kWarpMax = 32;
constexpr int kTile = 64;
// Their walk runs in one warp up to this size, in a 256-thread block above.
constexpr int kWalkWideMin = 256;

// An identity whose unit rows sum to less than n * kNoCentre has no centre
// direction (it is rounding noise): every face scores 1 and ranks by index.
// facenms.reference applies the same rule.
constexpr double kNoCentre = 0x1p-32;

// Whether n unit rows whose sum has length cn have a centre direction.
FACENMS_HD bool has_centre(double cn, int64_t n) { return cn > n * kNoCentre; }

// A face's sparsity score, 1 - cos(row, centre), rounded to a multiple of 2**-20 so
// that mathematically tied faces tie bit for bit on every backend.
FACENMS_HD double rounded_score(double dot, double row_norm, double centre_norm) {
  const double s = 1.0 - dot / (row_norm * centre_norm);
  return nearbyint(s * 1048576.0) / 1048576.0;
}

// Bits 0..p-1 set.
FACENMS_HD uint64_t prefix_mask(int p) {
  return p >= 64 ? ~uint64_t(0) : ((uint64_t(1) << p) - 1);
}

// All lanes of a pass with `lanes` thresholds.
FACENMS_HD uint64_t all_lanes(int lanes) { return prefix_mask(lanes); }

// How many thresholds lie strictly below sim, i.e. in how many lanes a kept
// face at similarity `sim` suppresses. `thr` is ascending, so those lanes
// form a prefix. NaN suppresses nowhere.
FACENMS_HD int count_below(const double* thr, int lanes, double sim) {
  int lo = 0, hi = lanes;  // by bisection
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if (thr[mid] < sim) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// The lanes in which a kept face at similarity `sim` suppresses.
FACENMS_HD uint64_t lanes_below(const double* thr, int lanes, double sim) {
  return prefix_mask(count_below(thr, lanes, sim));
}

// Faces an identity must keep whatever the threshold: min(min_keep, n).
FACENMS_HD int64_t faces_to_keep(int64_t min_keep, int64_t n) { return min_keep < n ? min_keep : n; }

FACENMS_HD int lowest_bit(uint64_t v) {  // v != 0
#if defined(__CUDA_ARCH__)
  return __ffsll((long long)v) - 1;
#else
  return __builtin_ctzll(v);
#endif
}

// cnt[j] = faces kept in lane j, for j < lanes.
FACENMS_HD void count_lanes(const uint64_t* bits, int64_t n, int lanes, int64_t* cnt) {
  for (int j = 0; j < lanes; ++j) cnt[j] = 0;
  for (int64_t i = 0; i < n; ++i)
    for (uint64_t b = bits[i]; b; b &= b - 1) ++cnt[lowest_bit(b)];
}

// Lanes that kept fewer than `need` faces take back their best-ranked
// suppressed faces (bits in rank order) until they have `need`; cnt is
// updated.
FACENMS_HD void fill_short_lanes(uint64_t* bits, int64_t n, int lanes, int64_t need,
                                 int64_t* cnt) {
  uint64_t short_lanes = 0;
  for (int j = 0; j < lanes; ++j)
    if (cnt[j] < need) short_lanes |= uint64_t(1) << j;
  for (int64_t i = 0; i < n && short_lanes; ++i) {
    const uint64_t add = short_lanes & ~bits[i];
    bits[i] |= add;
    for (uint64_t b = add; b; b &= b - 1) {
      const int j = lowest_bit(b);
      if (++cnt[j] >= need) short_lanes &= ~(uint64_t(1) << j);
    }
  }
}

// ---- tiling of identities larger than kWarpMax ---------------------------
// An identity of n faces is cut into blocks of kTile faces; tile (kb, mb)
// holds the similarities of suppressor block kb with candidate block mb,
// kb <= mb (only earlier faces suppress). Its byte mask is a square of side
// mask_side(n): byte [k][m] (k < m) = count_below(sim(k, m)).

FACENMS_HD bool is_large(int64_t n) { return n > kWarpMax; }
FACENMS_HD int64_t tile_blocks(int64_t n) { return (n + kTile - 1) / kTile; }
FACENMS_HD int64_t mask_side(int64_t n) { return is_large(n) ? tile_blocks(n) * kTile : 0; }
FACENMS_HD int64_t mask_bytes(int64_t n) { return mask_side(n) * mask_side(n); }

// The tile table of a pass holds one int64 per tile: the identity's position
// s in the schedule and the tile's blocks (kb, mb). Identities of one pass
// take consecutive entries, mb-major within one (kb = 0..mb for mb = 0..).
// 16 bits per block index: identities up to kMaxTiledFaces faces (their
// byte mask alone would be 16 TiB).
constexpr int64_t kMaxTiledFaces = int64_t(1) << 22;
FACENMS_HD int64_t tile_pack(int64_t s, int64_t kb, int64_t mb) {
  return (s << 32) | (kb << 16) | mb;
}
FACENMS_HD void tile_unpack(int64_t v, int64_t* s, int64_t* kb, int64_t* mb) {
  *s = v >> 32;
  *kb = (v >> 16) & 0xffff;
  *mb = v & 0xffff;
}
// Byte offset of tile (kb, mb)'s (0, 0) entry in its identity's mask.
FACENMS_HD int64_t tile_mask_offset(int64_t n, int64_t kb, int64_t mb) {
  return kb * kTile * mask_side(n) + mb * kTile;
}

}  // namespace facenms
