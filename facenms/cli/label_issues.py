"""`facenms label-issues`: the faces most likely mislabeled, as a CSV.

    facenms label-issues --features F.npy --labels L.npy --out issues.csv

On a file written by sort-features the indices are dataset positions, as
`select` writes them.
"""
import os

from ..io import check_not_inputs
from .common import add_memory_args, in_dataset_order, load_array, parse_bytes


def add(sub):
    s = sub.add_parser("label-issues", help="find the faces most likely filed under the "
                                            "wrong identity (a CSV)")
    s.add_argument("--features", required=True, help=".npy of (N, d) float features")
    s.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    s.add_argument("--out", required=True, help="where to write the CSV (index, label, score, "
                                                "other_label, other_similarity)")
    s.add_argument("--threshold", type=float, help="flag faces scoring above this many "
                                                   "robust sigmas (default 8)")
    s.add_argument("--min-faces", type=int, help="judge only identities with at least this "
                                                 "many faces (default 3)")
    s.add_argument("--search", default="exact", choices=["exact", "faiss"],
                   help="nearest other identity: blocked exact search (default) or a faiss "
                        "index (approximate from 100k identities: can miss flags)")
    s.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")
    add_memory_args(s)
    s.add_argument("--distributed", action="store_true",
                   help="split the work over torchrun's processes (default when WORLD_SIZE > 1)")
    s.set_defaults(func=run)


def run(args):
    from ..pipeline.cleaning import write_label_issues
    from ..scale.dispatch import label_issues
    from ..scale.dist import is_main
    check_not_inputs([args.out], [args.features, args.labels])
    feats = load_array(args.features, "features")
    labels = load_array(args.labels, "labels", mmap=False)
    perm, labels, _ = in_dataset_order(args.features, labels)
    distributed = True if args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1 \
        else None
    issues, info = label_issues(
        feats, labels, threshold=args.threshold, min_faces=args.min_faces, device=args.device,
        return_info=True, block_size=args.block_size,
        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
        distributed=distributed, search=args.search)
    if not is_main():
        return
    write_label_issues(args.out, issues.cpu() if hasattr(issues, "cpu") else issues, labels,
                       info, positions=perm)
    print("facenms label-issues: " + info.summary())
    print("wrote %d rows to %s" % (info.flagged, args.out))
