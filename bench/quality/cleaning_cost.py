"""label_issues against one select threshold pass on the same features, in turn, best of 3.

    python bench/quality/cleaning_cost.py [--faces 200000] [--dim 512] [--threads 1]

WebFace-like embeddings (facenms.eval.embeddings.webface_like); the threshold
is the one select(ratio=0.6) finds, so the pass is the one a selection runs.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import facenms  # noqa: E402
import which  # noqa: E402
from facenms.eval.embeddings import webface_like  # noqa: E402


def best_pair(f, g, n):
    """Best times of f and of g, run in turn n times each (a change in the shared
    machine's load falls on both)."""
    best_f = best_g = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best_f = min(best_f, time.perf_counter() - t)
        t = time.perf_counter()
        g()
        best_g = min(best_g, time.perf_counter() - t)
    return best_f, best_g


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, labels = webface_like(args.faces, dim=args.dim, seed=0)
    _, info = facenms.select(x, labels, ratio=0.6, return_info=True)
    issues, li = facenms.label_issues(x, labels, return_info=True)
    t_li, t_pass = best_pair(lambda: facenms.label_issues(x, labels),
                             lambda: facenms.select(x, labels, threshold=info.threshold),
                             args.repeats)
    print("%d faces, d=%d, %d identities, %d threads: label_issues %.3f s (%d candidates, %d "
          "flagged), one select pass %.3f s: ratio %.2f" % (
              len(x), args.dim, len(info.identities), args.threads, t_li, li.n_candidates,
              li.flagged, t_pass, t_li / t_pass))


if __name__ == "__main__":
    which.announce()
    main()
