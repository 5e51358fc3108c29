// Argument checks shared by every backend of every op. The CPU library is
// built on PyTorch's stable ABI (FACENMS_STABLE_ABI: torch::stable::Tensor,
// errors as std::runtime_error); the CUDA library on ATen (TORCH_CHECK).
// One body serves both, so the messages are the same whichever device runs.
#pragma once

#include <cstdint>
#include <string>

#ifdef FACENMS_STABLE_ABI
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <sstream>
#include <stdexcept>

namespace facenms::detail {
template <typename... A>
[[noreturn]] void fail(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  throw std::runtime_error(s.str());
}
}  // namespace facenms::detail

// A std::runtime_error (a RuntimeError in Python) with the message alone, as
// TORCH_CHECK gives; STD_TORCH_CHECK would prefix the function, file and line.
#define FACENMS_CHECK(cond, ...) \
  do {                           \
    if (!(cond)) ::facenms::detail::fail(__VA_ARGS__); \
  } while (0)
#else
#include <ATen/ATen.h>
#define FACENMS_CHECK TORCH_CHECK
#endif

#include "nms_common.h"

namespace facenms {

#ifdef FACENMS_STABLE_ABI
using CheckTensor = torch::stable::Tensor;
#else
using CheckTensor = at::Tensor;
#endif

inline bool is_floating(c10::ScalarType t) {
  using S = c10::ScalarType;
  switch (t) {
    case S::Half: case S::Float: case S::Double: case S::BFloat16:
    case S::Float8_e5m2: case S::Float8_e4m3fn: case S::Float8_e5m2fnuz: case S::Float8_e4m3fnuz:
      return true;
    default:
      return false;
  }
}

// "[4, 3]", as ATen prints sizes and strides.
inline std::string shape_str(const CheckTensor& t, bool strides = false) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i)
    s += (i ? ", " : "") + std::to_string(strides ? t.stride(i) : t.size(i));
  return s + "]";
}

inline std::string device_str(const CheckTensor& t) {
  if (t.is_cpu()) return "cpu";
  if (t.is_cuda()) return "cuda:" + std::to_string((int)t.get_device());
  return "device " + std::to_string((int)t.get_device());
}

inline bool same_device(const CheckTensor& a, const CheckTensor& b) {
  return a.is_cpu() == b.is_cpu() && a.is_cuda() == b.is_cuda() &&
         a.get_device() == b.get_device();
}

inline void check_inputs(const CheckTensor& x, const CheckTensor& order, const CheckTensor& offsets,
                         const char* op) {
  FACENMS_CHECK(x.dim() == 2, op, ": expected features of shape (N, d), got ", x.dim(),
                "-D tensor of shape ", shape_str(x));
  FACENMS_CHECK(is_floating(x.scalar_type()), op, ": expected floating-point features, got ",
                x.scalar_type());
  FACENMS_CHECK(x.size(1) == 0 || x.stride(1) == 1, op,
                ": expected rows of features to be contiguous (stride(1) == 1), got strides ",
                shape_str(x, true));
  FACENMS_CHECK(order.dim() == 1 && order.scalar_type() == c10::ScalarType::Long &&
                    order.is_contiguous(),
                op, ": expected order to be a contiguous 1-D int64 tensor, got ",
                order.scalar_type(), " of shape ", shape_str(order));
  FACENMS_CHECK(offsets.dim() == 1 && offsets.scalar_type() == c10::ScalarType::Long &&
                    offsets.is_contiguous() && offsets.numel() >= 1,
                op, ": expected offsets to be a contiguous 1-D int64 tensor of length C + 1, got ",
                offsets.scalar_type(), " of shape ", shape_str(offsets));
  FACENMS_CHECK(same_device(order, x) && same_device(offsets, x), op,
                ": expected features, order and offsets on one device, got ", device_str(x),
                ", ", device_str(order), ", ", device_str(offsets));
  if (x.is_cpu()) {  // cheap on the host; the CUDA path trusts the Python layer
    const int64_t* off = offsets.const_data_ptr<int64_t>();
    const int64_t c = offsets.numel() - 1;
    FACENMS_CHECK(off[0] == 0 && off[c] == order.numel(), op,
                  ": expected offsets to run from 0 to len(order) = ", order.numel(), ", got ",
                  off[0], " .. ", off[c]);
    for (int64_t i = 0; i < c; ++i)
      FACENMS_CHECK(off[i] <= off[i + 1], op, ": offsets must not decrease, but offsets[", i,
                    "] = ", off[i], " > offsets[", i + 1, "] = ", off[i + 1]);
    const int64_t* o = order.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < order.numel(); ++i)
      FACENMS_CHECK(o[i] >= 0 && o[i] < x.size(0), op, ": order[", i, "] = ", o[i],
                    " is not a row of features with ", x.size(0), " rows");
  }
}

// The thresholds of an nms call: float64, (T,) or (C, T), 1 <= T <= 64.
// Returns T. Whether they ascend is checked by each backend.
inline int check_thresholds(const CheckTensor& x, const CheckTensor& thresholds, int64_t n_ident,
                            int64_t min_keep) {
  FACENMS_CHECK(thresholds.scalar_type() == c10::ScalarType::Double && thresholds.is_contiguous() &&
                    same_device(thresholds, x),
                "nms: expected thresholds as a contiguous float64 tensor on ", device_str(x),
                ", got ", thresholds.scalar_type(), " on ", device_str(thresholds));
  FACENMS_CHECK(thresholds.dim() == 1 || (thresholds.dim() == 2 && thresholds.size(0) == n_ident),
                "nms: expected thresholds of shape (T,) or (C, T) with C = ", n_ident,
                " identities, got ", shape_str(thresholds));
  const int lanes = (int)thresholds.size(thresholds.dim() - 1);
  FACENMS_CHECK(lanes >= 1 && lanes <= kMaxLanes, "nms: expected 1 to ", kMaxLanes,
                " thresholds per pass, got ", lanes);
  FACENMS_CHECK(min_keep >= 0, "nms: min_keep must be >= 0, got ", min_keep);
  return lanes;
}

// The norms argument of nms_with_norms: float64 (N,) on the features' device.
inline void check_norms(const CheckTensor& x, const CheckTensor& order, const CheckTensor& norms) {
  FACENMS_CHECK(norms.dim() == 1 && norms.numel() == order.numel() &&
                    norms.scalar_type() == c10::ScalarType::Double && norms.is_contiguous() &&
                    same_device(norms, x),
                "nms_with_norms: expected norms as a contiguous float64 tensor of shape (",
                order.numel(), ",) on ", device_str(x), ", got ", norms.scalar_type(),
                " of shape ", shape_str(norms), " on ", device_str(norms));
}

}  // namespace facenms
