// facenms::rank_nms on the CPU: ranks each identity by its sparsity scores
// and walks it while its rows are still in cache, so a threshold selection
// reads the features from memory once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "scores.h"
#include "walk.h"

namespace facenms {
namespace {

struct RankScratch {
  std::vector<double> centre, norms, scores;
  std::vector<int64_t> perm;
  int64_t bad = std::numeric_limits<int64_t>::max();
};

// Rows of identity `rows[0..n)` into `ranked`: descending score (ascending
// with centrality), ties by the smaller row index. Returns false, noting the
// smallest bad row in s.bad, if a row is zero or not finite.
template <typename T>
bool rank_identity(const T* base, int64_t ld, int64_t d, const int64_t* rows, int64_t n,
                   bool centrality, RankScratch& s, int64_t* ranked) {
  if ((int64_t)s.norms.size() < n) s.norms.resize(n), s.scores.resize(n), s.perm.resize(n);
  s.centre.resize(d);
  if (!score_identity(base, ld, rows, n, d, s.centre.data(), s.norms.data(), s.scores.data())) {
    for (int64_t i = 0; i < n; ++i)
      if (!(s.norms[i] > 0) || !std::isfinite(s.norms[i])) s.bad = std::min(s.bad, rows[i]);
    return false;
  }
  const double* sc = s.scores.data();
  const double sign = centrality ? -1.0 : 1.0;
  int64_t* p = s.perm.data();
  std::iota(p, p + n, int64_t(0));
  std::sort(p, p + n, [&](int64_t u, int64_t v) {
    const double su = sign * sc[u], sv = sign * sc[v];
    return su > sv || (su == sv && rows[u] < rows[v]);
  });
  for (int64_t i = 0; i < n; ++i) ranked[i] = rows[p[i]];
  return true;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_nms_cpu(
    const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
    const at::Tensor& thresholds, int64_t min_per_identity, bool centrality) {
  check_inputs(x, order, offsets, "rank_nms");
  int lanes;
  auto [bits, counts] = nms_outputs(x, order, offsets, thresholds, min_per_identity, &lanes);
  auto ranked = order.clone();
  auto bad = at::full({}, -1, order.options());
  const int64_t n_ident = offsets.numel() - 1;
  if (n_ident == 0 || order.numel() == 0) return {ranked, bits, counts, bad};
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  int64_t* rk = ranked.data_ptr<int64_t>();
  const int64_t d = x.size(1), ld = x.stride(0);
  std::vector<RankScratch> scratch(std::max(1, at::get_num_threads()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "rank_nms_cpu", [&] {
    const scalar_t* base = x.data_ptr<scalar_t>();
    walk_identities<scalar_t>(
        x, ord, off, n_ident, thresholds.data_ptr<double>(), thresholds.dim() == 2, lanes,
        min_per_identity, reinterpret_cast<uint64_t*>(bits.data_ptr<int64_t>()),
        counts.data_ptr<int64_t>(), [&](int64_t c, int tid) -> const int64_t* {
          const int64_t a = off[c], n = off[c + 1] - a;
          return rank_identity(base, ld, d, ord + a, n, centrality, scratch[tid], rk + a)
                     ? rk + a
                     : nullptr;
        });
  });
  int64_t first_bad = std::numeric_limits<int64_t>::max();
  for (const auto& s : scratch) first_bad = std::min(first_bad, s.bad);
  if (first_bad != std::numeric_limits<int64_t>::max()) bad.fill_(first_bad);
  return {ranked, bits, counts, bad};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("rank_nms", &rank_nms_cpu); }

}  // namespace facenms
