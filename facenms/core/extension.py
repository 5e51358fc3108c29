"""Loads the compiled ops (facenms._C) on first use, or says exactly why it cannot.

Nothing is loaded at import time, so the pure-Python parts of facenms
(datasets, models, verification) work without a compiled extension; every
op call goes through ``load()``, which raises the same clear ImportError
each time the extension is missing or was built for another torch.
"""
import importlib
import os

import torch

REBUILD = ("Rebuild it against the torch you have, from the source tree:\n"
           "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
           "(--no-build-isolation makes the build use the installed torch.)")

_state = {}  # "info": the build info once loaded, "error": the ImportError otherwise


def _import():
    try:
        importlib.import_module("facenms._C")
    except ImportError as e:
        msg = str(e)
        if "undefined symbol" in msg or "version" in msg.lower() or ".so" in msg:
            why = ("facenms._C was built against a different torch than the installed "
                   "torch %s (%s)." % (torch.__version__, msg))
        elif "No module named" in msg:
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            why = ("facenms._C is not built (no compiled extension next to %s). "
                   "Importing from a source checkout needs an in-place build: "
                   "pip install --no-build-isolation -e ." % here)
        else:
            why = "facenms._C failed to load: %s" % msg
        raise ImportError(why + "\n" + REBUILD) from e
    info = dict(kv.split("=", 1) for kv in torch.ops.facenms.build_info().splitlines())
    built = info.get("torch", "")
    if built.split("+")[0] != torch.__version__.split("+")[0]:
        raise ImportError("facenms._C was built against torch %s but torch %s is installed.\n%s"
                          % (built, torch.__version__, REBUILD))
    return info


def load():
    """The build info of facenms._C (loading it on the first call); ImportError if unusable."""
    if "info" not in _state:
        if "error" not in _state:
            try:
                _state["info"] = _import()
            except ImportError as e:
                _state["error"] = e
        if "error" in _state:
            raise ImportError(str(_state["error"])) from _state["error"].__cause__
    return _state["info"]


def build_info():
    """What facenms._C was compiled with, and what this process can use.

    Works without a usable extension too: then ``error`` says why.
    """
    try:
        info = dict(load())
    except ImportError as e:
        info = {"error": str(e).splitlines()[0]}
    info["cuda"] = info.get("cuda") == "1"
    info["cuda_kernels_registered"] = "error" not in info and \
        torch._C._dispatch_has_kernel_for_dispatch_key("facenms::nms", "CUDA")
    info["cuda_available"] = torch.cuda.is_available()
    info["torch_runtime"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    return info
