"""Per-kernel time of one nms call and of one select in each mode, at 42M
WebFace-like fp16 faces (d = 512), from torch.profiler.

    python3 bench/gpu/profile.py                      # 42M on the GPU
    python3 bench/gpu/profile.py --device cpu --tiny  # the script itself

Prints, per call, the wall time and a table of the kernels (and the other
device work) by total time, to read against the per-stage estimate in
bench/gpu/README.md.
"""
import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

import facenms  # noqa: E402
from facenms.core import ops  # noqa: E402


def run(name, fn, device, rows):
    fn()  # warm-up: allocator, lazy init
    bench.sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        bench.sync(device)
    wall = time.perf_counter() - t0
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print("## %s: %.1f ms wall (under the profiler)\n" % (name, 1e3 * wall))
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 20k faces, d=64")
    ap.add_argument("--faces", default="42M")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.55)
    ap.add_argument("--rows", type=int, default=20, help="table rows per call")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    n = 20_000 if args.tiny else int(float(args.faces.rstrip("M")) * 1e6) \
        if args.faces.endswith("M") else int(args.faces)
    d = 64 if args.tiny else args.dim
    t0 = time.time()
    x, labels = bench.webface_like(n, d, dev)
    bench.sync(dev)
    order, offsets, sizes = bench.grouped(x, labels)
    print("# %d faces, %d identities, d=%d, %s, generated in %.1f s\n" % (
        n, len(sizes), d, x.dtype, time.time() - t0))
    thr1 = torch.tensor([args.threshold], dtype=torch.float64, device=dev)
    norms, _ = ops.prepare(x, order, offsets)
    run("nms op, 1 threshold", lambda: ops.nms(x, order, offsets, thr1, 1), dev, args.rows)
    run("nms_with_norms op, 1 threshold",
        lambda: torch.ops.facenms.nms_with_norms(x, order, offsets, thr1, 1, norms), dev,
        args.rows)
    run("prepare op", lambda: ops.prepare(x, order, offsets), dev, args.rows)
    run("select threshold=%.2f" % args.threshold,
        lambda: facenms.select(x, labels, threshold=args.threshold), dev, args.rows)
    run("select ratio=0.6", lambda: facenms.select(x, labels, ratio=0.6), dev, args.rows)
    run("select ratio=0.6 per_identity",
        lambda: facenms.select(x, labels, ratio=0.6, per_identity=True), dev, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
