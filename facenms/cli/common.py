"""What the commands share: reading arrays, common options, and errors as one line."""
import argparse
import os
import sys

import numpy as np


class CommandError(Exception):
    """An error a command reports as one line (no traceback)."""


def load_array(path, what, mmap=True):
    """A .npy file (memory-mapped by default); CommandError naming it when it cannot be read."""
    if not os.path.exists(path):
        raise CommandError("%s file not found: %s" % (what, path))
    if os.path.isdir(path):
        raise CommandError("%s file %s is a directory, not a .npy file" % (what, path))
    check_npy(path, what)
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise CommandError("cannot read %s file %s: %s" % (what, path, " ".join(
            str(e).split()))) from None


def check_npy(path, what):
    """The .npy header is readable and the file holds the bytes it announces."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return  # a newer format: np.load itself checks it
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except (ValueError, EOFError, SyntaxError) as e:
            raise CommandError("%s file %s is not a readable .npy file (%s bytes; %s)" % (
                what, path, size, " ".join(str(e).split())[:200])) from None
        offset = f.tell()
    if any(n < 0 for n in shape):
        raise CommandError("%s file %s: its header has a negative shape %s" % (what, path, shape))
    need = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if dtype.hasobject:
        raise CommandError("%s file %s holds Python objects, not numbers" % (what, path))
    if need > size:
        raise CommandError("%s file %s is truncated or its header is wrong: shape %s of %s "
                           "needs %d bytes, the file has %d" % (what, path, shape, dtype, need,
                                                                size))


def given(args, names):
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
        raise argparse.ArgumentTypeError("not an integer: %r" % s) from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % v)
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
    order); perm is None for any other file. Labels may be given in either order."""
    from ..scale.sort_features import dataset_order
    found = dataset_order(features_path)
    if found is None:
        return None, labels, scores
    perm, sorted_labels = found
    want = np.load(sorted_labels, mmap_mode="r")
    labels = np.asarray(labels)
    if len(labels) != len(perm):
        raise CommandError("labels have %d entries, %s has %d rows"
                           % (len(labels), features_path, len(perm)))
    if np.array_equal(labels, want):  # already in the sorted file's order
        return perm, labels, scores
    if np.array_equal(labels[perm], want):  # in the dataset's order
        return perm, labels[perm], None if scores is None else np.asarray(scores)[perm]
    raise CommandError("labels match %s neither in the dataset's order nor in the sorted "
                       "order (%s)" % (features_path, sorted_labels))
