// facenms::rank_nms on the CPU: ranks each identity by its sparsity scores
// and walks it while its rows are still in cache, so a threshold selection
// reads the features from memory once.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "cpu/scores.h"
#include "cpu/walk.h"

namespace facenms {
namespace {

struct RankScratch {
  std::vector<double> centre, norms, scores;
  std::vector<int64_t> perm, src_rows, pos;
  std::vector<float> raw;  // 16-bit rows as float32
  int64_t bad = std::numeric_limits<int64_t>::max();
};

// Scores rows src_rows[0..n) of src, sorts them by descending score
// (ascending with centrality), ties by the smaller row index index[i], and
// puts the unit rows into y in that order; ranked[i] gets their row indices.
// Returns false, noting the smallest bad row index in s.bad, if a row is
// zero or not finite.
template <typename U>
bool rank_rows(const U* src, int64_t ld, const int64_t* src_rows, const int64_t* index,
               int64_t n, int64_t d, bool centrality, RankScratch& s, int64_t* ranked,
               float* y) {
  if ((int64_t)s.norms.size() < n)
    s.norms.resize(n), s.scores.resize(n), s.perm.resize(n), s.src_rows.resize(n);
  s.centre.resize(d);
  if (!score_identity(src, ld, src_rows, n, d, s.centre.data(), s.norms.data(), s.scores.data())) {
    s.bad = std::min(s.bad, first_bad_row(s.norms.data(), index, n));
    return false;
  }
  int64_t* p = s.perm.data();
  rank_positions(s.scores.data(), index, n, centrality, p);
  for (int64_t i = 0; i < n; ++i) ranked[i] = index[p[i]], s.src_rows[i] = src_rows[p[i]];
  load_rows(src, ld, s.src_rows.data(), n, d, y);
  return true;
}

// One identity, rows `rows[0..n)` of x. 16-bit rows are converted to float32
// once; scoring and normalising then read that copy. The conversion is
// exact, so the scores are those prepare computes from the 16-bit rows.
template <typename T>
bool rank_identity(const T* base, int64_t ld, int64_t d, const int64_t* rows, int64_t n,
                   bool centrality, RankScratch& s, int64_t* ranked, float* y) {
  if constexpr (sizeof(T) == 2) {
    if ((int64_t)s.raw.size() < n * d) s.raw.resize(n * d);
    load_rows(base, ld, rows, n, d, s.raw.data(), /*unit=*/false);
    if ((int64_t)s.pos.size() < n) {
      s.pos.resize(n);
      std::iota(s.pos.begin(), s.pos.end(), int64_t(0));
    }
    return rank_rows(s.raw.data(), d, s.pos.data(), rows, n, d, centrality, s, ranked, y);
  } else {
    return rank_rows(base, ld, rows, rows, n, d, centrality, s, ranked, y);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> rank_nms_cpu(const Tensor& x, const Tensor& order,
                                                        const Tensor& offsets,
                                                        const Tensor& thresholds,
                                                        int64_t min_keep,
                                                        bool centrality) {
  check_inputs(x, order, offsets, "rank_nms");
  check_cpu_isa();
  int lanes;
  auto [bits, counts] = nms_outputs(x, order, offsets, thresholds, min_keep, &lanes);
  auto ranked = torch::stable::clone(order);
  auto bad = torch::stable::fill_(torch::stable::new_empty(order, {}), -1);
  const int64_t n_ident = offsets.numel() - 1;
  if (n_ident == 0 || order.numel() == 0) return {ranked, bits, counts, bad};
  const int64_t* ord = order.const_data_ptr<int64_t>();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  int64_t* rk = ranked.mutable_data_ptr<int64_t>();
  const int64_t d = x.size(1), ld = x.stride(0);
  std::vector<RankScratch> scratch(std::max<int64_t>(1, torch::stable::get_num_threads()));
  dispatch_floating(x.scalar_type(), "rank_nms_cpu", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* base = x.const_data_ptr<scalar_t>();
    walk_identities<scalar_t>(
        x, ord, off, n_ident, thresholds.const_data_ptr<double>(), thresholds.dim() == 2, lanes,
        min_keep, reinterpret_cast<uint64_t*>(bits.mutable_data_ptr<int64_t>()),
        counts.mutable_data_ptr<int64_t>(), [&](int64_t c, int tid, float* y) {
          const int64_t a = off[c];
          return rank_identity(base, ld, d, ord + a, off[c + 1] - a, centrality, scratch[tid],
                               rk + a, y);
        });
  });
  int64_t first_bad = std::numeric_limits<int64_t>::max();
  for (const auto& s : scratch) first_bad = std::min(first_bad, s.bad);
  if (first_bad != std::numeric_limits<int64_t>::max())
    torch::stable::fill_(bad, (double)first_bad);  // exact: row indices are < 2**53
  return {ranked, bits, counts, bad};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("rank_nms", TORCH_BOX(&rank_nms_cpu)); }

}  // namespace facenms
