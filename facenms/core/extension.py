"""Loads the compiled ops on first use, or says exactly why it cannot.

Two libraries: facenms._C (schemas and CPU kernels, on PyTorch's stable ABI:
it loads under every torch from its target version on) and facenms._C_cuda
(CUDA kernels, regular ABI: only under the torch release it was built
against, and only when that torch has CUDA). A CUDA library that does not
load leaves the CPU ops working; build_info() says why.

Nothing is loaded at import time, so the pure-Python parts of facenms
(datasets, models, verification) work without a compiled extension; every
op call goes through ``load()``, which raises the same clear ImportError
each time the CPU library is missing or unusable.
"""
import glob
import importlib
import json
import os

import torch

from .hardware import native_bf16, screen_kind

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the facenms package
# From the source tree, a plain install builds for the torch that is installed.
FIX = "pip install --force-reinstall --no-deps ."

_state = {}  # "info": the build info once loaded, "error": the ImportError otherwise


def _release(v):
    return tuple(int(p) for p in v.split("+")[0].split(".")[:3] if p.isdigit())


def built():
    """What setup.py recorded (facenms/_build.json), readable without loading anything."""
    try:
        with open(os.path.join(HERE, "_build.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _fix():
    """The one command that rebuilds for the installed torch, run from the source tree."""
    installed = os.path.basename(os.path.dirname(HERE)) in ("site-packages", "dist-packages")
    return FIX if installed else "pip install --no-build-isolation -e ."


def _why(msg, build):
    """The first line of the ImportError: what is wrong, naming both torches."""
    against = build.get("torch", "an unknown torch")
    target = build.get("stable_abi_target")
    if "No module named" in msg:
        return ("facenms._C is not built (no compiled extension next to %s; torch %s is "
                "installed%s). Fix, from the source tree: %s" % (
                    HERE, torch.__version__,
                    ", the recorded build was against torch %s" % against if build else "",
                    _fix()))
    if target and _release(torch.__version__) < _release(target):
        return ("facenms._C was built against torch %s for torch >= %s, but torch %s is "
                "installed. Fix: pip install 'torch>=%s'" % (against, target,
                                                              torch.__version__, target))
    return ("facenms._C (built against torch %s%s) failed to load under the installed torch "
            "%s: %s. Fix, from the source tree: %s"
            % (against, ", for torch >= %s" % target if target else "", torch.__version__,
               msg, _fix()))


def _import():
    build = built()
    target = build.get("stable_abi_target")
    if target and _release(torch.__version__) < _release(target):
        # loading would fail on a missing stable-ABI symbol at best
        raise ImportError(_why("", build))
    try:
        importlib.import_module("facenms._C")
    except ImportError as e:
        raise ImportError(_why(str(e), build)) from e
    info = dict(kv.split("=", 1) for kv in torch.ops.facenms.build_info().splitlines())
    info.update(_load_cuda(build))
    return info


def _load_cuda(build):
    """Loads facenms._C_cuda when torch has CUDA; never raises."""
    present = glob.glob(os.path.join(HERE, "_C_cuda*.so")) + glob.glob(
        os.path.join(HERE, "_C_cuda*.pyd"))
    if not present:
        why = build.get("cuda_why", "")
        return {"cuda_library": "not built" + (" (%s)" % why if why else "")}
    if torch.version.cuda is None:
        return {"cuda_library": "not loaded (torch %s has no CUDA)" % torch.__version__}
    against = build.get("torch", "")
    if against and _release(against) != _release(torch.__version__):
        return {"cuda_library": "not loaded",
                "cuda_error": "facenms._C_cuda was built against torch %s and loads only "
                              "under that release, but torch %s is installed. Fix, from the "
                              "source tree: %s" % (against, torch.__version__, _fix())}
    try:
        importlib.import_module("facenms._C_cuda")
    except ImportError as e:
        return {"cuda_library": "not loaded",
                "cuda_error": "facenms._C_cuda (built against torch %s) failed to load under "
                              "torch %s: %s. Fix, from the source tree: %s"
                              % (against or "?", torch.__version__, e, _fix())}
    return {"cuda_library": "loaded", "cuda_archs": build.get("cuda_archs", "")}


def load():
    """The build info of facenms._C (loading it on the first call); ImportError if unusable,
    which includes FACENMS_CPU_ISA asking for a clone this CPU cannot run."""
    if "info" not in _state:
        if "error" not in _state:
            try:
                _state["info"] = _import()
            except ImportError as e:
                _state["error"] = e
        if "error" in _state:
            raise ImportError(str(_state["error"])) from _state["error"].__cause__
    if "cpu_isa_error" in _state["info"]:
        raise ImportError(_state["info"]["cpu_isa_error"])
    return _state["info"]


def build_info():
    """What the libraries were compiled with, and what this process can use.

    Works without a usable extension too: then ``error`` says why (and the
    recorded build, if any, says against which torch it was built).
    ``cpu_isa`` is the clone of the CPU kernels in use (the best this CPU runs,
    or FACENMS_CPU_ISA's), ``cpu_isa_supported`` the ones it can run.
    """
    try:
        info = dict(load())
    except ImportError as e:
        if "info" in _state:  # FACENMS_CPU_ISA refused: the library itself loaded
            info = dict(_state["info"], error=str(e))
        else:
            info = {"error": str(e).splitlines()[0]}
            for k, v in built().items():
                info.setdefault(k if k != "cuda" else "cuda_built", v)
    # cuda: CUDA kernels compiled in and loaded by this torch
    info["cuda"] = info.get("cuda_library") == "loaded"
    info["cuda_kernels_registered"] = "error" not in info and \
        torch._C._dispatch_has_kernel_for_dispatch_key("facenms::nms", "CUDA")
    info["cuda_available"] = torch.cuda.is_available()
    info["torch_runtime"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    # the number formats that pay on this CPU: amp="auto" and label_issues' screen
    cpu = torch.device("cpu")
    info["cpu_bf16"] = "native" if native_bf16(cpu) else "emulated"
    info["cpu_label_issues_screen"] = screen_kind(cpu, 512) or "none"
    return info
