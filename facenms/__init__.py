"""facenms: Face-NMS core-set selection for face-recognition training sets.

    keep = facenms.select(features, labels, ratio=0.6)

returns the sorted indices of the faces to train on. See ``select``.
"""
from ._ext import BUILD as _BUILD
from . import reference
from .selection import SelectionInfo, curve, select

__version__ = "0.1.0"
__all__ = ["select", "curve", "SelectionInfo", "reference", "build_info"]


def build_info():
    """What facenms._C was compiled with, and what this process can use."""
    import torch
    info = dict(_BUILD)
    info["cuda"] = info.get("cuda") == "1"
    info["cuda_kernels_registered"] = torch._C._dispatch_has_kernel_for_dispatch_key(
        "facenms::nms", "CUDA")
    info["cuda_available"] = torch.cuda.is_available()
    info["torch_runtime"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    return info
