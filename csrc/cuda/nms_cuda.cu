// facenms::nms on CUDA. No similarity matrix is ever written as floats:
//
//  1. row_inv_kernel: 1/||x|| of every face (float64 sum, as on the CPU).
//  2. Identities of <= kWarpMax faces (the vast majority): one warp each,
//     fused. The warp stages its rows in shared memory a chunk of columns at
//     a time, builds the n x n similarities in registers, parks them in
//     shared memory and walks them greedily, one face per step, all 64
//     threshold lanes at once (a uint64 per face). min_keep and the counts
//     are warp ballots. Warps take identities largest first, round robin.
//  3. Larger identities: tile_kernel computes kTile x kTile similarity tiles
//     (suppressor block kb <= candidate block mb) and stores, per pair, one
//     byte: how many thresholds lie below the similarity. walk_kernel then
//     walks each identity on the device, one block per identity: when face i
//     is kept (in some lane), every later face m ORs `lanes(i) & below(i, m)`
//     into its suppressed set, reading row i of the byte mask (coalesced).
//     That is torchvision's NMS scheme with 64 lanes instead of one.
//
// The schedule (identities by size, tiles, mask slots) comes from make_plan,
// shared with the CPU build so it is tested there.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <mma.h>

#include <algorithm>
#include <type_traits>

#include "../checks.h"
#include "../nms_common.h"
#include "../nms_plan.h"
#include "cuda_common.cuh"

namespace facenms {
namespace {

using cuda::kFullMask;
using cuda::to_float;
using u64 = unsigned long long;  // the type shuffles and atomics take

// ---------------------------------------------------------------- norms ----

// inv[p] = 1 / ||x[order[p]]|| as the CPU computes it: float elements,
// float64 sum of squares, rounded to float; 0 for a zero or non-finite row.
template <typename scalar_t>
__global__ void row_inv_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d,
                               const int64_t* __restrict__ order, int64_t n,
                               float* __restrict__ inv) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t p = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); p < n;
       p += warps) {
    const scalar_t* row = x + order[p] * ld;
    double ss = 0;
    for (int64_t k = lane; k < d; k += 32) {
      const double v = to_float(row[k]);
      ss += v * v;
    }
    ss = cuda::warp_sum(ss);
    if (lane == 0) inv[p] = ss > 0 ? static_cast<float>(1.0 / sqrt(ss)) : 0.f;
  }
}

// ------------------------------------------------- small identities ----

constexpr int kSmallWarps = 4;  // warps per block, each on its own identity
constexpr int kCols = 32;       // columns staged per step (SIMT kernels)

// After a warp's walk (face `lane` kept in lanes b): min_keep, where a short
// lane takes back its best-ranked suppressed faces, then the counts: per
// identity, or accumulated per warp (lanes `lane` and `lane + 32`).
__device__ __forceinline__ void finish_warp_identity(uint64_t& b, int n, int lane, int64_t c,
                                                     int lanes, int64_t min_keep_arg,
                                                     bool per_ident, int64_t* counts,
                                                     u64& cnt_lo, u64& cnt_hi) {
  const int64_t need = min_keep(min_keep_arg, n);
  for (int j = 0; j < lanes; ++j) {
    const bool on = (b >> j) & 1;
    int cnt = __popc(__ballot_sync(kFullMask, on));
    if (cnt < need) {
      const unsigned miss = __ballot_sync(kFullMask, lane < n && !on);
      const int before = __popc(miss & ((1u << lane) - 1u));
      if (lane < n && !on && before < need - cnt) b |= uint64_t(1) << j;
      cnt = (int)need;
    }
    if (per_ident) {
      if (lane == 0) counts[c * lanes + j] = cnt;
    } else if (lane == (j & 31)) {
      if (j < 32) cnt_lo += cnt; else cnt_hi += cnt;
    }
  }
}

// One atomic per lane and warp for the whole kernel.
__device__ __forceinline__ void flush_warp_counts(bool per_ident, int lane, int lanes,
                                                  int64_t* counts, u64 cnt_lo, u64 cnt_hi) {
  if (per_ident) return;
  if (lane < lanes && cnt_lo) atomicAdd(reinterpret_cast<u64*>(counts) + lane, cnt_lo);
  if (lane + 32 < lanes && cnt_hi) atomicAdd(reinterpret_cast<u64*>(counts) + lane + 32, cnt_hi);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSmallWarps * 32)
    small_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d, bool /*pairs*/,
                 const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                 const int64_t* __restrict__ sched, int64_t s_begin, int64_t s_end,
                 const float* __restrict__ inv, const double* __restrict__ thr, bool per_ident,
                 int lanes, int64_t min_keep_arg, int64_t* __restrict__ bits,
                 int64_t* __restrict__ counts) {
  // y: unit rows, a chunk of columns; afterwards reused for the similarities.
  __shared__ float s_y[kSmallWarps][kWarpMax][kCols + 1];
  __shared__ double s_thr[kSmallWarps][kMaxLanes];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float(*y)[kCols + 1] = s_y[w];
  double* sthr = s_thr[w];
  const uint64_t all = all_lanes(lanes);
  u64 cnt_lo = 0, cnt_hi = 0;  // totals of lanes `lane` and `lane + 32`

  const int64_t nw = (int64_t)gridDim.x * kSmallWarps;
  for (int64_t s = s_begin + (int64_t)blockIdx.x * kSmallWarps + w; s < s_end; s += nw) {
    const int64_t c = sched[s], a = offsets[c];
    const int n = (int)(offsets[c + 1] - a);  // 0 <= n <= kWarpMax
    if (n == 0) continue;
    __syncwarp();
    const double* t = per_ident ? thr + c * lanes : thr;
    for (int j = lane; j < lanes; j += 32) sthr[j] = t[j];
    const int64_t my_row = lane < n ? order[a + lane] : 0;
    const float my_inv = lane < n ? inv[a + lane] : 0.f;

    // acc[k] = <y_lane, y_k>, built a chunk of columns at a time.
    float acc[kWarpMax];
#pragma unroll
    for (int k = 0; k < kWarpMax; ++k) acc[k] = 0.f;
    for (int64_t c0 = 0; c0 < d; c0 += kCols) {
      const int64_t col = c0 + lane;
      __syncwarp();
#pragma unroll 4
      for (int r = 0; r < n; ++r) {
        const int64_t row = __shfl_sync(kFullMask, my_row, r);
        const float ir = __shfl_sync(kFullMask, my_inv, r);
        y[r][lane] = col < d ? to_float(x[row * ld + col]) * ir : 0.f;
      }
      __syncwarp();
      const int cw = d - c0 < kCols ? (int)(d - c0) : kCols;
      for (int cc = 0; cc < cw; ++cc) {
        const float v = y[lane][cc];
#pragma unroll
        for (int g = 0; g < kWarpMax; g += 8) {
          if (g < n) {
#pragma unroll
            for (int k = g; k < g + 8; ++k) acc[k] = fmaf(v, y[k][cc], acc[k]);
          }
        }
      }
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < kWarpMax; ++k) y[lane][k] = acc[k];  // y[m][i] = sim(m, i)
    __syncwarp();

    // Greedy walk: step i publishes face i's lanes; later faces take them.
    uint64_t supp = 0;
    for (int i = 0; i < n; ++i) {
      const uint64_t bi = all & ~(uint64_t)__shfl_sync(kFullMask, (u64)supp, i);
      if (bi == 0) continue;  // suppressed everywhere: suppresses nothing
      if (lane > i && lane < n) supp |= bi & lanes_below(sthr, lanes, (double)y[lane][i]);
    }
    uint64_t b = lane < n ? all & ~supp : 0;

    finish_warp_identity(b, n, lane, c, lanes, min_keep_arg, per_ident, counts, cnt_lo, cnt_hi);
    if (lane < n) bits[a + lane] = (int64_t)b;
  }
  flush_warp_counts(per_ident, lane, lanes, counts, cnt_lo, cnt_hi);
}

// ------------------------------------------------- large identities ----

constexpr int kTileThreads = 128;

// One kTile x kTile tile per step: suppressors k of block kb against
// candidates m of block mb; mask[k][m] = thresholds below sim(k, m), k < m.
template <typename scalar_t>
__global__ void __launch_bounds__(kTileThreads)
    tile_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d, bool /*pairs*/,
                const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                const int64_t* __restrict__ sched, const int64_t* __restrict__ sizes,
                const int64_t* __restrict__ tile_cum, const int64_t* __restrict__ mask_base,
                int64_t n_large, int64_t n_tiles, const float* __restrict__ inv,
                const double* __restrict__ thr, bool per_ident, int lanes,
                uint8_t* __restrict__ mask) {
  __shared__ float s_a[kTile][kCols + 1], s_b[kTile][kCols + 1];
  __shared__ int64_t s_row[2][kTile];
  __shared__ float s_inv[2][kTile];
  __shared__ double s_thr[kMaxLanes];
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;  // 4 rows x 8 columns each

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const int64_t s = upper_bound(tile_cum, n_large, t);
    const int64_t c = sched[s], n = sizes[s], a = offsets[c];
    int64_t kb, mb;
    tile_decode(t - (s ? tile_cum[s - 1] : 0), &kb, &mb);
    __syncthreads();  // the previous tile is done with shared memory
    {
      const int h = tid / kTile, r = tid % kTile;  // h = 0: block kb, 1: block mb
      const int64_t f = (h ? mb : kb) * kTile + r;
      s_row[h][r] = f < n ? order[a + f] : -1;
      s_inv[h][r] = f < n ? inv[a + f] : 0.f;
    }
    const double* tt = per_ident ? thr + c * lanes : thr;
    for (int j = tid; j < lanes; j += kTileThreads) s_thr[j] = tt[j];
    __syncthreads();

    float acc[4][8];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[r][j] = 0.f;
    for (int64_t c0 = 0; c0 < d; c0 += kCols) {
#pragma unroll 4
      for (int q = 0; q < 2 * kTile * kCols / kTileThreads; ++q) {
        const int e = tid + q * kTileThreads;
        const int h = e / (kTile * kCols), r = (e / kCols) % kTile, col = e % kCols;
        const int64_t row = s_row[h][r];
        const float v = (row >= 0 && c0 + col < d)
                            ? to_float(x[row * ld + c0 + col]) * s_inv[h][r] : 0.f;
        (h ? s_b : s_a)[r][col] = v;
      }
      __syncthreads();
#pragma unroll 8
      for (int cc = 0; cc < kCols; ++cc) {
        float av[4], bv[8];
#pragma unroll
        for (int r = 0; r < 4; ++r) av[r] = s_a[ty * 4 + r][cc];
#pragma unroll
        for (int j = 0; j < 8; ++j) bv[j] = s_b[tx + 8 * j][cc];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[r][j] = fmaf(av[r], bv[j], acc[r][j]);
      }
      __syncthreads();
    }
    const int64_t side = mask_side(n);
    uint8_t* out = mask + mask_base[s];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t k = kb * kTile + ty * 4 + r;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int64_t m = mb * kTile + tx + 8 * j;
        if (k < m && m < n)
          out[k * side + m] = (uint8_t)count_below(s_thr, lanes, (double)acc[r][j]);
      }
    }
  }
}

// Suppressed sets in shared memory up to this many faces: with the static
// counters the block stays under the 48 KiB that needs no opt-in.
constexpr int64_t kWalkSmemFaces = 5888;

// One block per large identity: the greedy walk over its byte mask. Blocks
// of one warp for identities up to kWalkWideMin faces (a barrier per kept
// face is then nearly free), of 256 threads above.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    walk_kernel(const int64_t* __restrict__ offsets, const int64_t* __restrict__ sched,
                const int64_t* __restrict__ sizes, const int64_t* __restrict__ mask_base,
                int64_t s_begin, int64_t s_end, const uint8_t* __restrict__ mask, bool per_ident,
                int lanes, int64_t min_keep_arg, int64_t smem_faces, int64_t* __restrict__ bits,
                int64_t* __restrict__ counts) {
  extern __shared__ uint64_t s_supp[];
  __shared__ unsigned long long s_cnt[kMaxLanes];
  __shared__ int s_short;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint64_t all = all_lanes(lanes);

  for (int64_t s = s_begin + blockIdx.x; s < s_end; s += gridDim.x) {
    const int64_t c = sched[s], n = sizes[s], a = offsets[c], side = mask_side(n);
    const uint8_t* P = mask + mask_base[s];
    uint64_t* out = reinterpret_cast<uint64_t*>(bits + a);
    // Suppressed sets live in shared memory, or for huge identities in the
    // output itself (each thread touches its own faces between barriers).
    uint64_t* supp = n <= smem_faces ? s_supp : out;
    __syncthreads();
    for (int64_t m = tid; m < n; m += kThreads) supp[m] = 0;
    for (int j = tid; j < kMaxLanes; j += kThreads) s_cnt[j] = 0;
    __syncthreads();
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t b = all & ~supp[i];  // final: every earlier face has pushed
      if (b == 0) continue;               // same value in every thread
      const uint8_t* row = P + i * side;
      for (int64_t m = i + 1 + tid; m < n; m += kThreads) {
        const int p = row[m];
        if (p) supp[m] |= b & prefix_mask(p);
      }
      __syncthreads();
    }
    __syncthreads();
    // Kept sets and per-lane counts (one ballot per lane and 32 faces).
    for (int64_t m0 = (int64_t)warp * 32; m0 < n; m0 += kThreads) {
      const int64_t m = m0 + lane;
      const uint64_t b = m < n ? all & ~supp[m] : 0;
      if (m < n) out[m] = b;
      for (int j = 0; j < lanes; ++j) {
        const unsigned bal = __ballot_sync(kFullMask, (b >> j) & 1);
        if (lane == 0 && bal) atomicAdd(&s_cnt[j], (unsigned long long)__popc(bal));
      }
    }
    __syncthreads();
    const int64_t need = min_keep(min_keep_arg, n);
    if (tid == 0) {
      s_short = 0;
      for (int j = 0; j < lanes; ++j) s_short |= (int64_t)s_cnt[j] < need;
      if (s_short) {  // rare (min_keep > 1): one thread, in rank order
        int64_t cnt[kMaxLanes];
        for (int j = 0; j < lanes; ++j) cnt[j] = (int64_t)s_cnt[j];
        fill_short_lanes(out, n, lanes, need, cnt);
        for (int j = 0; j < lanes; ++j) s_cnt[j] = (unsigned long long)cnt[j];
      }
    }
    __syncthreads();
    for (int j = tid; j < lanes; j += kThreads) {
      if (per_ident) counts[c * lanes + j] = (int64_t)s_cnt[j];
      else atomicAdd(reinterpret_cast<u64*>(counts) + j, (u64)s_cnt[j]);
    }
  }
}

// ------------------------------------------------ tensor-core variants ----
// fp16/bf16 input: the raw rows go through WMMA (fp32 accumulate; products
// of 16-bit floats are exact), then each similarity is scaled by the two
// inverse norms. (bf16 rows with norms beyond ~1e19 would overflow float32
// here; real embeddings are nowhere near.)

template <typename T>
struct TcType { static constexpr bool ok = false; using type = void; };
template <>
struct TcType<c10::Half> { static constexpr bool ok = true; using type = __half; };
template <>
struct TcType<c10::BFloat16> { static constexpr bool ok = true; using type = __nv_bfloat16; };

constexpr int kTcCols = 64;         // columns staged per step
constexpr int kTcLd = kTcCols + 8;  // padded rows: 32-byte aligned fragments, fewer conflicts

using AccFrag = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

// acc[i][j] += rows 16i.. x rows 16j.. of y over one chunk of kTcCols
// columns, for the NF x NF fragments that hold faces (compile-time indices
// keep the fragments in registers).
template <typename T, int NF>
__device__ __forceinline__ void warp_gram_chunk(const uint16_t (*y)[kTcLd], AccFrag (&acc)[2][2]) {
  namespace wmma = nvcuda::wmma;
#pragma unroll
  for (int kk = 0; kk < kTcCols; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[NF];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[NF];
#pragma unroll
    for (int i = 0; i < NF; ++i) {
      wmma::load_matrix_sync(fa[i], reinterpret_cast<const T*>(&y[16 * i][kk]), kTcLd);
      wmma::load_matrix_sync(fb[i], reinterpret_cast<const T*>(&y[16 * i][kk]), kTcLd);
    }
#pragma unroll
    for (int i = 0; i < NF; ++i)
#pragma unroll
      for (int j = 0; j < NF; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
  }
}

template <int NF>
__device__ __forceinline__ void warp_gram_store(float (*g)[kWarpMax + 4], AccFrag (&acc)[2][2]) {
#pragma unroll
  for (int i = 0; i < NF; ++i)
#pragma unroll
    for (int j = 0; j < NF; ++j)
      nvcuda::wmma::store_matrix_sync(&g[16 * i][16 * j], acc[i][j], kWarpMax + 4,
                                      nvcuda::wmma::mem_row_major);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSmallWarps * 32)
    small_tc_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d, bool pairs,
                    const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                    const int64_t* __restrict__ sched, int64_t s_begin, int64_t s_end,
                    const float* __restrict__ inv, const double* __restrict__ thr,
                    bool per_ident, int lanes, int64_t min_keep_arg, int64_t* __restrict__ bits,
                    int64_t* __restrict__ counts) {
  using T = typename TcType<scalar_t>::type;
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) uint16_t s_y[kSmallWarps][kWarpMax][kTcLd];
  __shared__ __align__(32) float s_g[kSmallWarps][kWarpMax][kWarpMax + 4];
  __shared__ double s_thr[kSmallWarps][kMaxLanes];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint16_t(*y)[kTcLd] = s_y[w];
  float(*g)[kWarpMax + 4] = s_g[w];
  double* sthr = s_thr[w];
  const uint16_t* xb = reinterpret_cast<const uint16_t*>(x);  // raw 16-bit patterns
  const uint64_t all = all_lanes(lanes);
  u64 cnt_lo = 0, cnt_hi = 0;

  const int64_t nw = (int64_t)gridDim.x * kSmallWarps;
  for (int64_t s = s_begin + (int64_t)blockIdx.x * kSmallWarps + w; s < s_end; s += nw) {
    const int64_t c = sched[s], a = offsets[c];
    const int n = (int)(offsets[c + 1] - a);
    if (n == 0) continue;
    __syncwarp();
    const double* t = per_ident ? thr + c * lanes : thr;
    for (int j = lane; j < lanes; j += 32) sthr[j] = t[j];
    const int64_t my_row = lane < n ? order[a + lane] : 0;
    const float my_inv = lane < n ? inv[a + lane] : 0.f;
    const int nf = n > 16 ? 2 : 1;  // 16 x 16 fragments that hold faces

    AccFrag acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    for (int64_t c0 = 0; c0 < d; c0 += kTcCols) {
      __syncwarp();
      if (pairs) {  // two elements per 32-bit load: 128 bytes per warp and row
        const int64_t col = c0 + 2 * lane;
#pragma unroll 4
        for (int r = 0; r < n; ++r) {
          const int64_t row = __shfl_sync(kFullMask, my_row, r);
          *reinterpret_cast<uint32_t*>(&y[r][2 * lane]) =
              col < d ? *reinterpret_cast<const uint32_t*>(xb + row * ld + col) : 0u;
        }
      } else {
        const int64_t col = c0 + lane;
#pragma unroll 4
        for (int r = 0; r < n; ++r) {
          const int64_t row = __shfl_sync(kFullMask, my_row, r);
          y[r][lane] = col < d ? xb[row * ld + col] : uint16_t(0);  // +0.0 in fp16 and bf16
          y[r][lane + 32] = col + 32 < d ? xb[row * ld + col + 32] : uint16_t(0);
        }
      }
      __syncwarp();
      if (nf == 2) warp_gram_chunk<T, 2>(y, acc); else warp_gram_chunk<T, 1>(y, acc);
    }
    __syncwarp();
    if (nf == 2) warp_gram_store<2>(g, acc); else warp_gram_store<1>(g, acc);
    __syncwarp();

    uint64_t supp = 0;
    for (int i = 0; i < n; ++i) {
      const uint64_t bi = all & ~(uint64_t)__shfl_sync(kFullMask, (u64)supp, i);
      const float inv_i = __shfl_sync(kFullMask, my_inv, i);
      if (bi == 0) continue;
      if (lane > i && lane < n)
        supp |= bi & lanes_below(sthr, lanes, (double)((g[lane][i] * my_inv) * inv_i));
    }
    uint64_t b = lane < n ? all & ~supp : 0;
    finish_warp_identity(b, n, lane, c, lanes, min_keep_arg, per_ident, counts, cnt_lo, cnt_hi);
    if (lane < n) bits[a + lane] = (int64_t)b;
  }
  flush_warp_counts(per_ident, lane, lanes, counts, cnt_lo, cnt_hi);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTileThreads)
    tile_tc_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d, bool pairs,
                   const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
                   const int64_t* __restrict__ sched, const int64_t* __restrict__ sizes,
                   const int64_t* __restrict__ tile_cum, const int64_t* __restrict__ mask_base,
                   int64_t n_large, int64_t n_tiles, const float* __restrict__ inv,
                   const double* __restrict__ thr, bool per_ident, int lanes,
                   uint8_t* __restrict__ mask) {
  using T = typename TcType<scalar_t>::type;
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) uint16_t s_a[kTile][kTcLd];
  __shared__ __align__(32) uint16_t s_b[kTile][kTcLd];
  __shared__ __align__(32) float s_c[kTile][kTile + 4];
  __shared__ int64_t s_row[2][kTile];
  __shared__ float s_inv[2][kTile];
  __shared__ double s_thr[kMaxLanes];
  const int tid = threadIdx.x, warp = tid >> 5, wy = warp >> 1, wx = warp & 1;
  const uint16_t* xb = reinterpret_cast<const uint16_t*>(x);

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const int64_t s = upper_bound(tile_cum, n_large, t);
    const int64_t c = sched[s], n = sizes[s], a = offsets[c];
    int64_t kb, mb;
    tile_decode(t - (s ? tile_cum[s - 1] : 0), &kb, &mb);
    const bool diag = kb == mb;  // one block of rows serves both operands
    __syncthreads();
    {
      const int h = tid / kTile, r = tid % kTile;
      const int64_t f = (h ? mb : kb) * kTile + r;
      s_row[h][r] = f < n ? order[a + f] : -1;
      s_inv[h][r] = f < n ? inv[a + f] : 0.f;
    }
    const double* tt = per_ident ? thr + c * lanes : thr;
    for (int j = tid; j < lanes; j += kTileThreads) s_thr[j] = tt[j];
    __syncthreads();

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    const uint16_t(*sb)[kTcLd] = diag ? s_a : s_b;
    const int loads = (diag ? 1 : 2) * kTile * kTcCols / kTileThreads / (pairs ? 2 : 1);
    for (int64_t c0 = 0; c0 < d; c0 += kTcCols) {
      if (pairs) {  // two elements per 32-bit load
        constexpr int kHalf = kTcCols / 2;
#pragma unroll 8
        for (int q = 0; q < loads; ++q) {
          const int e = tid + q * kTileThreads;
          const int h = e / (kTile * kHalf), r = (e / kHalf) % kTile, col = 2 * (e % kHalf);
          const int64_t row = s_row[h][r];
          *reinterpret_cast<uint32_t*>(&(h ? s_b : s_a)[r][col]) =
              (row >= 0 && c0 + col < d)
                  ? *reinterpret_cast<const uint32_t*>(xb + row * ld + c0 + col) : 0u;
        }
      } else {
#pragma unroll 8
        for (int q = 0; q < loads; ++q) {
          const int e = tid + q * kTileThreads;
          const int h = e / (kTile * kTcCols), r = (e / kTcCols) % kTile, col = e % kTcCols;
          const int64_t row = s_row[h][r];
          (h ? s_b : s_a)[r][col] =
              (row >= 0 && c0 + col < d) ? xb[row * ld + c0 + col] : uint16_t(0);
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTcCols; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          wmma::load_matrix_sync(fa[i], reinterpret_cast<const T*>(&s_a[wy * 32 + 16 * i][kk]),
                                 kTcLd);
          wmma::load_matrix_sync(fb[i], reinterpret_cast<const T*>(&sb[wx * 32 + 16 * i][kk]),
                                 kTcLd);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(&s_c[wy * 32 + 16 * i][wx * 32 + 16 * j], acc[i][j], kTile + 4,
                                wmma::mem_row_major);
    __syncthreads();
    const int64_t side = mask_side(n);
    uint8_t* out = mask + mask_base[s];
    for (int e = tid; e < kTile * kTile; e += kTileThreads) {
      const int kl = e / kTile, ml = e % kTile;  // consecutive threads: consecutive bytes
      const int64_t k = kb * kTile + kl, m = mb * kTile + ml;
      if (k < m && m < n)
        out[k * side + m] = (uint8_t)count_below(
            s_thr, lanes, (double)((s_c[kl][ml] * s_inv[0][kl]) * s_inv[diag ? 0 : 1][ml]));
    }
  }
}

// fp16/bf16 similarities on tensor cores; fp32/fp64 in float32 FMAs.
template <typename scalar_t>
auto small_kernel_for() {
  if constexpr (TcType<scalar_t>::ok) return small_tc_kernel<scalar_t>;
  else return small_kernel<scalar_t>;
}
template <typename scalar_t>
auto tile_kernel_for() {
  if constexpr (TcType<scalar_t>::ok) return tile_tc_kernel<scalar_t>;
  else return tile_kernel<scalar_t>;
}

// ------------------------------------------------------------------ op ----

int sm_count() { return cuda::sm_count(); }

unsigned grid_for(int64_t work, int64_t per_block, int64_t cap) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((work + per_block - 1) / per_block, cap));
}

std::tuple<at::Tensor, at::Tensor> nms_cuda(const at::Tensor& x, const at::Tensor& order,
                                            const at::Tensor& offsets,
                                            const at::Tensor& thresholds, int64_t min_per_identity) {
  check_inputs(x, order, offsets, "nms");
  TORCH_CHECK(x.is_cuda(), "nms: expected CUDA tensors, got ", x.device());
  const int64_t n_ident = offsets.numel() - 1;
  const int lanes = check_thresholds(x, thresholds, n_ident, min_per_identity);
  const bool per_ident = thresholds.dim() == 2;
  c10::cuda::CUDAGuard guard(x.device());
  if (lanes > 1 && thresholds.numel() > 0)
    TORCH_CHECK(at::all(thresholds.narrow(-1, 1, lanes - 1) >=
                        thresholds.narrow(-1, 0, lanes - 1)).item<bool>(),
                "nms: thresholds must be ascending in every row");

  auto bits = at::zeros({order.numel()}, order.options());
  auto counts = at::zeros(thresholds.sizes(), order.options());
  const int64_t n = order.numel();
  if (n_ident == 0 || n == 0) return {bits, counts};

  const NmsPlan plan = make_plan(offsets);
  const int64_t d = x.size(1), ld = x.stride(0);
  const int sms = sm_count();
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto inv = at::empty({n}, x.options().dtype(at::kFloat));
  at::Tensor mask;
  if (plan.n_large > 0) mask = at::empty({plan.mask_total}, x.options().dtype(at::kByte));
  const double* thr = thresholds.data_ptr<double>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nms_cuda", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* op = order.data_ptr<int64_t>();
    const int64_t* offp = offsets.data_ptr<int64_t>();
    // 16-bit rows that start on 4-byte boundaries with an even length are
    // read two elements at a time.
    const bool pairs = sizeof(scalar_t) == 2 && ld % 2 == 0 && d % 2 == 0 &&
                       reinterpret_cast<uintptr_t>(xp) % 4 == 0;
    row_inv_kernel<scalar_t><<<grid_for(n, 8, (int64_t)sms * 32), 256, 0, stream>>>(
        xp, ld, d, op, n, inv.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (plan.n_large < n_ident) {
      auto kernel = small_kernel_for<scalar_t>();
      kernel<<<grid_for(n_ident - plan.n_large, kSmallWarps, (int64_t)sms * 16),
               kSmallWarps * 32, 0, stream>>>(
          xp, ld, d, pairs, op, offp, plan.sched.data_ptr<int64_t>(), plan.n_large, n_ident,
          inv.data_ptr<float>(), thr, per_ident, lanes, min_per_identity,
          bits.data_ptr<int64_t>(), counts.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (plan.n_large > 0) {
      auto tiles = tile_kernel_for<scalar_t>();
      tiles<<<grid_for(plan.n_tiles, 1, (int64_t)1 << 30), kTileThreads, 0, stream>>>(
          xp, ld, d, pairs, op, offp, plan.sched.data_ptr<int64_t>(),
          plan.sizes.data_ptr<int64_t>(),
          plan.tile_cum.data_ptr<int64_t>(), plan.mask_base.data_ptr<int64_t>(), plan.n_large,
          plan.n_tiles, inv.data_ptr<float>(), thr, per_ident, lanes,
          mask.data_ptr<uint8_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // The widest identities first (one 256-thread block each), then the
      // rest of the large ones (one warp each).
      if (plan.n_wide > 0) {
        const int64_t smem_faces = std::min(plan.max_size, kWalkSmemFaces);
        walk_kernel<256><<<grid_for(plan.n_wide, 1, (int64_t)sms * 8), 256,
                           smem_faces * sizeof(uint64_t), stream>>>(
            offp, plan.sched.data_ptr<int64_t>(), plan.sizes.data_ptr<int64_t>(),
            plan.mask_base.data_ptr<int64_t>(), 0, plan.n_wide, mask.data_ptr<uint8_t>(),
            per_ident, lanes, min_per_identity, smem_faces, bits.data_ptr<int64_t>(),
            counts.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (plan.n_wide < plan.n_large) {
        const int64_t smem_faces = kWalkWideMin;
        walk_kernel<32><<<grid_for(plan.n_large - plan.n_wide, 1, (int64_t)sms * 32), 32,
                          smem_faces * sizeof(uint64_t), stream>>>(
            offp, plan.sched.data_ptr<int64_t>(), plan.sizes.data_ptr<int64_t>(),
            plan.mask_base.data_ptr<int64_t>(), plan.n_wide, plan.n_large,
            mask.data_ptr<uint8_t>(), per_ident, lanes, min_per_identity, smem_faces,
            bits.data_ptr<int64_t>(), counts.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return {bits, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CUDA, m) { m.impl("nms", &nms_cuda); }

}  // namespace facenms
