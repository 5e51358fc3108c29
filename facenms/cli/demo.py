"""`facenms demo`: the whole pipeline on generated images, then a WebFace-like selection."""
import os
import shutil
import tempfile
import time

import numpy as np

from .common import positive_int, progress

DEMO_CONFIG = {  # small enough for a laptop CPU in about a minute
    "proxy": dict(fraction=0.5, backbone="iresnet", model_kwargs=dict(layers=(1, 1, 1, 1),
                  width=16), embedding_size=64, input_size=32, epochs=4, batch_size=32,
                  lr=0.05, workers=0),
    "extract": dict(batch_size=64, workers=0),
    "select": dict(ratio=0.6, clean=True),  # label issues out first (label_issues.csv)
    "export": dict(format="recordio"),
    "report": dict(sample_pairs=20_000),
}


def add(sub):
    d = sub.add_parser("demo", help="the whole pipeline on generated images, then 60%% of 200k "
                                    "WebFace-like embeddings")
    d.add_argument("--faces", type=positive_int, default=200_000,
                   help="part 2: how many WebFace-like embeddings to generate (default 200000)")
    d.add_argument("--dim", type=positive_int, default=512,
                   help="part 2: their dimension (default 512)")
    d.add_argument("--ratio", type=float, default=0.6,
                   help="part 2: the fraction of faces to keep (default 0.6)")
    d.add_argument("--seed", type=int, default=0,
                   help="seed of the generated embeddings (default 0)")
    d.add_argument("--check", action="store_true", help="verify a part with the reference")
    d.add_argument("--out", help="write the kept indices here")
    d.add_argument("--no-pipeline", action="store_true",
                   help="skip part 1 (proxy training, extraction, export on generated images)")
    d.add_argument("--work-dir", help="keep part 1's files here (default: a temporary folder)")
    d.set_defaults(func=run)


def pipeline_part(work):
    """The whole pipeline on a small generated RecordIO dataset."""
    from ..data import open_dataset, synthetic
    from ..io import load_indices
    from ..pipeline.run import STAGES, run as run_config
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "train.rec")):
        synthetic.make_recordio(data, num_identities=40, images_per_identity=(6, 14), size=32)
    print("facenms demo, part 1: the pipeline on a generated insightface RecordIO set in %s"
          % data, flush=True)
    cfg = dict(DEMO_CONFIG, data=dict(dataset=data, work_dir=os.path.join(work, "work")))
    times, paths = [], {}
    for stage in [st for st in STAGES if st in ("proxy", "extract", "select") or cfg.get(st)]:
        t = time.perf_counter()
        paths.update(run_config(cfg, stages=(stage,), progress=progress()))
        times.append("%s %.1f s" % (stage, time.perf_counter() - t))
    print("  stage times: " + ", ".join(times), flush=True)
    src, core = open_dataset(data), open_dataset(paths["export"])
    keep = load_indices(paths["keep"])
    ok = len(core) == len(keep) and all(
        core.read_bytes(j) == src.read_bytes(i) for j, i in enumerate(sorted(
            keep, key=lambda i: (src.labels[i], i))))
    print("  core set %s: %d of %d images, %d identities, images %s" % (
        paths["export"], len(core), len(src), core.num_classes,
        "identical to the source" if ok else "DIFFER FROM THE SOURCE"), flush=True)
    if not ok:
        raise SystemExit("facenms demo: the exported core set does not match its source")
    return os.path.join(paths["report"], "index.html")


def embeddings_part(args):
    from ..core.reference import check_valid
    from ..eval.embeddings import webface_like
    from ..scale.dispatch import select
    print("facenms demo, part 2: %d WebFace-like face embeddings (d=%d, power-law identity "
          "sizes, near-duplicate bursts) ..." % (args.faces, args.dim), flush=True)
    t = time.perf_counter()
    feats, labels = webface_like(args.faces, dim=args.dim, seed=args.seed)
    print("  generated in %.1f s: %d identities, mean %.1f faces, largest %d" % (
        time.perf_counter() - t, labels.max() + 1, len(labels) / (labels.max() + 1),
        np.bincount(labels).max()), flush=True)
    keep, info = select(feats, labels, ratio=args.ratio, return_info=True, progress=progress())
    print("facenms demo: " + info.summary())
    if args.check:  # the reference is slow: check the first identities (labels are contiguous)
        part = labels < labels[min(5000, len(labels) - 1)]
        check_valid(feats[part], labels[part], keep[part[keep]], info.threshold)
        print("  checked %d faces against the reference rule: valid" % part.sum())
    sizes = info.faces_per_identity
    for lo, hi in ((2, 5), (5, 20), (20, 100), (100, 10 ** 9)):
        m = (sizes >= lo) & (sizes < hi)
        if m.any():
            print("  identities with %s faces: %6d, kept %.1f%%" % (
                "%d-%d" % (lo, hi - 1) if hi < 10 ** 9 else ">=%d" % lo, m.sum(),
                100 * info.kept_per_identity[m].sum() / sizes[m].sum()))
    return keep


def run(args):
    if not args.no_pipeline:
        if args.work_dir:
            page = pipeline_part(args.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="facenms-demo-") as work:
                page = pipeline_part(work)
                kept = tempfile.mkdtemp(prefix="facenms-demo-report-")  # the report outlives it
                shutil.move(os.path.dirname(page), kept)
                page = os.path.join(kept, "report", "index.html")
            print("  (part 1's other files were in a temporary folder, now removed: "
                  "pass --work-dir DIR to keep them)", flush=True)
        print("  the report, kept and suppressed faces side by side: %s" % page, flush=True)
    keep = embeddings_part(args)
    if args.out:
        from ..pipeline.export import save_indices
        save_indices(args.out, keep)
        print("wrote %s" % args.out)
