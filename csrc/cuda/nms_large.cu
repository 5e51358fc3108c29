// nms on CUDA for identities of more than kWarpMax faces. The tile kernels
// compute kTile x kTile similarity tiles (suppressor block kb <= candidate
// block mb) and store, per pair, one byte: how many thresholds lie below the
// similarity. walk_kernel then walks each identity on the device, one block
// per identity: when face i is kept (in some lane), every later face m ORs
// `lanes(i) & below(i, m)` into its suppressed set, reading row i of the byte
// mask (coalesced). That is torchvision's NMS scheme with 64 lanes instead
// of one.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "cuda/nms_cuda.cuh"

namespace facenms {
namespace cuda {
namespace {

constexpr int kTileThreads = 128;  // two per face of a block: see tile_begin
constexpr int kCols = 32;          // columns staged per step (SIMT kernel)
static_assert(kTileThreads == 2 * kTile, "tile_begin stages one row per thread");

// ------------------------------------------------------------- tiles ----

// Where a tile is, after tile_begin: schedule position s, identity c of n
// faces starting at a, blocks kb (suppressors) and mb (candidates).
struct Tile {
  int64_t s, c, n, a, kb, mb;
};

// The prologue of every tile: unpacks table entry t, waits until the block
// is done with the previous tile's shared memory, then stages both blocks'
// rows (-1 past the identity's end) and inverse norms, and the thresholds.
__device__ __forceinline__ Tile tile_begin(const NmsParams& p, int64_t t,
                                           int64_t (*s_row)[kTile], float (*s_inv)[kTile],
                                           double* s_thr) {
  Tile tl;
  tile_unpack(p.tiles[t], &tl.s, &tl.kb, &tl.mb);
  tl.c = p.sched[tl.s];
  tl.n = p.sizes[tl.s];
  tl.a = p.offsets[tl.c];
  const int tid = threadIdx.x;
  __syncthreads();
  {
    const int h = tid / kTile, r = tid % kTile;  // h = 0: block kb, 1: block mb
    const int64_t f = (h ? tl.mb : tl.kb) * kTile + r;
    s_row[h][r] = f < tl.n ? p.order[tl.a + f] : -1;
    s_inv[h][r] = f < tl.n ? p.inv[tl.a + f] : 0.f;
  }
  const double* tt = p.per_ident ? p.thr + tl.c * p.lanes : p.thr;
  for (int j = tid; j < p.lanes; j += kTileThreads) s_thr[j] = tt[j];
  __syncthreads();
  return tl;
}

// mask[k][m] = thresholds below sim(k, m), for the pairs k < m < n of the
// tile (local indices kl, ml).
__device__ __forceinline__ void tile_store(const NmsParams& p, const Tile& tl,
                                           const double* s_thr, int kl, int ml, float sim) {
  const int64_t k = tl.kb * kTile + kl, m = tl.mb * kTile + ml;
  if (k < m && m < tl.n)
    p.mask[p.mask_base[tl.s] + k * mask_side(tl.n) + m] =
        (uint8_t)count_below(s_thr, p.lanes, (double)sim);
}

// fp32/fp64 rows: float32 FMAs, a 4 x 8 register tile per thread.
template <typename scalar_t>
__global__ void __launch_bounds__(kTileThreads) tile_kernel(const NmsParams p, int64_t n_tiles) {
  __shared__ float s_a[kTile][kCols + 1], s_b[kTile][kCols + 1];
  __shared__ int64_t s_row[2][kTile];
  __shared__ float s_inv[2][kTile];
  __shared__ double s_thr[kMaxLanes];
  const scalar_t* __restrict__ x = static_cast<const scalar_t*>(p.x);
  const int64_t ld = p.ld, d = p.d;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;  // 4 rows x 8 columns each

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const Tile tl = tile_begin(p, t, s_row, s_inv, s_thr);
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
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int j = 0; j < 8; ++j) tile_store(p, tl, s_thr, ty * 4 + r, tx + 8 * j, acc[r][j]);
  }
}

// Stages columns [c0, c0 + kTcCols) of the rows s_row[h] (h < halves) as raw
// 16-bit patterns, W elements per load; consecutive threads take
// consecutive pieces of a row (coalesced).
template <int W>
__device__ __forceinline__ void stage_tc(const uint16_t* __restrict__ xb, int64_t ld, int64_t d,
                                         int64_t c0, int halves, const int64_t (*s_row)[kTile],
                                         uint16_t (*s_a)[kTcLd], uint16_t (*s_b)[kTcLd]) {
  constexpr int kPer = kTcCols / W;  // loads per row and chunk
  const int loads = halves * (kTile * kPer / kTileThreads);
  const int tid = threadIdx.x;
#pragma unroll 8
  for (int q = 0; q < loads; ++q) {
    const int e = tid + q * kTileThreads;
    const int h = e / (kTile * kPer), r = (e / kPer) % kTile, col = W * (e % kPer);
    copy16<W>(&(h ? s_b : s_a)[r][col], xb, s_row[h][r], ld, c0 + col, d);
  }
}

// fp16/bf16 rows on tensor cores: four warps, a 32 x 32 corner each.
template <typename scalar_t>
__global__ void __launch_bounds__(kTileThreads)
    tile_tc_kernel(const NmsParams p, int64_t n_tiles) {
  using T = typename TcType<scalar_t>::type;
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) uint16_t s_a[kTile][kTcLd];
  __shared__ __align__(32) uint16_t s_b[kTile][kTcLd];
  __shared__ __align__(32) float s_c[kTile][kTile + 4];
  __shared__ int64_t s_row[2][kTile];
  __shared__ float s_inv[2][kTile];
  __shared__ double s_thr[kMaxLanes];
  const int tid = threadIdx.x, warp = tid >> 5, wy = warp >> 1, wx = warp & 1;
  const uint16_t* __restrict__ xb = static_cast<const uint16_t*>(p.x);
  const int64_t ld = p.ld, d = p.d;

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const Tile tl = tile_begin(p, t, s_row, s_inv, s_thr);
    const bool diag = tl.kb == tl.mb;  // one block of rows serves both operands
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    const uint16_t(*sb)[kTcLd] = diag ? s_a : s_b;
    const int halves = diag ? 1 : 2;
    for (int64_t c0 = 0; c0 < d; c0 += kTcCols) {
      if (p.width == 8) stage_tc<8>(xb, ld, d, c0, halves, s_row, s_a, s_b);
      else if (p.width == 2) stage_tc<2>(xb, ld, d, c0, halves, s_row, s_a, s_b);
      else stage_tc<1>(xb, ld, d, c0, halves, s_row, s_a, s_b);
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
    for (int e = tid; e < kTile * kTile; e += kTileThreads) {
      const int kl = e / kTile, ml = e % kTile;  // consecutive threads: consecutive bytes
      tile_store(p, tl, s_thr, kl, ml,
                 (s_c[kl][ml] * s_inv[0][kl]) * s_inv[diag ? 0 : 1][ml]);
    }
  }
}

// fp16/bf16 similarities on tensor cores; fp32/fp64 in float32 FMAs.
template <typename scalar_t>
auto tile_kernel_for() {
  if constexpr (TcType<scalar_t>::ok) return tile_tc_kernel<scalar_t>;
  else return tile_kernel<scalar_t>;
}

// -------------------------------------------------------------- walk ----

// Suppressed sets in shared memory up to this many faces: with the static
// counters the block stays under the 48 KiB that needs no opt-in.
constexpr int64_t kWalkSmemFaces = 5888;

// One block per large identity: the greedy walk over its byte mask. Blocks
// of one warp for identities up to kWalkWideMin faces (a barrier per kept
// face is then nearly free), of 256 threads above.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    walk_kernel(const NmsParams p, int64_t s_begin, int64_t s_end, int64_t smem_faces) {
  extern __shared__ uint64_t s_supp[];
  __shared__ unsigned long long s_cnt[kMaxLanes];
  __shared__ int s_short;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int lanes = p.lanes;
  const uint64_t all = all_lanes(lanes);

  for (int64_t s = s_begin + blockIdx.x; s < s_end; s += gridDim.x) {
    const int64_t c = p.sched[s], n = p.sizes[s], a = p.offsets[c], side = mask_side(n);
    const uint8_t* P = p.mask + p.mask_base[s];
    uint64_t* out = reinterpret_cast<uint64_t*>(p.bits + a);
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
        const int q = row[m];
        if (q) supp[m] |= b & prefix_mask(q);
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
    const int64_t need = faces_to_keep(p.min_keep, n);
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
      if (p.per_ident) p.counts[c * lanes + j] = (int64_t)s_cnt[j];
      else atomicAdd(reinterpret_cast<u64*>(p.counts) + j, (u64)s_cnt[j]);
    }
  }
}

}  // namespace

void launch_large(at::ScalarType dtype, const NmsParams& p, const NmsPlanHost& plan, int sms,
                  cudaStream_t stream) {
  if (plan.n_large == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "nms_tiles_cuda", [&] {
    tile_kernel_for<scalar_t>()<<<grid_for(plan.n_tiles, 1, (int64_t)1 << 30), kTileThreads, 0,
                                  stream>>>(p, plan.n_tiles);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The widest identities first (one 256-thread block each), then the rest
  // of the large ones (one warp each).
  if (plan.n_wide > 0) {
    const int64_t smem_faces = std::min(plan.max_size, kWalkSmemFaces);
    walk_kernel<256><<<grid_for(plan.n_wide, 1, (int64_t)sms * 8), 256,
                       smem_faces * sizeof(uint64_t), stream>>>(p, 0, plan.n_wide, smem_faces);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (plan.n_wide < plan.n_large) {
    const int64_t smem_faces = kWalkWideMin;
    walk_kernel<32><<<grid_for(plan.n_large - plan.n_wide, 1, (int64_t)sms * 32), 32,
                      smem_faces * sizeof(uint64_t), stream>>>(p, plan.n_wide, plan.n_large,
                                                               smem_faces);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace cuda
}  // namespace facenms
