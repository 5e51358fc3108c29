"""Which facenms a benchmark measures: the installed package (or the tree PYTHONPATH
names), never the checkout by accident. Bench scripts call announce() first."""
import os
import sys


def announce():
    """Print which facenms copy and which compiled library this process uses."""
    try:
        import facenms
    except ImportError as e:
        sys.exit("bench: facenms is not importable (%s): pip install . first, or run with "
                 "PYTHONPATH=<the source tree> after building it in place" % e)
    info = facenms.build_info()
    print("bench: facenms %s from %s (%s)" % (
        facenms.__version__, os.path.dirname(facenms.__file__),
        info.get("error") or "cpu_isa %s, cuda library %s" % (info.get("cpu_isa"),
                                                             info.get("cuda_library"))),
        file=sys.stderr, flush=True)
    if "error" in info:
        sys.exit("bench: " + info["error"])
