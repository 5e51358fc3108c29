"""Work per stage of one select at a fixed threshold on WebFace-like sizes,
from the identity-size distribution alone (no GPU): bytes each kernel moves,
the time that takes at the HBM limit and at a realistic fraction of it, and
the exact similarity work. The table in bench/gpu/README.md comes from

    python3 bench/gpu/estimate.py --faces 42M

Read a profile (bench/gpu/profile.py) against it: a kernel far above its
line is latency-bound or doing more work than counted here.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

WARP_MAX, TILE = 32, 64  # kWarpMax, kTile of csrc/nms_common.h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default="42M")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--bytes-per-element", type=int, default=2)
    ap.add_argument("--hbm", type=float, default=4800.0, help="GB/s")
    ap.add_argument("--achieved", type=float, default=0.6,
                    help="fraction of the HBM limit a streaming kernel reaches")
    ap.add_argument("--tflops", type=float, default=790.0, help="16-bit tensor-core TFLOP/s")
    args = ap.parse_args(argv)
    n = int(float(args.faces.rstrip("M")) * 1e6) if args.faces.endswith("M") else int(args.faces)
    s = bench.identity_sizes(n, torch.Generator().manual_seed(0)).double()
    row = args.dim * args.bytes_per_element
    small, large = s[s <= WARP_MAX], s[s > WARP_MAX]
    nb = torch.ceil(large / TILE)
    tiles = nb * (nb + 1) / 2
    # rows read by the tile kernel: two blocks per off-diagonal tile, one per diagonal
    tile_rows = (nb * (nb - 1) / 2 * 2 * TILE + nb * TILE).sum()
    mask = ((nb * TILE) ** 2).sum()
    pairs = (s * (s - 1) / 2).sum()
    feat = n * row
    print("%d faces, %d identities (mean %.1f, largest %d), d=%d, %d-byte elements: "
          "features %.1f GB" % (n, len(s), float(s.mean()), int(s.max()), args.dim,
                                args.bytes_per_element, feat / 1e9))
    print("identities <= %d faces: %d (%.1f%% of faces); larger: %d with %d tiles of %dx%d, "
          "mask %.2f GB; sum(n^2)/N = %.0f\n" % (
              WARP_MAX, len(small), 100 * float(small.sum()) / n, len(large), int(tiles.sum()),
              TILE, TILE, float(mask) / 1e9, float((s * s).sum()) / n))
    for lo, hi, what in [(WARP_MAX + 1, 2 * WARP_MAX, "one 64 x 64 tile, walk_kernel<32>"),
                         (2 * WARP_MAX + 1, 256, "walk_kernel<32>"),
                         (257, None, "walk_kernel<256>")]:
        m = (s >= lo) & (s <= hi) if hi else s >= lo
        print("  identities of %d-%s faces: %d, %.1f%% of faces (%s)" % (
            lo, hi or "", int(m.sum()), 100 * float(s[m].sum()) / n, what))
    print()
    bw = args.hbm * 1e9
    sort = 8 * 32 * n  # one 64-bit key + value radix sort: 8 passes, read + write
    # (name, HBM bytes, L2 bytes beyond those, note). The tiles of one identity
    # are consecutive in the tile table and run together, so its rows come
    # from HBM about once and from L2 on every further tile.
    stages = [
        ("group: unique + stable sort of the labels", 2 * sort, 0, "2 sorts (Python side)"),
        ("prepare: norms + centre, then scores", feat, feat,
         "2nd read of an identity's rows: from L2"),
        ("rank: key sort + identity sort + gathers", 2 * sort + 4 * 8 * n, 0,
         "2 sorts (Python side)"),
        ("nms: row_inv (none with nms_with_norms)", feat, 0, "1 read of the features"),
        ("nms: identities <= 32, a warp each", float(small.sum()) * row, 0, ""),
        ("nms: tiles + byte mask", float(large.sum()) * row + float(mask),
         float(tile_rows) * row - float(large.sum()) * row, "L2: rows per tile"),
        ("nms: walk over the mask", float(mask) / 2, 0, "latency: a barrier per kept face"),
    ]
    print("| stage | HBM GB | L2 GB | at the HBM limit (ms) | at %.0f%% of it (ms) | note |" % (
        100 * args.achieved))
    print("|---|---:|---:|---:|---:|---|")
    tot = [0.0, 0.0]
    for name, b, l2, note in stages:
        t = b / bw * 1e3
        tot[0] += t
        tot[1] += t / args.achieved
        print("| %s | %.1f | %.0f | %.1f | %.1f | %s |" % (name, b / 1e9, l2 / 1e9, t,
                                                        t / args.achieved, note))
    print("| total (nms) | | | %.1f | %.1f | |" % tuple(tot))
    no_inv = feat / bw * 1e3
    print("| total (nms_with_norms) | | | %.1f | %.1f | |" % (tot[0] - no_inv,
                                                           tot[1] - no_inv / args.achieved))
    flops = 2 * pairs * args.dim
    print("\nexact similarity work: %.3g pairs, %.1f TFLOP: %.1f ms at %.0f TFLOP/s "
          "(overlaps the reads)" % (float(pairs), float(flops) / 1e12,
                                    float(flops) / args.tflops / 1e9, args.tflops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
