"""`facenms export`: the core set of a dataset as RecordIO, .lst, image folders or indices."""
import time

from ..io.progress import progress_bar
from .common import CommandError, load_array


def add(sub):
    e = sub.add_parser("export", help="write the core set of a dataset")
    e.add_argument("--dataset", required=True,
                   help="image folder, or insightface RecordIO (train.rec or its folder)")
    e.add_argument("--keep", required=True, help=".npy of kept indices (from select)")
    e.add_argument("--format", choices=["recordio", "lst", "folder", "npy"], default="recordio",
                   help="recordio (default): train.rec/.idx/property; lst: an im2rec list; "
                        "folder: one folder per identity; npy: the kept indices")
    e.add_argument("--layout", choices=["im2rec", "insightface"], default=None,
                   help="RecordIO layout. im2rec (the default): keys 0..n-1, read by MXFaceDataset, "
                        "mx.io.ImageRecordIter and DALI. insightface: header and identity "
                        "records, for tools that need them (DALI and ImageRecordIter cannot "
                        "read it)")
    e.add_argument("--shuffle", action="store_true",
                   help="RecordIO/.lst: records in a seeded random order (DALI wants a shuffled "
                        ".rec); default: grouped by identity")
    e.add_argument("--seed", type=int, default=None, help="seed of --shuffle (default 0)")
    e.add_argument("--verify", choices=["structure", "decode", "none"], default="structure",
                   help="check every exported image: structure (JPEG markers, PNG chunks and "
                        "CRCs; default), decode (also a full decode), none")
    e.add_argument("--no-bins", action="store_true",
                   help="do not copy the verification *.bin files beside the source train.rec")
    e.add_argument("--mode", choices=["symlink", "copy"], default=None,
                   help="image-folder export: link or copy the images")
    e.add_argument("--overwrite", action="store_true",
                   help="image-folder export: replace the tree already at --out (other formats "
                        "replace their own files anyway)")
    e.add_argument("--allow-empty", action="store_true",
                   help="export an empty keep file (an empty dataset); refused otherwise")
    e.add_argument("--rec-names", action="store_true",
                   help=".lst of a RecordIO dataset: write its records' names rec:<key> (no "
                        "tool reads them as images; refused otherwise)")
    e.add_argument("--out", required=True, help="output folder or file")
    e.set_defaults(func=run)


# options that mean something for some formats only: given for another, they would be
# ignored without a word
_ONLY = {"shuffle": ("recordio", "lst"), "seed": ("recordio", "lst"), "layout": ("recordio",),
         "no_bins": ("recordio",), "mode": ("folder",), "rec_names": ("lst",)}


def _check_options(args):
    for opt, formats in _ONLY.items():
        if getattr(args, opt) not in (None, False) and args.format not in formats:
            raise CommandError("--%s is for --format %s, not %s" % (
                opt.replace("_", "-"), " or ".join(formats), args.format))
    if args.seed is not None and not args.shuffle:
        raise CommandError("--seed is the seed of --shuffle, which is not given")


def run(args):
    _check_options(args)
    args.seed = 0 if args.seed is None else args.seed
    args.layout = args.layout or "im2rec"
    args.mode = args.mode or "symlink"
    from ..data import open_dataset
    from ..io import check_not_inputs, check_writable
    from ..pipeline.core_set import write_core_set
    # before opening the dataset (reading 42M labels can take minutes): the output must be
    # writable and must not be one of the inputs; the export checks the rest, with sizes
    check_not_inputs([args.out], [args.dataset, args.keep])
    check_writable(args.out)
    ds = open_dataset(args.dataset)
    keep = load_array(args.keep, "keep", mmap=False)

    def bar(it):
        return progress_bar(True, it, total=len(keep), unit="img", desc="export", leave=False)
    t = time.perf_counter()
    options = dict(inputs=[args.keep], allow_empty=args.allow_empty, **{
        "recordio": dict(layout=args.layout, shuffle=args.shuffle, seed=args.seed,
                         verify=args.verify, copy_bins=not args.no_bins, progress=bar),
        "lst": dict(shuffle=args.shuffle, seed=args.seed, verify=args.verify, progress=bar,
                    rec_names=args.rec_names),
        "folder": dict(mode=args.mode, verify=args.verify, overwrite=args.overwrite,
                       progress=bar),
        "npy": {}}[args.format])
    where, _, res = write_core_set(args.format, args.out, ds, keep, **options)
    extra = ""
    if args.format == "recordio":
        extra = "\nnum_classes = %d\nnum_image = %d" % (res["num_classes"], res["num_image"])
        if res["bins"]:
            extra += "\nverification files: %s" % ", ".join(res["bins"])
        if res.get("config"):
            extra += "\narcface_torch config: %s" % res["config"]
    elif args.format == "lst":
        root = getattr(ds, "root", None)
        if root:
            extra = ("\nnext: python -m mxnet.tools.im2rec --pass-through %s %s"
                     % (where[:-4] if where.endswith(".lst") else where, root))
    print("facenms export: %d of %d images (%.1f%%) as %s -> %s in %.1f s%s" % (
        len(keep), len(ds), 100 * len(keep) / max(1, len(ds)), args.format, where,
        time.perf_counter() - t, extra))
