// facenms::prepare on the CPU: row norms and sparsity scores in float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "scores.h"

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
      const int64_t a = offsets[c], n = offsets[c + 1] - a;
      // a bad row shows in its norm; the caller reports it
      score_identity(base, ld, order + a, n, d, centre.data(), norms + a, scores + a);
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
