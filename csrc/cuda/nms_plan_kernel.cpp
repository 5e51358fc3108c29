// facenms::_nms_plan: the GPU schedule and tile table computed on the CPU
// with the same code, so tests can check it without a GPU. Not part of the
// API.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "nms_common.h"
#include "cuda/nms_plan.h"

namespace facenms {
namespace {

// Returns sched (C,) and tiles (n_tiles, 4): identity, kb, mb, mask offset of
// the tile's (0, 0) byte, each tile unpacked exactly as the CUDA tile kernels
// unpack their table entry.
std::tuple<at::Tensor, at::Tensor> nms_plan_cpu(const at::Tensor& offsets) {
  TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.numel() >= 2,
              "_nms_plan: expected int64 offsets of length C + 1 >= 2");
  const NmsPlan p = make_plan(offsets.contiguous());
  auto tiles = at::empty({p.n_tiles, 4}, offsets.options());
  const int64_t* table = p.tiles.data_ptr<int64_t>();
  const int64_t* sched = p.sched.data_ptr<int64_t>();
  const int64_t* sizes = p.sizes.data_ptr<int64_t>();
  const int64_t* base = p.mask_base.data_ptr<int64_t>();
  int64_t* out = tiles.data_ptr<int64_t>();
  for (int64_t t = 0; t < p.n_tiles; ++t) {
    int64_t s, kb, mb;
    tile_unpack(table[t], &s, &kb, &mb);
    out[4 * t] = sched[s];
    out[4 * t + 1] = kb;
    out[4 * t + 2] = mb;
    out[4 * t + 3] = base[s] + tile_mask_offset(sizes[s], kb, mb);
  }
  return {p.sched, tiles};
}

}  // namespace

TORCH_LIBRARY_IMPL(facenms, CPU, m) { m.impl("_nms_plan", &nms_plan_cpu); }

}  // namespace facenms
