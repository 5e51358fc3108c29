"""The CPU walk's FLOP rate against fp32 torch.mm, per clone and dtype.

    python bench/cpu_rate.py [--faces 120000] [--dim 512] [--threshold 0.8]
                             [--duplicates 0.33] [--repeat 3] [--isa v4,v3,baseline]

Runs each clone of the CPU kernels the CPU supports (FACENMS_CPU_ISA, one
subprocess each, interleaved over --repeat rounds) on one WebFace-like set.
Each subprocess times facenms.select for fp32, fp16 and bf16 input and fp32
torch.mm (4096 x d by d x 4096, best of 5) in the same process and threads.
Only the dot products the greedy walk needs count: each face against the
faces kept before it in its identity (newest first, as the walk goes), up to
its first suppression; fewer near-duplicates (--duplicates, the share of faces
that copy an earlier face of their identity) mean longer walks. Prints medians
over the rounds (min-max in brackets) and the ratio walk / GEMM. Imports the facenms on the path (PYTHONPATH or the
installed package) and prints which one.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import facenms
from facenms.core.extension import build_info
from facenms.core.reference import rank_order, unit_rows
from facenms.eval.embeddings import webface_like

DTYPES = ("fp32", "fp16", "bf16")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def dots_needed(x, labels, t):
    """Dot products the greedy walk needs, summed over faces (float64 similarities)."""
    y = unit_rows(x)
    total = 0
    for rows in rank_order(x, labels):
        g = y[rows] @ y[rows].T
        kept = []
        for i in range(len(rows)):
            sims = g[i, kept[::-1]]  # newest kept first
            hit = np.flatnonzero(sims > t)
            total += int(hit[0]) + 1 if len(hit) else len(kept)
            if not len(hit):
                kept.append(i)
    return total


def gemm_rate(dim):
    a, b = torch.randn(4096, dim), torch.randn(dim, 4096)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 4096 * 4096 * dim / best


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def child(data_dir, threshold):
    """One process, one clone: select times per dtype and the GEMM rate, as JSON."""
    x = np.load(os.path.join(data_dir, "x.npy"))
    labels = np.load(os.path.join(data_dir, "labels.npy"))
    inputs = {"fp32": x, "fp16": x.astype(np.float16),
              "bf16": torch.from_numpy(x).bfloat16()}
    out = {"isa": build_info()["cpu_isa"], "threads": torch.get_num_threads(),
           "gemm": gemm_rate(x.shape[1])}
    for name in DTYPES:
        facenms.select(inputs[name], labels, threshold=threshold)  # warm
        out[name] = min(_timed(lambda: facenms.select(inputs[name], labels,
                                                      threshold=threshold)) for _ in range(4))
    out["gemm"] = max(out["gemm"], gemm_rate(x.shape[1]))
    print(json.dumps(out))


def run_child(data_dir, isa, threshold):
    env = dict(os.environ, FACENMS_CPU_ISA=isa)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", data_dir,
                        "--threshold", str(threshold)], env=env, capture_output=True,
                       text=True)
    if p.returncode:
        raise SystemExit("cpu_rate: the %s run failed: %s" % (isa, p.stderr.strip()[-500:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def _fmt(vals, f):
    return "%s (%s-%s)" % (f(np.median(vals)), f(min(vals)), f(max(vals)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=120_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--duplicates", type=float, default=0.33)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--isa", default=None, help="clones to run (default: all this CPU runs)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.threshold)

    info = build_info()
    isas = (args.isa or info.get("cpu_isa_supported", "baseline")).split(",")
    print("facenms from %s; %s; %d threads; torch %s" % (
        os.path.dirname(facenms.__file__), cpu_model(), torch.get_num_threads(),
        torch.__version__))
    x, labels = webface_like(args.faces, dim=args.dim, seed=0, duplicates=args.duplicates)
    x = np.ascontiguousarray(x, dtype=np.float32)
    sizes = np.bincount(labels)
    need = dots_needed(x, labels, args.threshold) / len(x)
    print("%d faces x %d, %d identities, sum(n_c^2)/N = %.0f, threshold %g: the walk needs "
          "%.1f dot products per face" % (len(x), args.dim, (sizes > 0).sum(),
                                          (sizes.astype(float) ** 2).sum() / len(x),
                                          args.threshold, need))
    runs = {isa: [] for isa in isas}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "x.npy"), x)
        np.save(os.path.join(tmp, "labels.npy"), labels)
        for _ in range(args.repeat):  # interleaved: a busy spell hits every clone alike
            for isa in isas:
                runs[isa].append(run_child(tmp, isa, args.threshold))
    flop = need * 2 * args.dim  # per face
    print()
    print("| clone | input | faces/s | dot products / face | walk GFLOP/s | fp32 torch.mm "
          "GFLOP/s | walk / mm |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for isa in isas:
        gemm = [r["gemm"] / 1e9 for r in runs[isa]]
        for name in DTYPES:
            fps = [len(x) / r[name] for r in runs[isa]]
            rate = [f * flop / 1e9 for f in fps]
            ratio = [f * flop / r["gemm"] for f, r in zip(fps, runs[isa])]
            print("| %s | %s | %s | %.1f | %s | %s | %s |" % (
                runs[isa][0]["isa"], name, _fmt(fps, lambda v: "{:,.0f}".format(v)), need,
                _fmt(rate, lambda v: "%.1f" % v), _fmt(gemm, lambda v: "%.0f" % v),
                _fmt(ratio, lambda v: "%.2f" % v)))
    print()
    print("medians of %d interleaved runs (min-max); faces/s: facenms.select at threshold %g, "
          "best of 4 per run; ratio per run, with the GEMM rate of that run's process" % (
              args.repeat, args.threshold))


if __name__ == "__main__":
    main()
