// facenms::prepare on the CPU: row norms and sparsity scores in float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"

namespace facenms {
namespace {

template <typename scalar_t>
void prepare_kernel_impl(const at::Tensor& x, const int64_t* order, const int64_t* offsets,
                         int64_t n_ident, double* norms, double* scores) {
  const int64_t d = x.size(1), ld = x.stride(0);
  const scalar_t* base = x.data_ptr<scalar_t>();
  at::parallel_for(0, n_ident, 16, [&](int64_t c0, int64_t c1) {
    std::vector<double> centre(d);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = offsets[c], b = offsets[c + 1];
      std::fill(centre.begin(), centre.end(), 0.0);
      bool finite = true;
      for (int64_t i = a; i < b; ++i) {
        const scalar_t* row = base + order[i] * ld;
        double ss = 0;
        for (int64_t k = 0; k < d; ++k) {
          const double v = static_cast<double>(row[k]);
          ss += v * v;
        }
        const double norm = std::sqrt(ss);
        norms[i] = norm;
        // A bad row is reported by the caller; keep its identity's scores finite.
        if (!(norm > 0) || !std::isfinite(norm)) { finite = false; continue; }
        const double inv = 1.0 / norm;
        for (int64_t k = 0; k < d; ++k) centre[k] += static_cast<double>(row[k]) * inv;
      }
      double cc = 0;
      for (int64_t k = 0; k < d; ++k) cc += centre[k] * centre[k];
      const double cn = std::sqrt(cc);
      for (int64_t i = a; i < b; ++i) {
        if (!finite || !(cn > 0)) { scores[i] = 1.0; continue; }  // no centre: all tie
        const scalar_t* row = base + order[i] * ld;
        double dot = 0;
        for (int64_t k = 0; k < d; ++k) dot += static_cast<double>(row[k]) * centre[k];
        const double s = 1.0 - dot / (norms[i] * cn);
        scores[i] = std::nearbyint(s * 1048576.0) / 1048576.0;  // multiple of 2**-20
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
