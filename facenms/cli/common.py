"""What the commands share: reading arrays, common options, and errors as one line."""
import os
import sys

import numpy as np


class CommandError(Exception):
    """An error a command reports as one line (no traceback)."""


def load_array(path, what, mmap=True):
    """A .npy file (memory-mapped by default); CommandError naming it when it cannot be read."""
    if not os.path.exists(path):
        raise CommandError("%s file not found: %s" % (what, path))
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise CommandError("cannot read %s file %s: %s" % (what, path, e)) from None


def given(args, names):
    """The given options among `names`, so the library's defaults stay the defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def progress():
    """Progress bars only on a terminal."""
    return sys.stderr.isatty()


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
    p.add_argument("--min-per-identity", type=int, default=1)
    p.add_argument("--per-identity", action="store_true",
                   help="with --ratio: every identity keeps round(ratio * n) faces")
    p.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")


def add_memory_args(p):
    p.add_argument("--block-size", type=int, help="faces per block read into memory")
    p.add_argument("--max-memory",
                   help="bytes of features in memory at once, e.g. 2G (default 1G)")
