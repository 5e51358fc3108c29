"""Small nms / prepare / nms_with_norms calls for compute-sanitizer (memcheck,
racecheck): every identity class and load path once, each checked against
the CPU ops so a run also says whether the answers were right.

    compute-sanitizer --tool memcheck python3 bench/gpu/sanitize.py
    python3 bench/gpu/sanitize.py --device cpu --tiny  # the script itself, no GPU

Sizes {0, 1, 16, 17, 32, 33, 64, 65, 256, 257, 6000} (one identity each, then
all together); fp16 at d = 512 (16-byte loads) and d = 511 (one element per
load), fp32 at d = 64; 1 and 64 threshold lanes, per-identity thresholds;
min_keep = 3. Exits 1 on any mismatch with the CPU.
"""
import argparse
import sys
import time

import torch

import facenms  # noqa: F401
from facenms.core import ops

SIZES = [0, 1, 16, 17, 32, 33, 64, 65, 256, 257, 6000]


def case(sizes, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    n = int(sum(sizes))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    # near duplicates so that some faces are suppressed at every threshold
    dup = torch.rand(n, generator=g) < 0.3
    x[1:][dup[1:]] = x[:-1][dup[1:]] + 0.1 * torch.randn(int(dup[1:].sum()), d, generator=g,
                                                          dtype=torch.float64)
    x = x.to(dtype)
    order = torch.randperm(n, generator=g)
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0, out=offsets[1:])
    return x, order, offsets


def thresholds(lanes, n_ident, per_ident):
    # above the bulk of random similarities, below the near duplicates
    t = torch.linspace(0.2, 0.9, lanes, dtype=torch.float64)
    if per_ident:
        t = t[None, :] + 0.001 * torch.arange(max(n_ident, 0), dtype=torch.float64)[:, None]
    return t.contiguous()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true",
                    help="smaller rows for the 6000-face identity (racecheck is slow)")
    ap.add_argument("--tiny", action="store_true", help="smoke test: d <= 64, no 6000-face identity")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    configs = [(torch.float16, 512), (torch.float16, 511), (torch.float32, 64)]
    sizes_all = SIZES
    if args.tiny:
        configs = [(torch.float16, 64), (torch.float16, 63), (torch.float32, 16)]
        sizes_all = [s for s in SIZES if s < 1000]
    groups = [[s] for s in sizes_all] + [sizes_all]
    bad, calls, t0 = 0, 0, time.time()
    # the 6000-face cases last: a run cut short by its budget has checked the rest
    cases = sorted(((dt, d, g) for dt, d in configs for g in groups),
                   key=lambda c: max(c[2]) > 5888)
    for dtype, d, sizes in cases:
        dd = 64 if args.quick and max(sizes) > 5888 else d
        x, order, offsets = case(sizes, dd, dtype, seed=len(sizes) * 131 + dd + sum(sizes))
        xd, od, offd = x.to(dev), order.to(dev), offsets.to(dev)
        cn, cs = ops.prepare(x, order, offsets)
        gn, gs = ops.prepare(xd, od, offd)
        calls += 1
        if not torch.allclose(gn.cpu(), cn, rtol=1e-12, atol=0) or \
                bool(((gs.cpu() - cs).abs() > 2.0 ** -20).any()):
            bad += 1
            print("MISMATCH prepare", dtype, dd, sizes)
        for lanes in (1, 64):
            for per_ident in (False, True):
                if per_ident and lanes == 1:
                    continue
                thr = thresholds(lanes, len(sizes), per_ident)
                cb, cc = ops.nms(x, order, offsets, thr, 3)
                gb, gc = ops.nms(xd, od, offd, thr.to(dev), 3)
                nb, nc = torch.ops.facenms.nms_with_norms(xd, od, offd, thr.to(dev), 3, gn)
                calls += 2
                # random data: a similarity within float rounding of a
                # threshold may flip a face (parity.py checks each such case)
                diff = int((gb.cpu() != cb).sum())
                same = torch.equal(gb, nb) and torch.equal(gc, nc)
                if diff > 2 + len(cb) // 1000 or not same:
                    bad += 1
                    print("MISMATCH nms", dtype, dd, sizes, "lanes", lanes, "per_ident",
                          per_ident, "faces differing from the CPU:", diff,
                          "nms_with_norms == nms:", same)
        print("checked %s d=%d sizes %s (%.1f s)" % (dtype, dd, sizes, time.time() - t0))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print("%d calls, %d mismatches, %.1f s" % (calls, bad, time.time() - t0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
