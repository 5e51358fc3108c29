// nms on CUDA for identities of at most kWarpMax faces (the vast majority):
// one warp each, fused. The warp stages its rows in shared memory a chunk of
// columns at a time, builds the n x n similarities in registers (or on
// tensor cores for 16-bit rows), parks them in shared memory and walks them
// greedily, one face per step, all 64 threshold lanes at once (a uint64 per
// face). min_keep and the counts are warp ballots. Warps take identities
// largest first, round robin.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>

#include "cuda/nms_cuda.cuh"

namespace facenms {
namespace cuda {
namespace {

constexpr int kSmallWarps = 4;  // warps per block, each on its own identity
constexpr int kCols = 32;       // columns staged per step (SIMT kernel)

// The start of every warp's identity: where it is, its thresholds in
// shared memory and, in lane i < n, face i's row and inverse norm.
struct WarpIdentity {
  int64_t c, a;
  int n;
  int64_t my_row;
  float my_inv;
};

__device__ __forceinline__ WarpIdentity warp_identity(const NmsParams& p, int64_t s, int lane,
                                                      double* sthr) {
  WarpIdentity w;
  w.c = p.sched[s];
  w.a = p.offsets[w.c];
  w.n = (int)(p.offsets[w.c + 1] - w.a);  // 0 <= n <= kWarpMax
  if (w.n == 0) return w;
  __syncwarp();  // the previous identity is done with sthr
  const double* t = p.per_ident ? p.thr + w.c * p.lanes : p.thr;
  for (int j = lane; j < p.lanes; j += 32) sthr[j] = t[j];
  w.my_row = lane < w.n ? p.order[w.a + lane] : 0;
  w.my_inv = lane < w.n ? p.inv[w.a + lane] : 0.f;
  __syncwarp();
  return w;
}

// After a warp's walk (face `lane` kept in lanes b): min_keep, where a short
// lane takes back its best-ranked suppressed faces, then the bits and the
// counts: per identity, or accumulated per warp (lanes `lane`, `lane + 32`).
__device__ __forceinline__ void finish_warp_identity(const NmsParams& p, const WarpIdentity& w,
                                                     uint64_t b, int lane, u64& cnt_lo,
                                                     u64& cnt_hi) {
  const int64_t need = faces_to_keep(p.min_keep, w.n);
  for (int j = 0; j < p.lanes; ++j) {
    const bool on = (b >> j) & 1;
    int cnt = __popc(__ballot_sync(kFullMask, on));
    if (cnt < need) {
      const unsigned miss = __ballot_sync(kFullMask, lane < w.n && !on);
      const int before = __popc(miss & ((1u << lane) - 1u));
      if (lane < w.n && !on && before < need - cnt) b |= uint64_t(1) << j;
      cnt = (int)need;
    }
    if (p.per_ident) {
      if (lane == 0) p.counts[w.c * p.lanes + j] = cnt;
    } else if (lane == (j & 31)) {
      if (j < 32) cnt_lo += cnt; else cnt_hi += cnt;
    }
  }
  if (lane < w.n) p.bits[w.a + lane] = (int64_t)b;
}

// One atomic per lane and warp for the whole kernel.
__device__ __forceinline__ void flush_warp_counts(const NmsParams& p, int lane, u64 cnt_lo,
                                                  u64 cnt_hi) {
  if (p.per_ident) return;
  u64* counts = reinterpret_cast<u64*>(p.counts);
  if (lane < p.lanes && cnt_lo) atomicAdd(counts + lane, cnt_lo);
  if (lane + 32 < p.lanes && cnt_hi) atomicAdd(counts + lane + 32, cnt_hi);
}

// Greedy walk over sim(lane, i) = sim(i): step i publishes face i's lanes;
// later faces take them. Returns face `lane`'s kept lanes.
template <typename Sim>
__device__ __forceinline__ uint64_t warp_walk(const WarpIdentity& w, int lane, int lanes,
                                              const double* sthr, Sim sim) {
  const uint64_t all = all_lanes(lanes);
  uint64_t supp = 0;
  for (int i = 0; i < w.n; ++i) {
    const uint64_t bi = all & ~(uint64_t)__shfl_sync(kFullMask, (u64)supp, i);
    const float v = sim(i);  // every lane takes part (sim may shuffle)
    if (bi == 0) continue;   // suppressed everywhere: suppresses nothing
    if (lane > i && lane < w.n) supp |= bi & lanes_below(sthr, lanes, (double)v);
  }
  return lane < w.n ? all & ~supp : 0;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSmallWarps * 32)
    small_kernel(const NmsParams p, int64_t s_begin, int64_t s_end) {
  // y: unit rows, a chunk of columns; afterwards reused for the similarities.
  __shared__ float s_y[kSmallWarps][kWarpMax][kCols + 1];
  __shared__ double s_thr[kSmallWarps][kMaxLanes];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float(*y)[kCols + 1] = s_y[w];
  const scalar_t* __restrict__ x = static_cast<const scalar_t*>(p.x);
  const int64_t ld = p.ld, d = p.d;
  u64 cnt_lo = 0, cnt_hi = 0;  // totals of lanes `lane` and `lane + 32`

  const int64_t nw = (int64_t)gridDim.x * kSmallWarps;
  for (int64_t s = s_begin + (int64_t)blockIdx.x * kSmallWarps + w; s < s_end; s += nw) {
    const WarpIdentity id = warp_identity(p, s, lane, s_thr[w]);
    const int n = id.n;
    if (n == 0) continue;

    // acc[k] = <y_lane, y_k>, built a chunk of columns at a time.
    float acc[kWarpMax];
#pragma unroll
    for (int k = 0; k < kWarpMax; ++k) acc[k] = 0.f;
    for (int64_t c0 = 0; c0 < d; c0 += kCols) {
      const int64_t col = c0 + lane;
      __syncwarp();
#pragma unroll 4
      for (int r = 0; r < n; ++r) {
        const int64_t row = __shfl_sync(kFullMask, id.my_row, r);
        const float ir = __shfl_sync(kFullMask, id.my_inv, r);
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

    const uint64_t b = warp_walk(id, lane, p.lanes, s_thr[w], [&](int i) { return y[lane][i]; });
    finish_warp_identity(p, id, b, lane, cnt_lo, cnt_hi);
  }
  flush_warp_counts(p, lane, cnt_lo, cnt_hi);
}

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
    small_tc_kernel(const NmsParams p, int64_t s_begin, int64_t s_end) {
  using T = typename TcType<scalar_t>::type;
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) uint16_t s_y[kSmallWarps][kWarpMax][kTcLd];
  __shared__ __align__(32) float s_g[kSmallWarps][kWarpMax][kWarpMax + 4];
  __shared__ double s_thr[kSmallWarps][kMaxLanes];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint16_t(*y)[kTcLd] = s_y[w];
  float(*g)[kWarpMax + 4] = s_g[w];
  const uint16_t* __restrict__ xb = static_cast<const uint16_t*>(p.x);  // raw 16-bit patterns
  const int64_t ld = p.ld, d = p.d;
  const bool pairs = p.width >= 2;
  u64 cnt_lo = 0, cnt_hi = 0;

  const int64_t nw = (int64_t)gridDim.x * kSmallWarps;
  for (int64_t s = s_begin + (int64_t)blockIdx.x * kSmallWarps + w; s < s_end; s += nw) {
    const WarpIdentity id = warp_identity(p, s, lane, s_thr[w]);
    const int n = id.n;
    if (n == 0) continue;
    const int nf = n > 16 ? 2 : 1;  // 16 x 16 fragments that hold faces

    AccFrag acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    for (int64_t c0 = 0; c0 < d; c0 += kTcCols) {
      __syncwarp();
      if (pairs) {  // two elements per 32-bit load: 128 bytes per warp and row
#pragma unroll 4
        for (int r = 0; r < n; ++r) {
          const int64_t row = __shfl_sync(kFullMask, id.my_row, r);
          copy16<2>(&y[r][2 * lane], xb, row, ld, c0 + 2 * lane, d);
        }
      } else {
#pragma unroll 4
        for (int r = 0; r < n; ++r) {
          const int64_t row = __shfl_sync(kFullMask, id.my_row, r);
          copy16<1>(&y[r][lane], xb, row, ld, c0 + lane, d);
          copy16<1>(&y[r][lane + 32], xb, row, ld, c0 + lane + 32, d);
        }
      }
      __syncwarp();
      if (nf == 2) warp_gram_chunk<T, 2>(y, acc); else warp_gram_chunk<T, 1>(y, acc);
    }
    __syncwarp();
    if (nf == 2) warp_gram_store<2>(g, acc); else warp_gram_store<1>(g, acc);
    __syncwarp();

    const uint64_t b = warp_walk(id, lane, p.lanes, s_thr[w], [&](int i) {
      const float inv_i = __shfl_sync(kFullMask, id.my_inv, i);
      return (g[lane][i] * id.my_inv) * inv_i;
    });
    finish_warp_identity(p, id, b, lane, cnt_lo, cnt_hi);
  }
  flush_warp_counts(p, lane, cnt_lo, cnt_hi);
}

// fp16/bf16 similarities on tensor cores; fp32/fp64 in float32 FMAs.
template <typename scalar_t>
auto small_kernel_for() {
  if constexpr (TcType<scalar_t>::ok) return small_tc_kernel<scalar_t>;
  else return small_kernel<scalar_t>;
}

}  // namespace

void launch_small(at::ScalarType dtype, const NmsParams& p, const NmsPlanHost& plan, int sms,
                  cudaStream_t stream) {
  if (plan.n_large >= plan.n_ident) return;
  const unsigned grid = grid_for(plan.n_ident - plan.n_large, kSmallWarps, (int64_t)sms * 16);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "nms_small_cuda", [&] {
    small_kernel_for<scalar_t>()<<<grid, kSmallWarps * 32, 0, stream>>>(p, plan.n_large,
                                                                         plan.n_ident);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace facenms
