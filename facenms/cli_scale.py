"""Command-line glue for large sets: `facenms sort-features`, and the
--block-size / --max-memory / --distributed options of `facenms select`.

cli.py calls add_cli(subparsers) and add_select_args(select_parser), and
passes select_kwargs(args) to facenms.select.
"""
import os
import time

import numpy as np

from .sort_features import __doc__ as _SORT_DOC
from .sort_features import _side_paths, sort_features
from .streaming import open_features


def _parse_bytes(s):
    """'4G', '512M', '1000000' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = s.strip().upper().rstrip("B").rstrip("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError("not a size in bytes: %r (e.g. 4G, 512M)" % s) from None


def cmd_sort_features(args):
    try:
        max_memory = _parse_bytes(args.max_memory) if args.max_memory else None
        t = time.perf_counter()
        x = open_features(args.input)
        perm, _ = sort_features(args.input, args.labels, args.output, args.perm_out, args.labels_out,
                                block_size=args.block_size, max_memory=max_memory)
    except (ValueError, TypeError, OSError) as e:
        raise SystemExit("facenms sort-features: %s" % e)
    dt = time.perf_counter() - t
    moved = int((perm != np.arange(len(perm))).sum())
    print("facenms sort-features: %d faces (%d moved) in %.1f s, %.0f MB/s; wrote %s, %s, %s" % (
        len(perm), moved, dt, x.nbytes / 1e6 / max(dt, 1e-9), args.output,
        *(p or q for p, q in zip((args.perm_out, args.labels_out), _side_paths(args.output)))))


def add_cli(subparsers):
    """Register `facenms sort-features` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "sort-features", help="rewrite a feature .npy in identity order (bounded memory)",
        description=_SORT_DOC.split("\n\n")[0])
    p.add_argument("input", help=".npy of (N, d) features")
    p.add_argument("output", help="where to write the sorted features (.npy)")
    p.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    p.add_argument("--perm-out", help="where to write perm (default: OUTPUT stem + .perm.npy)")
    p.add_argument("--labels-out",
                   help="where to write the sorted labels (default: OUTPUT stem + .labels.npy)")
    _add_memory_args(p)
    p.set_defaults(func=cmd_sort_features)
    return p


def _add_memory_args(p):
    p.add_argument("--block-size", type=int, help="faces per block read into memory")
    p.add_argument("--max-memory",
                   help="bytes of features in memory at once, e.g. 2G (default 1G)")


def add_select_args(p):
    """Options of `facenms select` for memory-mapped features and torchrun."""
    _add_memory_args(p)
    p.add_argument("--distributed", action="store_true",
                   help="split the work over torchrun's processes (default when WORLD_SIZE > 1)")


def select_kwargs(args):
    """facenms.select keyword arguments from add_select_args' options."""
    distributed = None
    if args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        distributed = True
    return dict(block_size=args.block_size,
                max_memory=_parse_bytes(args.max_memory) if args.max_memory else None,
                distributed=distributed)


def is_writer():
    """Only rank 0 writes outputs and prints when several processes select together."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
