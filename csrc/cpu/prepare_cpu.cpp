// facenms::prepare on the CPU: row norms and sparsity scores in float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "cpu_common.h"

namespace facenms {
namespace {

// One identity: float64 norms of rows `rows` into norms[], the sum of the unit
// rows into centre[], and its rows converted to float64 into buf (reused for
// the scores). Returns false if a row is zero or not finite.
#define FACENMS_LOAD_IDENTITY(T)                                                               \
  FACENMS_CLONES bool load_identity(const T* base, int64_t ld, const int64_t* rows, int64_t n, \
                                    int64_t d, double* buf, double* norms, double* centre) {   \
    bool ok = true;                                                                            \
    for (int64_t k = 0; k < d; ++k) centre[k] = 0.0;                                           \
    for (int64_t i = 0; i < n; ++i) {                                                          \
      const T* src = base + rows[i] * ld;                                                      \
      double* r = buf + i * d;                                                                 \
      double ss = 0.0;                                                                         \
      _Pragma("omp simd reduction(+ : ss)") for (int64_t k = 0; k < d; ++k) {                  \
        r[k] = to_double(src[k]);                                                                                        \
        ss += r[k] * r[k];                                                                     \
      }                                                                                        \
      norms[i] = std::sqrt(ss);                                                                \
      if (!(norms[i] > 0) || !std::isfinite(norms[i])) { ok = false; continue; }               \
      const double inv = 1.0 / norms[i];                                                       \
      _Pragma("omp simd") for (int64_t k = 0; k < d; ++k) centre[k] += r[k] * inv;             \
    }                                                                                          \
    return ok;                                                                                 \
  }
FACENMS_LOAD_IDENTITY(float)
FACENMS_LOAD_IDENTITY(double)
FACENMS_LOAD_IDENTITY(at::Half)
FACENMS_LOAD_IDENTITY(at::BFloat16)
#undef FACENMS_LOAD_IDENTITY

// scores[i] = 1 - cos(row i, centre), rounded to a multiple of 2**-20.
FACENMS_CLONES void centre_scores(const double* buf, int64_t n, int64_t d, const double* norms,
                                  const double* centre, double* scores) {
  double cc = 0.0;
#pragma omp simd reduction(+ : cc)
  for (int64_t k = 0; k < d; ++k) cc += centre[k] * centre[k];
  const double cn = std::sqrt(cc);
  for (int64_t i = 0; i < n; ++i) {
    if (!(cn > 0)) { scores[i] = 1.0; continue; }  // no centre: all faces tie
    const double* r = buf + i * d;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t k = 0; k < d; ++k) dot += r[k] * centre[k];
    const double s = 1.0 - dot / (norms[i] * cn);
    scores[i] = std::nearbyint(s * 1048576.0) / 1048576.0;
  }
}

template <typename scalar_t>
void prepare_kernel_impl(const at::Tensor& x, const int64_t* order, const int64_t* offsets,
                         int64_t n_ident, double* norms, double* scores) {
  const int64_t d = x.size(1), ld = x.stride(0);
  const scalar_t* base = x.data_ptr<scalar_t>();
  at::parallel_for(0, n_ident, 16, [&](int64_t c0, int64_t c1) {
    std::vector<double> centre(d), buf;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = offsets[c], n = offsets[c + 1] - a;
      if ((int64_t)buf.size() < n * d) buf.resize(n * d);
      if (load_identity(base, ld, order + a, n, d, buf.data(), norms + a, centre.data())) {
        centre_scores(buf.data(), n, d, norms + a, centre.data(), scores + a);
      } else {  // the caller reports the bad row
        for (int64_t i = a; i < a + n; ++i) scores[i] = 1.0;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> prepare_cpu(const at::Tensor& x, const at::Tensor& order,
                                               const at::Tensor& offsets) {
  check_inputs(x, order, offsets, "prepare");
  const int64_t n = order.numel();
  auto norms = at::empty({n}, x.options().dtype(at::kDouble));
  auto scores = at::empty({n}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prepare_cpu", [&] {
    prepare_kernel_impl<scalar_t>(x, order.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
                                  offsets.numel() - 1, norms.data_ptr<double>(),
                                  scores.data_ptr<double>());
  });
  return {norms, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("prepare", &prepare_cpu); }

}  // namespace facenms
