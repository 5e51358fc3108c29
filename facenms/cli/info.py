"""`facenms info`: how the kernels were built and what this process can use."""


def add(sub):
    i = sub.add_parser("info", help="show how the kernels were built")
    i.set_defaults(func=run)


def run(args):
    from ..core.extension import build_info
    for k, v in build_info().items():
        print("%-24s %s" % (k, v))
