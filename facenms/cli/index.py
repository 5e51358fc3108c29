"""`facenms index`: rebuild a .rec file's .idx by scanning its records."""


def add(sub):
    p = sub.add_parser("index", help="rebuild train.idx from train.rec (e.g. after "
                                     "rec2shufrec.py, which writes no .idx)")
    p.add_argument("rec", help="the .rec file")
    p.add_argument("--idx", help="where to write the index, a name ending in .idx (default: "
                                 "beside the .rec); never the .rec or its dataset's files")
    p.add_argument("--force", action="store_true",
                   help="replace an existing .idx (only a file that is an index)")
    p.set_defaults(func=run)


def run(args):
    from ..data.recindex import build_index
    idx, n = build_index(args.rec, args.idx, overwrite=args.force)
    print("facenms index: %d records -> %s (keys 0..%d in file order)" % (n, idx, n - 1))
