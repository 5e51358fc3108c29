"""`facenms report`: plots, a summary and an HTML page (with the faces) of a selection."""
import json
import os

import numpy as np

from .common import CommandError, in_dataset_order, load_array, parse_bytes, positive_int


def _info(path):
    if path is None:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CommandError("cannot read the selection summary %s: %s" % (path, e)) from None


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
        keep = np.asarray(keep)
        if keep.ndim == 1 and keep.dtype.kind in "iu" and len(keep) and (
                keep.min() < 0 or keep.max() >= len(perm)):
            raise CommandError("keep has indices outside [0, %d)" % len(perm))
        keep = np.sort(where[keep]) if keep.ndim == 1 and keep.dtype.kind in "iu" else keep
    issues = args.label_issues
    if perm is not None and issues is not None:  # like keep: dataset positions -> rows
        from ..pipeline.html_report import load_label_issues
        issues = load_label_issues(issues, labels[where])
        issues["index"] = where[issues["index"]]
    info = _info(args.info)
    threshold = args.threshold if args.threshold is not None else (info or {}).get("threshold")
    paths = write_report(args.out, feats, labels, keep, threshold=threshold,
                         sample_pairs=args.sample_pairs, dataset=args.dataset,
                         dataset_index=perm, label_issues=issues, info=info,
                         identities=args.identity or (), rank=args.rank, seed=args.seed,
                         max_thumbnails=args.max_thumbnails,
                         max_bytes=parse_bytes(args.max_bytes))
    print("facenms report: wrote %s" % ", ".join(sorted(os.path.basename(p)
                                                        for p in paths.values())))
    print("  in %s" % args.out)
    print("  open %s" % os.path.abspath(paths["index"]))


def add(sub):
    r = sub.add_parser("report", help="plots, a summary and an HTML page of a selection")
    r.add_argument("--features", required=True, help=".npy of (N, d) float features")
    r.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    r.add_argument("--keep", required=True, help=".npy of the kept indices")
    r.add_argument("--out", required=True, help="directory to write the report into")
    r.add_argument("--threshold", type=float, help="the threshold used, to mark on the plots")
    r.add_argument("--sample-pairs", type=int, default=200_000,
                   help="within-identity pairs sampled for the similarity plot")
    r.add_argument("--dataset", help="the images (RecordIO or image folder): the page then "
                                     "shows the faces")
    r.add_argument("--identity", type=int, action="append",
                   help="also show this label's gallery (repeatable)")
    r.add_argument("--label-issues", help="CSV (index,label,score,other_label,"
                                          "other_similarity) or .npy of flagged faces")
    r.add_argument("--info", help="the selection's JSON summary (facenms select --info): "
                                  "threshold and passes")
    r.add_argument("--rank", choices=["sparsity", "centrality", "random"],
                   help="the ranking the selection used (default sparsity)")
    r.add_argument("--seed", type=int, default=0,
                   help="the selection's seed (rank random) and the sample's")
    r.add_argument("--max-thumbnails", type=positive_int, default=2000,
                   help="at most this many faces on the page")
    r.add_argument("--max-bytes", default="20M", help="at most this size of the page with "
                                                      "its thumbnails and plots")
    r.set_defaults(func=run)
    return r
