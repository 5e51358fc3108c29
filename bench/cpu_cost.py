"""CPU time per face of each selection step, one thread, in memory.

    python bench/cpu_cost.py [--faces 300000] [--dim 512]

CPU seconds (user + system) rather than wall time, so that the numbers hold on
a machine shared with other jobs. Data: bench/out_of_core.template (fp16,
WebFace-like identity sizes).
"""
import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the bench helpers; facenms itself is the installed one

import facenms  # noqa: E402
from facenms.core import ops  # noqa: E402
from facenms.core.csr import group  # noqa: E402
from facenms.core.ranking import rank  # noqa: E402
from out_of_core import template  # noqa: E402
import which  # noqa: E402


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(1)
    x, sizes = template(args.faces, args.dim, seed=3)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    n = len(x)
    print("%d faces x %d fp16, sum(n^2)/N %.0f, load %s" % (
        n, args.dim, (sizes.astype(float) ** 2).sum() / n, os.getloadavg()))
    for kw in (dict(threshold=0.7), dict(ratio=0.6)):
        c, w = cpu(), time.perf_counter()
        _, info = facenms.select(x, lab, return_info=True, **kw)
        c, w = cpu() - c, time.perf_counter() - w
        print("select %-18s %6.2f us/face CPU (%7.0f faces per core-second), wall %.1f s, "
              "%d passes" % (kw, c / n * 1e6, n / c, w, info.passes))
    xt = torch.from_numpy(x)
    _, order, offsets, s = group(lab, n, xt.device)
    c = cpu()
    order = rank(xt, order, offsets, s, method="sparsity")
    steps = {"rank": cpu() - c}
    for lanes in (1, 64):
        ts = torch.linspace(0.5, 0.8, lanes, dtype=torch.float64) if lanes > 1 else \
            torch.tensor([0.7], dtype=torch.float64)
        c = cpu()
        ops.nms(xt, order, offsets, ts, 1)
        steps["nms pass, %d threshold%s" % (lanes, "s" if lanes > 1 else "")] = cpu() - c
    for k, v in steps.items():
        print("%-26s %6.2f us/face CPU (%7.0f faces per core-second)" % (k, v / n * 1e6, n / v))


if __name__ == "__main__":
    which.announce()
    main()
