// facenms::int8_rows on the CPU: float32 rows scaled to +-63 and rounded for
// the int8 screen of label_issues (facenms/core/screen.py states the bound),
// with the norm of each row's rounding residual, in two passes over the rows
// instead of a dozen torch ops.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "cpu/cpu_common.h"

namespace facenms {
namespace {

constexpr float kInt8Max = 63.0f;  // see INT8_MAX in screen.py

constexpr int kLanes = 16;  // independent partial results: the loops vectorise

template <typename I>
FACENMS_INLINE float abs_max_impl(const float* v, int64_t d) {
  float m[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes)
    for (int j = 0; j < kLanes; ++j) m[j] = std::max(m[j], std::fabs(v[k + j]));
  float out = 0.0f;
  for (int j = 0; j < kLanes; ++j) out = std::max(out, m[j]);
  for (; k < d; ++k) out = std::max(out, std::fabs(v[k]));
  return out;
}

// q = round(v * (1 / scale)) (half to even, as torch.round), clamped to +-63;
// returns |v / scale - q| * scale, the norm of the rounding residual.
template <typename I>
FACENMS_INLINE float quantize_row_impl(const float* v, int64_t d, float scale, int8_t* q) {
  const float inv = 1.0f / scale;
  float ss[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float r = v[k + j] * inv;
      const float rq = std::min(kInt8Max, std::max(-kInt8Max, std::nearbyint(r)));
      q[k + j] = (int8_t)rq;
      ss[j] += (r - rq) * (r - rq);
    }
  double total = 0.0;
  for (int j = 0; j < kLanes; ++j) total += ss[j];
  for (; k < d; ++k) {
    const float r = v[k] * inv;
    const float rq = std::min(kInt8Max, std::max(-kInt8Max, std::nearbyint(r)));
    q[k] = (int8_t)rq;
    total += (double)(r - rq) * (r - rq);
  }
  return (float)std::sqrt(total) * scale;
}

FACENMS_ISA_VERSIONS(float, abs_max, abs_max_impl, (const float* v, int64_t d), (v, d))
FACENMS_ISA_VERSIONS(float, quantize_row, quantize_row_impl,
                     (const float* v, int64_t d, float scale, int8_t* q), (v, d, scale, q))

std::tuple<Tensor, Tensor, Tensor> int8_rows_cpu(const Tensor& v, bool common) {
  check_cpu_isa();
  FACENMS_CHECK(v.dim() == 2 && v.is_contiguous() && v.scalar_type() == ScalarType::Float,
                "int8_rows: expected contiguous float32 rows (n, d), got ", v.scalar_type(),
                " of shape ", shape_str(v));
  const int64_t n = v.size(0), d = v.size(1);
  auto q = torch::stable::new_empty(v, {n, d}, ScalarType::Char);
  auto residual = torch::stable::new_empty(v, {n});
  auto scale = common ? torch::stable::new_empty(v, {}) : torch::stable::new_empty(v, {n});
  const float* src = v.const_data_ptr<float>();
  int8_t* qp = q.mutable_data_ptr<int8_t>();
  float *rp = residual.mutable_data_ptr<float>(), *sp = scale.mutable_data_ptr<float>();
  std::vector<float> amax(n);
  torch::stable::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) amax[i] = abs_max(src + i * d, d);
  });
  float shared = 0.0f;
  if (common) {
    for (int64_t i = 0; i < n; ++i) shared = std::max(shared, amax[i]);
    shared = shared / kInt8Max > 0.0f ? shared / kInt8Max : 1.0f;
    *sp = shared;
  }
  torch::stable::parallel_for(0, n, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float s = shared;
      if (!common) s = sp[i] = amax[i] / kInt8Max > 0.0f ? amax[i] / kInt8Max : 1.0f;
      rp[i] = quantize_row(src + i * d, d, s, qp + i * d);
    }
  });
  return {q, scale, residual};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("int8_rows", TORCH_BOX(&int8_rows_cpu)); }

}  // namespace facenms
