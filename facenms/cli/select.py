"""`facenms select`: the core set of a feature file, in memory, streamed or under torchrun.

On a file written by sort-features the indices are mapped back through its
permutation: `select` always writes positions in the dataset.
"""
import json
import os

import numpy as np

from ..io import check_not_inputs
from .common import (add_memory_args, add_selection_args, in_dataset_order, load_array,
                     parse_bytes, progress)


def add(sub):
    s = sub.add_parser("select", help="select a core set from features and labels")
    s.add_argument("--features", required=True, help=".npy of (N, d) float features")
    s.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    add_selection_args(s)
    s.add_argument("--out", required=True, help="where to write the kept indices (.npy)")
    s.add_argument("--info", help="also write a JSON summary here")
    add_memory_args(s)
    s.add_argument("--distributed", action="store_true",
                   help="split the work over torchrun's processes (default when WORLD_SIZE > 1)")
    s.add_argument("--clean", action="store_true",
                   help="first drop the faces label-issues flags (ratio still counts all faces)")
    s.set_defaults(func=run)


def select(features, labels, args, scores=None):
    from ..scale.dispatch import select as select_core
    distributed = True if args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1 \
        else None
    return select_core(
        features, labels, ratio=args.ratio, threshold=args.threshold, rank=args.rank,
        scores=scores, min_per_identity=args.min_per_identity, per_identity=args.per_identity,
        device=args.device, return_info=True, progress=progress(), block_size=args.block_size,
        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
        distributed=distributed, clean=args.clean)


def run(args):
    from ..io import AtomicFiles
    from ..scale.dist import is_main
    check_not_inputs([o for o in (args.out, args.info) if o],
                     [args.features, args.labels, args.scores])
    feats = load_array(args.features, "features")
    labels = load_array(args.labels, "labels", mmap=False)
    scores = load_array(args.scores, "scores", mmap=False) if args.scores else None
    perm, labels, scores = in_dataset_order(args.features, labels, scores)
    # both outputs are one group, their temporaries made before the selection runs: an
    # output that cannot be written fails now, and a failure leaves neither replaced
    with AtomicFiles() as files:
        writer = int(os.environ.get("RANK", "0")) == 0  # rank 0 writes (torchrun sets RANK)
        out = files.open(args.out) if writer else None
        info_f = files.open(args.info, "w") if writer and args.info else None
        keep, info = select(feats, labels, args, scores)
        if perm is not None:  # a sorted file: positions in the dataset, as export expects
            keep = np.sort(perm[np.asarray(keep)])
        if not (writer and is_main()):  # every rank has the result; rank 0 writes it
            files.abort()
            return
        np.save(out, np.asarray(keep, dtype=np.int64))
        if info_f is not None:
            json.dump(info.to_dict(), info_f, indent=2)
    print("facenms select: " + info.summary())
    print("wrote %d indices to %s%s" % (len(keep), args.out, "" if perm is None else
                                        " (dataset order: mapped through the sort's perm)"))
