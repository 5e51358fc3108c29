"""What the faces cost in `facenms report`: a 1M-face report with 2,000 thumbnails against
the plots-only report plus the decoding of those thumbnails on their own.

    python bench/report_html.py [--faces 1000000] [--dim 128] [--repeats 3]

Features: facenms.eval.embeddings.webface_like (about 20 faces per identity);
images: a few generated 112x112 JPEGs, each face reading one of them (decoding
cost does not depend on which). Per repeat, interleaved: A = write_report
without a dataset (plots, report.md, the page); B = make_thumbnails of 2,000
faces alone; C = write_report with the dataset and 2,000 thumbnails. Prints
the medians and C / (A + B); the target is below 1.5.
"""
import argparse
import io
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image


import facenms  # noqa: E402
import which  # noqa: E402
from facenms.data.base import FaceDataset  # noqa: E402
from facenms.eval.embeddings import webface_like  # noqa: E402
from facenms.pipeline.report import write_report  # noqa: E402
from facenms.pipeline.thumbs import make_thumbnails  # noqa: E402


class Reused(FaceDataset):
    """N faces whose images are `k` JPEGs, reused in turn."""

    def __init__(self, labels, k=64, size=112, seed=0):
        self.labels = labels
        self.num_classes = int(labels.max()) + 1
        rng = np.random.default_rng(seed)
        self.images = []
        for _ in range(k):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(a).resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            self.images.append(buf.getvalue())

    def read_bytes(self, i):
        return self.images[int(i) % len(self.images)]

    def name(self, i):
        return "face%d.jpg" % int(i)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--thumbnails", type=int, default=2000)
    args = ap.parse_args()
    t = time.perf_counter()
    x, labels = webface_like(args.faces, dim=args.dim, seed=0)
    keep, info = facenms.select(x, labels, ratio=0.6, return_info=True)
    ds = Reused(labels)
    print("%d faces, %d identities, d=%d; selection %.1f s" % (
        len(labels), len(np.unique(labels)), args.dim, time.perf_counter() - t), flush=True)
    rows = np.random.default_rng(1).choice(len(labels), args.thumbnails, replace=False)
    work = tempfile.mkdtemp(prefix="facenms-bench-report-")
    # enough identities that the page reaches the thumbnail limit
    kw = dict(threshold=info.threshold, info=info, sample=(40, 40, 80))
    times = {"A plots only": [], "B thumbnails alone": [], "C with faces": []}
    try:
        for r in range(args.repeats):
            for name in times:
                out = os.path.join(work, "r%d%s" % (r, name[0]))
                t = time.perf_counter()
                if name.startswith("A"):
                    write_report(out, x, labels, keep, **kw)
                elif name.startswith("B"):
                    made = make_thumbnails(ds, rows)
                    assert len(made) == len(rows)
                else:
                    write_report(out, x, labels, keep, dataset=ds,
                                 max_thumbnails=args.thumbnails, **kw)
                    n = len(os.listdir(os.path.join(out, "thumbs")))
                    assert n == args.thumbnails, n
                times[name].append(time.perf_counter() - t)
                print("  repeat %d %-20s %.2f s" % (r, name, times[name][-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print("%-20s median %.2f s (min %.2f, max %.2f)" % (k, v, min(times[k]), max(times[k])))
    a, b, c = med.values()
    print("C / (A + B) = %.2f (target < 1.5); C - A = %.2f s for %d thumbnails"
          % (c / (a + b), c - a, args.thumbnails))


if __name__ == "__main__":
    which.announce()
    main()
