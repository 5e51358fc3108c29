// The schedule of an nms pass, built from the CSR offsets with ATen ops on
// the offsets' device (no host loop): identities by size, largest first, and
// for those larger than kWarpMax their tile table and byte-mask slots. The
// CUDA kernels consume it; the CUDA library also exposes it on the CPU
// (facenms::_nms_plan, nms_plan_kernel.cpp) so tests can check the tiling covers every
// pair exactly once.
#pragma once

#include <ATen/ATen.h>

#include "nms_common.h"

namespace facenms {

struct NmsPlan {
  at::Tensor sched;      // (C,) identity ids, sizes descending, ties by id
  at::Tensor sizes;      // (C,) their sizes
  at::Tensor tiles;      // (n_tiles,) tile_pack(s, kb, mb) of every tile
  at::Tensor mask_base;  // (C,) exclusive prefix sums of mask_bytes(size)
  int64_t n_large = 0;   // sched[:n_large] are the identities > kWarpMax
  int64_t n_wide = 0;    // sched[:n_wide] are those > kWalkWideMin
  int64_t n_tiles = 0;   // tiles over all of them
  int64_t mask_total = 0;  // bytes of mask they need
  int64_t max_size = 0;    // largest identity
};

// One small device-to-host copy (five scalars) sizes the workspace; the tile
// table is then built on the device, so a tile kernel reads its identity and
// blocks with one load instead of searching the prefix sums.
inline NmsPlan make_plan(const at::Tensor& offsets) {
  NmsPlan p;
  const int64_t c = offsets.numel() - 1;
  auto sizes = offsets.slice(0, 1) - offsets.slice(0, 0, c);
  auto sorted = at::sort(sizes, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  p.sizes = std::get<0>(sorted).contiguous();
  p.sched = std::get<1>(sorted).contiguous();
  auto large = p.sizes.gt(kWarpMax);
  auto nb = at::where(large, at::floor_divide(p.sizes + (kTile - 1), kTile),
                      at::zeros_like(p.sizes));
  auto count = at::floor_divide(nb * (nb + 1), 2);
  auto tile_cum = at::cumsum(count, 0);
  auto bytes = (nb * kTile) * (nb * kTile);
  auto bytes_cum = at::cumsum(bytes, 0);
  p.mask_base = (bytes_cum - bytes).contiguous();
  auto host = at::stack({large.sum().to(at::kLong), tile_cum[c - 1], bytes_cum[c - 1],
                         p.sizes[0], p.sizes.gt(kWalkWideMin).sum().to(at::kLong)})
                  .cpu();
  const int64_t* h = host.data_ptr<int64_t>();
  p.n_large = h[0];
  p.n_tiles = h[1];
  p.mask_total = h[2];
  p.max_size = h[3];
  p.n_wide = h[4];
  TORCH_CHECK(p.max_size <= kMaxTiledFaces, "nms: an identity has ", p.max_size,
              " faces; at most ", kMaxTiledFaces, " are supported (its similarity mask alone",
              " would take ", p.max_size / 1024 * (p.max_size / 1024), " MiB)");
  // Tile t of the pass: identity s (t - first tile of s = u, numbered
  // mb-major: u = mb (mb + 1) / 2 + kb), decoded for all t at once.
  auto opt = offsets.options();
  // (repeats-only overload: s = position of each tile's identity)
  auto s = at::repeat_interleave(count.slice(0, 0, p.n_large),
                                 std::optional<int64_t>(p.n_tiles));
  auto first = (tile_cum - count).index_select(0, s);
  auto u = at::arange(p.n_tiles, opt) - first;
  auto mb = at::floor((at::sqrt(u.to(at::kDouble) * 8.0 + 1.0) - 1.0) * 0.5).to(at::kLong);
  // the square root may be off by one either way
  mb = mb - (at::floor_divide(mb * (mb + 1), 2) > u).to(at::kLong);
  mb = mb + (at::floor_divide((mb + 1) * (mb + 2), 2) <= u).to(at::kLong);
  auto kb = u - at::floor_divide(mb * (mb + 1), 2);
  p.tiles = (at::bitwise_left_shift(s, 32) | at::bitwise_left_shift(kb, 16) | mb).contiguous();
  return p;
}

}  // namespace facenms
