// facenms::nms on the CPU: the greedy walk of walk.h over rows already in
// rank order.
#include <torch/csrc/stable/library.h>

#include "cpu/walk.h"

namespace facenms {
namespace {

std::tuple<Tensor, Tensor> nms_cpu(const Tensor& x, const Tensor& order, const Tensor& offsets,
                                   const Tensor& thresholds, int64_t min_keep) {
  check_inputs(x, order, offsets, "nms");
  int lanes;
  auto [bits, counts] = nms_outputs(x, order, offsets, thresholds, min_keep, &lanes);
  const int64_t n_ident = offsets.numel() - 1;
  if (n_ident == 0 || order.numel() == 0) return {bits, counts};
  const int64_t* ord = order.const_data_ptr<int64_t>();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  dispatch_floating(x.scalar_type(), "nms_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* base = x.const_data_ptr<scalar_t>();
    const int64_t d = x.size(1), ld = x.stride(0);
    walk_identities<scalar_t>(x, ord, off, n_ident, thresholds.const_data_ptr<double>(),
                              thresholds.dim() == 2, lanes, min_keep,
                              reinterpret_cast<uint64_t*>(bits.mutable_data_ptr<int64_t>()),
                              counts.mutable_data_ptr<int64_t>(), [&](int64_t c, int, float* y) {
                                load_rows(base, ld, ord + off[c], off[c + 1] - off[c], d, y);
                                return true;
                              });
  });
  return {bits, counts};
}

// The CPU walk normalises rows as it loads them, so the norms are only checked.
std::tuple<Tensor, Tensor> nms_with_norms_cpu(const Tensor& x, const Tensor& order,
                                              const Tensor& offsets, const Tensor& thresholds,
                                              int64_t min_keep, const Tensor& norms) {
  check_norms(x, order, norms);
  return nms_cpu(x, order, offsets, thresholds, min_keep);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) {
  m.impl("nms", TORCH_BOX(&nms_cpu));
  m.impl("nms_with_norms", TORCH_BOX(&nms_with_norms_cpu));
}

}  // namespace facenms
