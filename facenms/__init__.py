"""facenms: Face-NMS core-set selection for face-recognition training sets.

    keep = facenms.select(features, labels, ratio=0.6)

returns the sorted indices of the faces to train on. See ``select``.

Layers, bottom up: ``io`` (atomic files, preflight checks); ``core`` (selection in
memory), ``data`` and ``models`` (datasets and networks); ``scale`` (larger than
memory, several processes) and ``eval`` (baselines, verification); ``pipeline``
(proxy training, extraction, export, report); ``cli``. This module only
re-exports; the compiled kernels load on first use.
"""
from . import reference
from .core.extension import build_info
from .core.select import SelectionInfo, curve
from .core.cleaning import LabelIssuesInfo
from .scale.dispatch import label_issues, select

__version__ = "0.1.0"
__all__ = ["select", "label_issues", "curve", "SelectionInfo", "LabelIssuesInfo", "reference",
           "build_info"]
