// facenms::prepare on the CPU: row norms and sparsity scores in float64.
#include <torch/csrc/stable/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "cpu/scores.h"

namespace facenms {
namespace {

template <typename scalar_t>
void prepare_kernel_impl(const Tensor& x, const int64_t* order, const int64_t* offsets,
                         int64_t n_ident, double* norms, double* scores) {
  const int64_t d = x.size(1), ld = x.stride(0);
  const scalar_t* base = x.const_data_ptr<scalar_t>();
  torch::stable::parallel_for(0, n_ident, 16, [&](int64_t c0, int64_t c1) {
    std::vector<double> centre(d);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = offsets[c], n = offsets[c + 1] - a;
      // a bad row shows in its norm; the caller reports it
      score_identity(base, ld, order + a, n, d, centre.data(), norms + a, scores + a);
    }
  });
}

std::tuple<Tensor, Tensor> prepare_cpu(const Tensor& x, const Tensor& order,
                                       const Tensor& offsets) {
  check_inputs(x, order, offsets, "prepare");
  check_cpu_isa();
  const int64_t n = order.numel();
  auto norms = torch::stable::new_empty(x, {n}, ScalarType::Double);
  auto scores = torch::stable::new_empty(x, {n}, ScalarType::Double);
  dispatch_floating(x.scalar_type(), "prepare_cpu", [&](auto tag) {
    prepare_kernel_impl<decltype(tag)>(x, order.const_data_ptr<int64_t>(),
                                       offsets.const_data_ptr<int64_t>(), offsets.numel() - 1,
                                       norms.mutable_data_ptr<double>(),
                                       scores.mutable_data_ptr<double>());
  });
  return {norms, scores};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("prepare", TORCH_BOX(&prepare_cpu)); }

}  // namespace facenms
