"""What the commands share: reading arrays, common options, and errors as one line."""
import argparse
import sys

import numpy as np

from ..io import load_npy


class CommandError(Exception):
    """An error a command reports as one line (no traceback)."""


# what each slot of a command takes: (dtype kind, dimensions); see facenms.io.npy
SLOTS = {"features": ("float", 2), "labels": ("int", 1), "keep": ("int", 1),
         "scores": ("number", 1)}


def load_array(path, what, mmap=True):
    """A .npy file (memory-mapped by default) of the slot `what`, through facenms.io's one
    loader: every malformed file is one line naming the path and what is wrong."""
    kind, ndim = SLOTS.get(what, (None, None))
    return load_npy(path, mmap=mmap, what=what, kind=kind, ndim=ndim)


def options_set(args, names):
    """The given options among `names`, so the library's defaults stay the defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def progress():
    """Progress bars only on a terminal."""
    return sys.stderr.isatty()


def positive_int(s):
    """argparse type: an integer >= 1."""
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got %r" % s)
    return v


def parse_bytes(s):
    """'4G', '512M', '1000000' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = s.strip().upper().rstrip("B").rstrip("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise CommandError("not a size in bytes: %r (e.g. 4G, 512M)" % s) from None


def add_selection_args(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ratio", type=float, help="keep this fraction of the faces")
    g.add_argument("--threshold", type=float, help="cosine similarity above which to suppress")
    p.add_argument("--rank", default=None, choices=["sparsity", "centrality", "random"],
                   help="ranking within an identity (default: sparsity)")
    p.add_argument("--scores", help=".npy of per-face scores, higher ranked first")
    p.add_argument("--min-per-identity", type=int, default=1,
                   help="every identity keeps at least min(m, its faces) faces (default 1)")
    p.add_argument("--per-identity", action="store_true",
                   help="with --ratio: every identity keeps max(m, round(ratio * n_c)) faces, "
                        "m = --min-per-identity")
    p.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")


def add_memory_args(p):
    p.add_argument("--block-size", type=positive_int, help="faces per block read into memory")
    p.add_argument("--max-memory",
                   help="bytes of features in memory at once, e.g. 2G (default 1G)")


def in_dataset_order(features_path, labels, scores=None):
    """For features written by sort-features: (perm, labels and scores in the file's
    order); perm is None for any other file. The order is read from the file itself;
    labels may be given in either order, and must be the ones it was sorted with."""
    from ..scale.sort_features import dataset_order, labels_in_file_order
    order = dataset_order(features_path)
    if order is None:
        return None, labels, scores
    labels, given_ds = labels_in_file_order(order, labels, features_path)
    if given_ds and scores is not None and len(scores) == len(order.perm):  # as the labels
        scores = np.asarray(scores)[order.perm]
    return order.perm, labels, scores
