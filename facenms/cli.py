"""The `facenms` command line."""
import argparse
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
    from .export import save_indices
    save_indices(args.out, keep)  # numpy or torch
    print("facenms select: " + info.summary())
    print("wrote %d indices to %s" % (len(keep), args.out))
    if args.info:
        _write_info(args.info, info)


def _write_info(path, info):
    from .pipeline import write_json
    doc = {k: getattr(info, k) for k in ("threshold", "ratio", "target_ratio", "kept", "n_faces",
                                          "passes", "timings")}
    doc["n_identities"] = info.n_identities
    write_json(path, doc)


DEMO_CONFIG = {  # small enough for a laptop CPU in about a minute
    "proxy": dict(fraction=0.5, backbone="iresnet", model_kwargs=dict(layers=(1, 1, 1, 1),
                  width=16), embedding_size=64, input_size=32, epochs=4, batch_size=32,
                  lr=0.05, workers=0),
    "extract": dict(batch_size=64, workers=0),
    "select": dict(ratio=0.6),
    "export": dict(format="recordio"),
}


def _demo_pipeline(work):
    """The whole pipeline on a small generated RecordIO dataset."""
    from .data import open_dataset, synthetic
    from .pipeline import run
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "train.rec")):
        synthetic.make_recordio(data, num_identities=40, images_per_identity=(6, 14), size=32)
    print("facenms demo, part 1: the pipeline on a generated insightface RecordIO set in %s"
          % data, flush=True)
    cfg = dict(DEMO_CONFIG, data=dict(dataset=data, work_dir=os.path.join(work, "work")))
    paths = run(cfg, progress=sys.stderr.isatty())
    src, core = open_dataset(data), open_dataset(paths["export"])
    keep = np.load(paths["keep"])
    ok = len(core) == len(keep) and all(
        core.read_bytes(j) == src.read_bytes(i) for j, i in enumerate(sorted(
            keep, key=lambda i: (src.labels[i], i))))
    print("  core set %s: %d of %d images, %d identities, images %s" % (
        paths["export"], len(core), len(src), core.num_classes,
        "identical to the source" if ok else "DIFFER FROM THE SOURCE"), flush=True)
    if not ok:
        raise SystemExit("facenms demo: the exported core set does not match its source")


def cmd_demo(args):
    import tempfile

    import facenms
    from facenms.synthetic import webface_like
    if not args.no_pipeline:
        if args.work_dir:
            _demo_pipeline(args.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="facenms-demo-") as work:
                _demo_pipeline(work)
    print("facenms demo, part 2: %d WebFace-like face embeddings (d=%d, power-law identity "
          "sizes, near-duplicate bursts) ..." % (args.faces, args.dim), flush=True)
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
        from .export import save_indices
        save_indices(args.out, keep)
        print("wrote %s" % args.out)


def cmd_export(args):
    from tqdm.auto import tqdm

    from . import export
    from .data import open_dataset
    ds = open_dataset(args.dataset)
    keep = _load_array(args.keep, "keep", mmap=False)
    bar = (lambda it: tqdm(it, total=len(keep), unit="img", desc="export", leave=False)) \
        if sys.stderr.isatty() else None
    t = time.perf_counter()
    try:
        if args.format == "recordio":
            out = export.write_recordio(args.out, ds, keep, layout=args.layout, progress=bar)
            where = out["rec"]
        elif args.format == "lst":
            where = export.write_lst(args.out, ds, keep, progress=bar)
        elif args.format == "folder":
            where = export.write_imagefolder(args.out, ds, keep, mode=args.mode, progress=bar)
        else:
            where = export.save_indices(args.out, keep)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit("facenms export: %s" % e)
    print("facenms export: %d of %d images (%.1f%%) as %s -> %s in %.1f s" % (
        len(keep), len(ds), 100 * len(keep) / max(1, len(ds)), args.format, where,
        time.perf_counter() - t))


def _kwargs(args, names):
    """The given options among `names`, so the library's defaults stay the defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_train_proxy(args):
    from .proxy import train_proxy
    kw = _kwargs(args, ["subset", "fraction", "seed", "backbone", "head", "embedding_size",
                        "input_size", "epochs", "batch_size", "lr", "workers", "device"])
    kw["amp"] = None if args.amp == "none" else args.amp
    try:
        path = train_proxy(args.dataset, args.out, resume=not args.no_resume, **kw)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit("facenms train-proxy: %s" % e)
    print("facenms train-proxy: checkpoint %s" % path)


def cmd_extract(args):
    from .extract import extract
    kw = _kwargs(args, ["batch_size", "workers", "device", "input_size", "labels_path"])
    kw["amp"] = None if args.amp == "none" else args.amp
    try:
        path = extract(args.dataset, args.model, args.out, flip=args.flip,
                       resume=not args.no_resume, **kw)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit("facenms extract: %s" % e)
    print("facenms extract: features %s" % path)


def cmd_run(args):
    from .pipeline import STAGES, run
    stages = args.stages.split(",") if args.stages else STAGES
    bad = set(stages) - set(STAGES)
    if bad:
        raise SystemExit("facenms run: unknown stage(s) %s; stages are %s"
                         % (", ".join(sorted(bad)), ",".join(STAGES)))
    try:
        run(args.config, stages=stages, progress=sys.stderr.isatty())
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        raise SystemExit("facenms run: %s" % e)


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
    from facenms import report
    report.add_cli(sub)

    d = sub.add_parser("demo", help="the whole pipeline on generated images, then 60%% of 200k "
                                     "WebFace-like embeddings")
    d.add_argument("--faces", type=int, default=200_000)
    d.add_argument("--dim", type=int, default=512)
    d.add_argument("--ratio", type=float, default=0.6)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--check", action="store_true", help="verify a part with the reference")
    d.add_argument("--out", help="write the kept indices here")
    d.add_argument("--no-pipeline", action="store_true",
                   help="skip part 1 (proxy training, extraction, export on generated images)")
    d.add_argument("--work-dir", help="keep part 1's files here (default: a temporary folder)")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("export", help="write the core set of a dataset")
    e.add_argument("--dataset", required=True,
                   help="image folder, or insightface RecordIO (train.rec or its folder)")
    e.add_argument("--keep", required=True, help=".npy of kept indices (from select)")
    e.add_argument("--format", choices=["recordio", "lst", "folder", "npy"], default="recordio")
    e.add_argument("--layout", choices=["insightface", "im2rec"], default="insightface",
                   help="RecordIO layout (insightface: header and identity records)")
    e.add_argument("--mode", choices=["symlink", "copy"], default="symlink",
                   help="image-folder export: link or copy the images")
    e.add_argument("--out", required=True, help="output folder or file")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("train-proxy", help="train a small proxy model on a subset")
    t.add_argument("--dataset", required=True, help="image folder or RecordIO")
    t.add_argument("--out", required=True, help="folder for checkpoints (proxy.pt)")
    t.add_argument("--subset", choices=["identities", "faces"])
    t.add_argument("--fraction", type=float, help="fraction of identities/faces (default 0.1)")
    t.add_argument("--seed", type=int)
    t.add_argument("--backbone", help="iresnet18, iresnet50, mobilefacenet, ...")
    t.add_argument("--head", choices=["arcface", "cosface"])
    t.add_argument("--embedding-size", type=int)
    t.add_argument("--input-size", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="per process")
    t.add_argument("--lr", type=float)
    t.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    t.add_argument("--workers", type=int)
    t.add_argument("--device")
    t.add_argument("--no-resume", action="store_true", help="start over")
    t.set_defaults(func=cmd_train_proxy)

    x = sub.add_parser("extract", help="embed every face into a float16 .npy")
    x.add_argument("--dataset", required=True)
    x.add_argument("--model", required=True,
                   help="proxy checkpoint, TorchScript, torch.export (.pt2) or ONNX file")
    x.add_argument("--out", required=True, help="features .npy (labels.npy is written beside)")
    x.add_argument("--labels-path")
    x.add_argument("--batch-size", type=int)
    x.add_argument("--workers", type=int)
    x.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    x.add_argument("--flip", action="store_true", help="add the mirrored face's embedding")
    x.add_argument("--input-size", type=int)
    x.add_argument("--device")
    x.add_argument("--no-resume", action="store_true")
    x.set_defaults(func=cmd_extract)

    r = sub.add_parser("run", help="run every stage from a TOML/YAML config")
    r.add_argument("config")
    r.add_argument("--stages", help="comma-separated subset of proxy,extract,select,export,"
                                    "report")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="show how the kernels were built")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
