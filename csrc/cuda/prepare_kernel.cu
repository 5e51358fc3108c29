// facenms::prepare on CUDA: float64 norms and sparsity scores, one thread
// block per identity (grid-stride), the identity's centre in shared memory.
// Warp w takes rows w, w + W, ...; its partial centre is summed with the
// others in a fixed order, so the result does not depend on timing.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "cuda/cuda_common.cuh"

namespace facenms {
namespace {

using cuda::warp_sum;

constexpr int kMaxWarps = 8;
constexpr int kSmemBudget = 46 * 1024;  // dynamic + static under 48 KiB: no opt-in

template <typename scalar_t>
__global__ void prepare_kernel(const scalar_t* __restrict__ x, int64_t ld, int64_t d,
                               const int64_t* __restrict__ order,
                               const int64_t* __restrict__ offsets, int64_t n_ident,
                               double* __restrict__ scratch, double* __restrict__ norms,
                               double* __restrict__ scores) {
  extern __shared__ double smem_centre[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
  // W partial centres of d doubles: in shared memory, or for very wide rows
  // in this block's slice of a global scratch buffer.
  double* part = scratch ? scratch + (int64_t)blockIdx.x * W * d : smem_centre;
  double* mine = part + (int64_t)warp * d;
  __shared__ double s_cn;
  __shared__ int s_bad;

  for (int64_t c = blockIdx.x; c < n_ident; c += gridDim.x) {
    const int64_t a = offsets[c], n = offsets[c + 1] - a;
    for (int64_t k = lane; k < d; k += 32) mine[k] = 0.0;
    if (threadIdx.x == 0) s_bad = 0;
    __syncthreads();
    bool bad = false;
    for (int64_t i = warp; i < n; i += W) {
      const scalar_t* row = x + order[a + i] * ld;
      double ss = 0;
      for (int64_t k = lane; k < d; k += 32) {
        const double v = cuda::to_double(row[k]);
        ss += v * v;
      }
      ss = warp_sum(ss);
      const double norm = sqrt(ss);
      if (lane == 0) norms[a + i] = norm;
      if (!(norm > 0) || !isfinite(norm)) { bad = true; continue; }
      const double inv = 1.0 / norm;
      for (int64_t k = lane; k < d; k += 32)
        mine[k] += cuda::to_double(row[k]) * inv;
    }
    if (bad && lane == 0) s_bad = 1;
    __syncthreads();
    // Centre = sum of the partials in warp order; partial 0 receives it.
    double cc = 0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
      double v = part[k];
      for (int w = 1; w < W; ++w) v += part[(int64_t)w * d + k];
      part[k] = v;
    }
    __syncthreads();
    if (warp == 0) {
      for (int64_t k = lane; k < d; k += 32) cc += part[k] * part[k];
      cc = warp_sum(cc);
      if (lane == 0) s_cn = sqrt(cc);
    }
    __syncthreads();
    const double cn = s_cn;
    const bool tie = s_bad || !has_centre(cn, n);  // no centre: every face scores 1
    for (int64_t i = warp; i < n; i += W) {
      if (tie) {
        if (lane == 0) scores[a + i] = 1.0;
        continue;
      }
      const scalar_t* row = x + order[a + i] * ld;
      double dot = 0, ss = 0;
      for (int64_t k = lane; k < d; k += 32) {
        const double v = cuda::to_double(row[k]);
        dot += v * part[k];
        ss += v * v;
      }
      dot = warp_sum(dot);
      ss = warp_sum(ss);  // the norm again, bit-identical to the first pass
      if (lane == 0) scores[a + i] = rounded_score(dot, sqrt(ss), cn);
    }
    __syncthreads();  // part is reused by the next identity
  }
}

std::tuple<at::Tensor, at::Tensor> prepare_cuda(const at::Tensor& x, const at::Tensor& order,
                                                const at::Tensor& offsets) {
  check_inputs(x, order, offsets, "prepare");
  TORCH_CHECK(x.is_cuda(), "prepare: expected CUDA tensors, got ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = order.numel(), n_ident = offsets.numel() - 1, d = x.size(1);
  auto norms = at::empty({n}, x.options().dtype(at::kDouble));
  auto scores = at::empty({n}, x.options().dtype(at::kDouble));
  if (n == 0 || n_ident == 0) return {norms, scores};

  // As many warps as the partial centres allow in 48 KiB of shared memory.
  const int64_t per_warp = std::max<int64_t>(d, 1) * (int64_t)sizeof(double);
  int warps = (int)std::min<int64_t>(kMaxWarps, kSmemBudget / per_warp);
  const bool global = warps < 1;
  if (global) warps = kMaxWarps;
  const int sms = cuda::sm_count();
  const int64_t grid = std::min<int64_t>(n_ident, (int64_t)sms * 16);
  at::Tensor scratch;
  if (global) scratch = at::empty({grid * warps * d}, x.options().dtype(at::kDouble));
  const size_t smem = global ? 0 : (size_t)warps * per_warp;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prepare_cuda", [&] {
    prepare_kernel<scalar_t><<<(unsigned)grid, warps * 32, smem, stream>>>(
        x.data_ptr<scalar_t>(), x.stride(0), d, order.data_ptr<int64_t>(),
        offsets.data_ptr<int64_t>(), n_ident, global ? scratch.data_ptr<double>() : nullptr,
        norms.data_ptr<double>(), scores.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {norms, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CUDA, m) { m.impl("prepare", &prepare_cuda); }

}  // namespace facenms
