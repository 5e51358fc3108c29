"""Throughput of facenms against plain numpy, plain torch and faiss, one run.

    python bench/compare.py [--faces 200000] [--dim 512] [--threshold 0.7]

Prints a markdown table: faces/s, time, and speed-up of facenms over each
baseline on the same WebFace-like synthetic set, plus the fp32 compute limit
of this machine from a measured GEMM rate.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import facenms  # noqa: E402
import speed_baselines as sb  # noqa: E402
from facenms.eval.embeddings import webface_like  # noqa: E402
import which  # noqa: E402


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def gemm_rate(dim, dtype=torch.float32):
    a = torch.randn(4096, dim, dtype=dtype)
    b = torch.randn(dim, 4096, dtype=dtype)
    a @ b
    t, _ = best_of(lambda: a @ b, 5)
    return 2 * 4096 * 4096 * dim / t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip", default="", help="comma-separated baselines to skip")
    args = p.parse_args(argv)

    x, labels = webface_like(args.faces, dim=args.dim, seed=0)
    n, t = len(x), args.threshold
    sizes = np.bincount(labels)
    pairs = float((sizes.astype(np.float64) ** 2).sum())
    print("%d faces, %d identities, d=%d, sum(n_c^2)/N = %.0f, %d threads, torch %s" % (
        n, len(sizes), args.dim, pairs / n, torch.get_num_threads(), torch.__version__))

    rows = []
    ref_time, keep = best_of(lambda: facenms.select(x, labels, threshold=t), args.repeat)
    rows.append(("facenms, threshold, fp32", ref_time))
    x16 = x.astype(np.float16)
    t16, _ = best_of(lambda: facenms.select(x16, labels, threshold=t), args.repeat)
    rows.append(("facenms, threshold, fp16", t16))
    xb = torch.from_numpy(x).bfloat16()
    tb, _ = best_of(lambda: facenms.select(xb, labels, threshold=t), args.repeat)
    rows.append(("facenms, threshold, bf16", tb))
    tr, (_, info) = best_of(lambda: facenms.select(x, labels, ratio=args.ratio,
                                                   return_info=True), args.repeat)
    rows.append(("facenms, ratio %.2f, fp32 (%d passes, achieved %.3f%%)" % (
        args.ratio, info.passes, 100 * info.ratio), tr))
    tr16, _ = best_of(lambda: facenms.select(x16, labels, ratio=args.ratio), args.repeat)
    rows.append(("facenms, ratio %.2f, fp16" % args.ratio, tr16))

    groups = sb.ranked_groups(x, labels)
    trank, _ = best_of(lambda: sb.numpy_rank(x, labels), args.repeat)
    rows.append(("numpy grouping + sparsity ranking alone", trank))
    skip = set(args.skip.split(","))
    agree = {}
    for name, fn in (("numpy", sb.numpy_nms), ("torch", sb.torch_nms), ("faiss", sb.faiss_nms)):
        if name in skip:
            continue
        try:
            tb_, out = best_of(lambda: fn(x, groups, t), args.repeat)
        except ImportError as e:
            print("skipping %s: %s" % (name, e))
            continue
        agree[name] = len(np.intersect1d(out, keep)) / max(len(keep), len(out))
        rows.append(("%s per identity + greedy walk, given the ranking" % name, tb_))
        whole = sb.whole_job(fn)
        tw, _ = best_of(lambda: whole(x, labels, t), args.repeat)
        rows.append(("**%s whole job** (numpy ranking + the above)" % name, tw))

    print()
    print("| method (threshold %.2f unless said) | time (s) | faces/s | facenms fp32 threshold "
          "is faster by |" % t)
    print("|---|---:|---:|---:|")
    for name, sec in rows:
        print("| %s | %.3f | %s | %.1fx |" % (name, sec, "{:,.0f}".format(n / sec), sec / ref_time))
    print()
    print("best of %d runs each; agreement of the baselines' kept sets with facenms: %s" % (
        args.repeat, ", ".join("%s %.5f" % kv for kv in agree.items())))
    rate = gemm_rate(args.dim)
    limit = rate / (pairs / 2 * 2 * args.dim / n)  # all pairs of each identity, once
    kept = np.bincount(labels[keep], minlength=len(sizes)).astype(np.float64)
    walk = rate / ((kept ** 2).sum() / 2 * 2 * args.dim / n)  # kept pairs only: the walk's floor
    print("fp32 GEMM here: %.0f GFLOP/s -> all within-identity pairs at that rate: %s faces/s; "
          "only the kept pairs the walk must compare: %s faces/s; facenms fp32 threshold: %s "
          "faces/s (%.0f%% and %.0f%% of them)" % (
              rate / 1e9, "{:,.0f}".format(limit), "{:,.0f}".format(walk),
              "{:,.0f}".format(n / ref_time), 100 * (n / ref_time) / limit,
              100 * (n / ref_time) / walk))


if __name__ == "__main__":
    which.announce()
    main()
