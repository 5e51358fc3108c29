"""Loads the compiled ops (facenms._C), or says exactly why it cannot."""
import importlib
import os

import torch

_REBUILD = ("Rebuild it against the torch you have, from the source tree:\n"
            "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
            "(--no-build-isolation makes the build use the installed torch.)")


def _load():
    try:
        importlib.import_module("facenms._C")
    except ImportError as e:
        msg = str(e)
        if "undefined symbol" in msg or "version" in msg.lower():
            why = ("facenms._C was built against a different torch than the installed "
                   "torch %s (ABI mismatch: %s)." % (torch.__version__, msg))
        elif "No module named" in msg:
            here = os.path.dirname(os.path.abspath(__file__))
            why = ("facenms._C is not built (no compiled extension next to %s). "
                   "Importing from a source checkout needs an in-place build: "
                   "pip install --no-build-isolation -e ." % here)
        else:
            why = "facenms._C failed to load: %s" % msg
        raise ImportError(why + "\n" + _REBUILD) from e
    info = dict(kv.split("=", 1) for kv in torch.ops.facenms.build_info().splitlines())
    built = info.get("torch", "")
    if built.split("+")[0] != torch.__version__.split("+")[0]:
        raise ImportError("facenms._C was built against torch %s but torch %s is installed.\n%s"
                          % (built, torch.__version__, _REBUILD))
    return info


BUILD = _load()
