"""`facenms export`: the core set of a dataset as RecordIO, .lst, image folders or indices."""
import time

from .common import load_array, progress


def add(sub):
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
    e.set_defaults(func=run)


def run(args):
    from ..data import open_dataset
    from ..pipeline import export
    ds = open_dataset(args.dataset)
    keep = load_array(args.keep, "keep", mmap=False)
    bar = None
    if progress():
        from tqdm.auto import tqdm

        def bar(it):
            return tqdm(it, total=len(keep), unit="img", desc="export", leave=False)
    t = time.perf_counter()
    if args.format == "recordio":
        where = export.write_recordio(args.out, ds, keep, layout=args.layout, progress=bar)["rec"]
    elif args.format == "lst":
        where = export.write_lst(args.out, ds, keep, progress=bar)
    elif args.format == "folder":
        where = export.write_imagefolder(args.out, ds, keep, mode=args.mode, progress=bar)
    else:
        where = export.save_indices(args.out, keep)
    print("facenms export: %d of %d images (%.1f%%) as %s -> %s in %.1f s" % (
        len(keep), len(ds), 100 * len(keep) / max(1, len(ds)), args.format, where,
        time.perf_counter() - t))
