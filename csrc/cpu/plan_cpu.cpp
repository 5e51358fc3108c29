// facenms::_nms_plan: the GPU schedule and tiling computed on the CPU, so
// tests can check it without a GPU. Not part of the API.
//
// make_plan (nms_plan.h) builds the schedule with ATen ops, which the stable
// ABI does not offer (sort, cumsum, where); here the same three steps are
// host loops: a stable sort of the identities by size, descending, and the
// prefix sums of tile_count and mask_bytes. Every tile is then decoded with
// the functions of nms_common.h, exactly as the CUDA tile kernel decodes its
// block index.
#include <torch/csrc/stable/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../checks.h"
#include "../nms_common.h"
#include "cpu_common.h"

namespace facenms {
namespace {

// Returns sched (C,) and tiles (n_tiles, 4): identity, kb, mb, mask offset of
// the tile's (0, 0) byte.
std::tuple<Tensor, Tensor> nms_plan_cpu(const Tensor& offsets_in) {
  FACENMS_CHECK(offsets_in.dim() == 1 && offsets_in.scalar_type() == ScalarType::Long &&
                    offsets_in.numel() >= 2,
                "_nms_plan: expected int64 offsets of length C + 1 >= 2");
  const Tensor offsets = torch::stable::contiguous(offsets_in);
  const int64_t c = offsets.numel() - 1;
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  auto sched_t = torch::stable::new_empty(offsets, {c});
  int64_t* sched = sched_t.mutable_data_ptr<int64_t>();
  std::iota(sched, sched + c, int64_t(0));
  std::stable_sort(sched, sched + c, [&](int64_t u, int64_t v) {
    return off[u + 1] - off[u] > off[v + 1] - off[v];
  });
  std::vector<int64_t> sizes(c), cum(c), base(c);
  int64_t n_large = 0, tiles_total = 0, bytes_total = 0;
  for (int64_t s = 0; s < c; ++s) {
    sizes[s] = off[sched[s] + 1] - off[sched[s]];
    n_large += is_large(sizes[s]);
    base[s] = bytes_total;
    cum[s] = tiles_total += tile_count(sizes[s]);
    bytes_total += mask_bytes(sizes[s]);
  }
  auto tiles = torch::stable::new_empty(offsets, {tiles_total, 4});
  int64_t* out = tiles.mutable_data_ptr<int64_t>();
  for (int64_t t = 0; t < tiles_total; ++t) {
    const int64_t s = upper_bound(cum.data(), n_large, t);
    int64_t kb, mb;
    tile_decode(t - (s ? cum[s - 1] : 0), &kb, &mb);
    out[4 * t] = sched[s];
    out[4 * t + 1] = kb;
    out[4 * t + 2] = mb;
    out[4 * t + 3] = base[s] + kb * kTile * mask_side(sizes[s]) + mb * kTile;
  }
  return {sched_t, tiles};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("_nms_plan", TORCH_BOX(&nms_plan_cpu)); }

}  // namespace facenms
