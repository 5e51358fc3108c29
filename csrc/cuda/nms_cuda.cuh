// What the nms kernels of every identity class share: the launch
// parameters, the per-class launchers, tensor-core types and the staging of
// 16-bit rows.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <mma.h>

#include <cstdint>

#include "nms_common.h"
#include "cuda/cuda_common.cuh"

namespace facenms {
namespace cuda {

using u64 = unsigned long long;  // the type shuffles and atomics take

// Everything a pass's kernels read, passed by value to each of them.
struct NmsParams {
  const void* x;  // features, rows of d elements, ld apart
  int64_t ld, d;
  // Elements per load of 16-bit rows: 8 (16 bytes), 2 (4 bytes) or 1, the
  // widest that the rows' alignment, stride and length allow.
  int width;
  const int64_t* order;    // rows in rank order, grouped by offsets
  const int64_t* offsets;  // (C + 1,) CSR
  const int64_t* sched;    // the plan (nms_plan.h)
  const int64_t* sizes;
  const int64_t* tiles;
  const int64_t* mask_base;
  const float* inv;   // 1 / ||row order[p]|| (0 for a zero or non-finite row)
  const double* thr;  // (lanes,) or (C, lanes) ascending
  bool per_ident;
  int lanes;
  int64_t min_keep;
  int64_t* bits;    // (N,) output
  int64_t* counts;  // (lanes,) or (C, lanes) output, zeroed
  uint8_t* mask;    // mask_total bytes of workspace
};

struct NmsPlanHost {  // the plan's scalars (nms_plan.h)
  int64_t n_ident, n_large, n_wide, n_tiles, max_size;
};

// Identities sched[n_large:] (<= kWarpMax faces): nms_small.cu.
void launch_small(at::ScalarType dtype, const NmsParams& p, const NmsPlanHost& plan, int sms,
                  cudaStream_t stream);
// Identities sched[:n_large]: tiles, then the walk. nms_large.cu.
void launch_large(at::ScalarType dtype, const NmsParams& p, const NmsPlanHost& plan, int sms,
                  cudaStream_t stream);

inline unsigned grid_for(int64_t work, int64_t per_block, int64_t cap) {
  const int64_t g = (work + per_block - 1) / per_block;
  return (unsigned)(g < 1 ? 1 : g > cap ? cap : g);
}

// ------------------------------------------------- tensor cores ----
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

// Copies elements [col, col + W) of a 16-bit row to dst with one load, or
// zeros (+0.0 in fp16 and bf16) where the row is absent or past d. W = 8
// and 2 need d, ld and the base aligned to W elements (NmsParams::width),
// so a load is either wholly inside the row or wholly past its end.
template <int W>
__device__ __forceinline__ void copy16(uint16_t* dst, const uint16_t* __restrict__ xb,
                                       int64_t row, int64_t ld, int64_t col, int64_t d) {
  const bool in = row >= 0 && col < d;
  if constexpr (W == 8) {
    *reinterpret_cast<uint4*>(dst) =
        in ? *reinterpret_cast<const uint4*>(xb + row * ld + col) : make_uint4(0, 0, 0, 0);
  } else if constexpr (W == 2) {
    *reinterpret_cast<uint32_t*>(dst) =
        in ? *reinterpret_cast<const uint32_t*>(xb + row * ld + col) : 0u;
  } else {
    *dst = in ? xb[row * ld + col] : uint16_t(0);
  }
}

}  // namespace cuda
}  // namespace facenms
