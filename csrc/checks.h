// Argument checks shared by every backend of every op.
#pragma once

#include <ATen/ATen.h>

#include "nms_common.h"

namespace facenms {

inline void check_inputs(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
                         const char* op) {
  TORCH_CHECK(x.dim() == 2, op, ": expected features of shape (N, d), got ", x.dim(),
              "-D tensor of shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": expected floating-point features, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) == 0 || x.stride(1) == 1, op,
              ": expected rows of features to be contiguous (stride(1) == 1), got strides ",
              x.strides());
  TORCH_CHECK(order.dim() == 1 && order.scalar_type() == at::kLong && order.is_contiguous(), op,
              ": expected order to be a contiguous 1-D int64 tensor, got ", order.scalar_type(),
              " of shape ", order.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == at::kLong &&
                  offsets.is_contiguous() && offsets.numel() >= 1,
              op, ": expected offsets to be a contiguous 1-D int64 tensor of length C + 1, got ",
              offsets.scalar_type(), " of shape ", offsets.sizes());
  TORCH_CHECK(order.device() == x.device() && offsets.device() == x.device(), op,
              ": expected features, order and offsets on one device, got ", x.device(), ", ",
              order.device(), ", ", offsets.device());
  if (x.device().is_cpu()) {  // cheap on the host; the CUDA path trusts the Python layer
    const int64_t* off = offsets.data_ptr<int64_t>();
    const int64_t c = offsets.numel() - 1;
    TORCH_CHECK(off[0] == 0 && off[c] == order.numel(), op,
                ": expected offsets to run from 0 to len(order) = ", order.numel(), ", got ",
                off[0], " .. ", off[c]);
    for (int64_t i = 0; i < c; ++i)
      TORCH_CHECK(off[i] <= off[i + 1], op, ": offsets must not decrease, but offsets[", i,
                  "] = ", off[i], " > offsets[", i + 1, "] = ", off[i + 1]);
    const int64_t* o = order.data_ptr<int64_t>();
    for (int64_t i = 0; i < order.numel(); ++i)
      TORCH_CHECK(o[i] >= 0 && o[i] < x.size(0), op, ": order[", i, "] = ", o[i],
                  " is not a row of features with ", x.size(0), " rows");
  }
}

// The thresholds of an nms call: float64, (T,) or (C, T), 1 <= T <= 64.
// Returns T. Whether they ascend is checked by each backend.
inline int check_thresholds(const at::Tensor& x, const at::Tensor& thresholds, int64_t n_ident,
                            int64_t min_keep) {
  TORCH_CHECK(thresholds.scalar_type() == at::kDouble && thresholds.is_contiguous() &&
                  thresholds.device() == x.device(),
              "nms: expected thresholds as a contiguous float64 tensor on ", x.device(), ", got ",
              thresholds.scalar_type(), " on ", thresholds.device());
  TORCH_CHECK(thresholds.dim() == 1 || (thresholds.dim() == 2 && thresholds.size(0) == n_ident),
              "nms: expected thresholds of shape (T,) or (C, T) with C = ", n_ident,
              " identities, got ", thresholds.sizes());
  const int lanes = (int)thresholds.size(-1);
  TORCH_CHECK(lanes >= 1 && lanes <= kMaxLanes, "nms: expected 1 to ", kMaxLanes,
              " thresholds per pass, got ", lanes);
  TORCH_CHECK(min_keep >= 0, "nms: min_keep must be >= 0, got ", min_keep);
  return lanes;
}

// The norms argument of nms_with_norms: float64 (N,) on the features' device.
inline void check_norms(const at::Tensor& x, const at::Tensor& order, const at::Tensor& norms) {
  TORCH_CHECK(norms.dim() == 1 && norms.numel() == order.numel() &&
                  norms.scalar_type() == at::kDouble && norms.is_contiguous() &&
                  norms.device() == x.device(),
              "nms_with_norms: expected norms as a contiguous float64 tensor of shape (",
              order.numel(), ",) on ", x.device(), ", got ", norms.scalar_type(), " of shape ",
              norms.sizes(), " on ", norms.device());
}

}  // namespace facenms
