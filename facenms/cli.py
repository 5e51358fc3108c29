"""The `facenms` command line."""
import argparse
import json
import os
import sys
import time

import numpy as np


def _load_array(path, what, mmap=True):
    if not os.path.exists(path):
        raise SystemExit("facenms: %s file not found: %s" % (what, path))
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except ValueError as e:
        raise SystemExit("facenms: cannot read %s file %s: %s" % (what, path, e))


def _atomic_save(path, arr):
    """Write arr to path via a temporary name, so a crash leaves no partial file."""
    tmp = "%s.tmp-%d.npy" % (path, os.getpid())
    try:
        np.save(tmp, arr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _add_selection_args(p):
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


def _select(features, labels, args, scores=None):
    import facenms
    from facenms import cli_scale
    return facenms.select(features, labels, ratio=args.ratio, threshold=args.threshold,
                          rank=args.rank, scores=scores, min_per_identity=args.min_per_identity,
                          per_identity=args.per_identity, device=args.device, return_info=True,
                          progress=sys.stderr.isatty(), **cli_scale.select_kwargs(args))


def cmd_select(args):
    feats = _load_array(args.features, "features")
    labels = _load_array(args.labels, "labels", mmap=False)
    scores = _load_array(args.scores, "scores", mmap=False) if args.scores else None
    try:
        keep, info = _select(feats, labels, args, scores)
    except (ValueError, TypeError) as e:
        raise SystemExit("facenms select: %s" % e)
    from facenms import cli_scale
    if not cli_scale.is_writer():  # every rank has the result; rank 0 writes it
        return
    keep = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep)
    _atomic_save(args.out, keep)
    print("facenms select: " + info.summary())
    print("wrote %d indices to %s" % (len(keep), args.out))
    if args.info:
        _write_info(args.info, info)


def _write_info(path, info):
    doc = {k: getattr(info, k) for k in ("threshold", "ratio", "target_ratio", "kept", "n_faces",
                                          "passes", "timings")}
    doc["n_identities"] = info.n_identities
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def cmd_demo(args):
    import facenms
    from facenms.synthetic import webface_like
    print("facenms demo: generating %d WebFace-like faces (d=%d, power-law identity sizes, "
          "near-duplicate bursts) ..." % (args.faces, args.dim), flush=True)
    t = time.perf_counter()
    feats, labels = webface_like(args.faces, dim=args.dim, seed=args.seed)
    print("  generated in %.1f s: %d identities, mean %.1f faces, largest %d" % (
        time.perf_counter() - t, labels.max() + 1, len(labels) / (labels.max() + 1),
        np.bincount(labels).max()), flush=True)
    keep, info = facenms.select(feats, labels, ratio=args.ratio, return_info=True,
                                progress=sys.stderr.isatty())
    print("facenms demo: " + info.summary())
    if args.check:  # the reference is slow: check the first identities (labels are contiguous)
        part = labels < labels[min(5000, len(labels) - 1)]
        facenms.reference.check_valid(feats[part], labels[part], keep[part[keep]],
                                      info.threshold)
        print("  checked %d faces against the reference rule: valid" % part.sum())
    sizes = info.faces_per_identity
    for lo, hi in ((2, 5), (5, 20), (20, 100), (100, 10 ** 9)):
        m = (sizes >= lo) & (sizes < hi)
        if m.any():
            print("  identities with %s faces: %6d, kept %.1f%%" % (
                "%d-%d" % (lo, hi - 1) if hi < 10 ** 9 else ">=%d" % lo, m.sum(),
                100 * info.kept_per_identity[m].sum() / sizes[m].sum()))
    if args.out:
        _atomic_save(args.out, np.asarray(keep))
        print("wrote %s" % args.out)


def cmd_info(args):
    import facenms
    for k, v in facenms.build_info().items():
        print("%-24s %s" % (k, v))


def build_parser():
    p = argparse.ArgumentParser(prog="facenms", description=(
        "Face-NMS core-set selection for face-recognition training sets."))
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("select", help="select a core set from features and labels")
    s.add_argument("--features", required=True, help=".npy of (N, d) float features")
    s.add_argument("--labels", required=True, help=".npy of (N,) integer labels")
    _add_selection_args(s)
    s.add_argument("--out", required=True, help="where to write the kept indices (.npy)")
    s.add_argument("--info", help="also write a JSON summary here")
    s.set_defaults(func=cmd_select)
    from facenms import cli_scale
    cli_scale.add_select_args(s)
    cli_scale.add_cli(sub)

    d = sub.add_parser("demo", help="select 60%% of a built-in WebFace-like synthetic set")
    d.add_argument("--faces", type=int, default=200_000)
    d.add_argument("--dim", type=int, default=512)
    d.add_argument("--ratio", type=float, default=0.6)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--check", action="store_true", help="verify a part with the reference")
    d.add_argument("--out", help="write the kept indices here")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="show how the kernels were built")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
