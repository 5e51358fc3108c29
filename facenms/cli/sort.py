"""`facenms sort-features`: a feature file rewritten in identity order."""
import time

import numpy as np

from .common import add_memory_args, parse_bytes


def add(sub):
    from ..scale import sort_features
    p = sub.add_parser(
        "sort-features", help="rewrite a feature .npy in identity order (bounded memory)",
        description=sort_features.__doc__.split("\n\n")[0])
    p.add_argument("input", help=".npy of (N, d) features")
    p.add_argument("output", help="where to write the sorted features (.npy)")
    p.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    p.add_argument("--perm-out", help="where to write perm (default: OUTPUT stem + .perm.npy)")
    p.add_argument("--labels-out",
                   help="where to write the sorted labels (default: OUTPUT stem + .labels.npy)")
    add_memory_args(p)
    p.set_defaults(func=run)


def run(args):
    from ..scale.reader import open_features
    from ..scale.sort_features import side_paths, sort_features
    max_memory = parse_bytes(args.max_memory) if args.max_memory else None
    t = time.perf_counter()
    x = open_features(args.input)
    perm, _ = sort_features(args.input, args.labels, args.output, perm_out=args.perm_out,
                            labels_out=args.labels_out, block_size=args.block_size,
                            max_memory=max_memory)
    dt = time.perf_counter() - t
    moved = int((perm != np.arange(len(perm))).sum())
    print("facenms sort-features: %d faces (%d moved) in %.1f s, %.0f MB/s; wrote %s, %s, %s" % (
        len(perm), moved, dt, x.nbytes / 1e6 / max(dt, 1e-9), args.output,
        *(p or q for p, q in zip((args.perm_out, args.labels_out), side_paths(args.output)))))
    print("  select on %s writes dataset positions (mapped through the permutation)"
          % args.output)
