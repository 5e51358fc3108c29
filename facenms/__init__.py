"""facenms: Face-NMS core-set selection for face-recognition training sets.

    keep = facenms.select(features, labels, ratio=0.6)

returns the sorted indices of the faces to train on. See ``select``.

Layers, bottom up: ``io`` (atomic files, preflight checks); ``core`` (selection in
memory), ``data`` and ``models`` (datasets and networks); ``scale`` (larger than
memory, several processes) and ``eval`` (baselines, verification); ``pipeline``
(proxy training, extraction, export, report); ``cli``. This module only
re-exports, on first use (importing torch takes seconds: the command line must be
able to take Ctrl-C as one line before it); the compiled kernels load on first op.
"""
import importlib

__version__ = "0.1.0"
__all__ = ["select", "label_issues", "curve", "SelectionInfo", "LabelIssuesInfo", "reference",
           "build_info"]
_WHERE = {"select": "facenms.scale.dispatch", "label_issues": "facenms.scale.dispatch",
          "LabelIssuesInfo": "facenms.core.cleaning", "curve": "facenms.core.select",
          "SelectionInfo": "facenms.core.select", "build_info": "facenms.core.extension",
          "reference": "facenms.reference"}


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError("module 'facenms' has no attribute %r" % name)
    module = importlib.import_module(_WHERE[name])
    value = module if name == "reference" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
