// facenms::nms and nms_with_norms on CUDA. No similarity matrix is ever
// written as floats. A pass is:
//
//  1. 1/||x|| of every face: from the norms the caller passes
//     (nms_with_norms: prepare computed them), or row_inv_kernel, one more
//     read of the features (nms).
//  2. Identities of <= kWarpMax faces: one warp each, similarities and walk
//     fused in shared memory (nms_small.cu).
//  3. Larger identities: similarity tiles into a byte mask, then a walk per
//     identity on the device (nms_large.cu).
//
// The schedule (identities by size, tile table, mask slots) comes from
// make_plan, shared with the CPU build so it is tested there.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/nms_plan.h"
#include "cuda/nms_cuda.cuh"

namespace facenms {
namespace cuda {
namespace {

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
    ss = warp_sum(ss);
    if (lane == 0) inv[p] = ss > 0 ? static_cast<float>(1.0 / sqrt(ss)) : 0.f;
  }
}

// The same from float64 norms: 1 / norm rounded to float, 0 unless norm > 0
// (1 / inf is 0 too), which is row_inv_kernel's value when the norms come
// from prepare (same elements, same sums).
__global__ void inv_from_norms_kernel(const double* __restrict__ norms, int64_t n,
                                      float* __restrict__ inv) {
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < n;
       p += (int64_t)gridDim.x * blockDim.x) {
    const double v = norms[p];
    inv[p] = v > 0 ? static_cast<float>(1.0 / v) : 0.f;
  }
}

// Elements per load of 16-bit rows (NmsParams::width).
int load_width(const at::Tensor& x) {
  if (x.element_size() != 2) return 1;
  const int64_t d = x.size(1), ld = x.stride(0);
  const uintptr_t base = reinterpret_cast<uintptr_t>(x.data_ptr());
  if (ld % 8 == 0 && d % 8 == 0 && base % 16 == 0) return 8;
  if (ld % 2 == 0 && d % 2 == 0 && base % 4 == 0) return 2;
  return 1;
}

std::tuple<at::Tensor, at::Tensor> nms_impl(const at::Tensor& x, const at::Tensor& order,
                                            const at::Tensor& offsets,
                                            const at::Tensor& thresholds, int64_t min_keep,
                                            const at::Tensor* norms) {
  check_inputs(x, order, offsets, "nms");
  TORCH_CHECK(x.is_cuda(), "nms: expected CUDA tensors, got ", x.device());
  if (norms) check_norms(x, order, *norms);
  const int64_t n_ident = offsets.numel() - 1;
  const int lanes = check_thresholds(x, thresholds, n_ident, min_keep);
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
  const int sms = sm_count();
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto inv = at::empty({n}, x.options().dtype(at::kFloat));
  at::Tensor mask;
  if (plan.n_large > 0) mask = at::empty({plan.mask_total}, x.options().dtype(at::kByte));

  if (norms) {
    inv_from_norms_kernel<<<grid_for(n, 256, (int64_t)sms * 8), 256, 0, stream>>>(
        norms->data_ptr<double>(), n, inv.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nms_cuda", [&] {
      row_inv_kernel<scalar_t><<<grid_for(n, 8, (int64_t)sms * 32), 256, 0, stream>>>(
          x.data_ptr<scalar_t>(), x.stride(0), x.size(1), order.data_ptr<int64_t>(), n,
          inv.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  NmsParams p;
  p.x = x.data_ptr();
  p.ld = x.stride(0);
  p.d = x.size(1);
  p.width = load_width(x);
  p.order = order.data_ptr<int64_t>();
  p.offsets = offsets.data_ptr<int64_t>();
  p.sched = plan.sched.data_ptr<int64_t>();
  p.sizes = plan.sizes.data_ptr<int64_t>();
  p.tiles = plan.tiles.data_ptr<int64_t>();
  p.mask_base = plan.mask_base.data_ptr<int64_t>();
  p.inv = inv.data_ptr<float>();
  p.thr = thresholds.data_ptr<double>();
  p.per_ident = thresholds.dim() == 2;
  p.lanes = lanes;
  p.min_keep = min_keep;
  p.bits = bits.data_ptr<int64_t>();
  p.counts = counts.data_ptr<int64_t>();
  p.mask = plan.n_large > 0 ? mask.data_ptr<uint8_t>() : nullptr;
  const NmsPlanHost host{n_ident, plan.n_large, plan.n_wide, plan.n_tiles, plan.max_size};
  launch_small(x.scalar_type(), p, host, sms, stream);
  launch_large(x.scalar_type(), p, host, sms, stream);
  return {bits, counts};
}

std::tuple<at::Tensor, at::Tensor> nms_cuda(const at::Tensor& x, const at::Tensor& order,
                                            const at::Tensor& offsets,
                                            const at::Tensor& thresholds, int64_t min_keep) {
  return nms_impl(x, order, offsets, thresholds, min_keep, nullptr);
}

std::tuple<at::Tensor, at::Tensor> nms_with_norms_cuda(const at::Tensor& x,
                                                       const at::Tensor& order,
                                                       const at::Tensor& offsets,
                                                       const at::Tensor& thresholds,
                                                       int64_t min_keep,
                                                       const at::Tensor& norms) {
  return nms_impl(x, order, offsets, thresholds, min_keep, &norms);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(facenms, CUDA, m) {
  m.impl("nms", &cuda::nms_cuda);
  m.impl("nms_with_norms", &cuda::nms_with_norms_cuda);
}

}  // namespace facenms
