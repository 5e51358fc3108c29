"""`facenms report`: plots and a summary of a selection."""
import os

import numpy as np

from .common import in_dataset_order, load_array


def run(args):
    from ..core.inputs import check_indices
    from ..pipeline.report import write_report
    feats = load_array(args.features, "features")
    labels = load_array(args.labels, "labels", mmap=False)
    keep = check_indices(load_array(args.keep, "keep", mmap=False), len(feats), args.keep)
    perm, labels, _ = in_dataset_order(args.features, labels)
    if perm is not None:  # keep holds dataset positions; the rows are in the sorted order
        where = np.empty_like(perm)
        where[perm] = np.arange(len(perm))
        keep = np.sort(where[np.asarray(keep)])
    paths = write_report(args.out, feats, labels, keep, threshold=args.threshold,
                         sample_pairs=args.sample_pairs)
    print("facenms report: wrote %s" % ", ".join(sorted(os.path.basename(p)
                                                        for p in paths.values())))
    print("  in %s" % args.out)


def add(sub):
    r = sub.add_parser("report", help="plots and a summary of a selection")
    r.add_argument("--features", required=True, help=".npy of (N, d) float features")
    r.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    r.add_argument("--keep", required=True, help=".npy of the kept indices")
    r.add_argument("--out", required=True, help="directory to write the report into")
    r.add_argument("--threshold", type=float, help="the threshold used, to mark on the plots")
    r.add_argument("--sample-pairs", type=int, default=200_000,
                   help="within-identity pairs sampled for the similarity plot")
    r.set_defaults(func=run)
    return r
