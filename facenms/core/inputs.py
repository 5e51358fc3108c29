"""The one place where selection inputs are checked and converted.

Features and scores become torch tensors (zero copy when possible), the
settings of a selection are validated together, and results go back in the
caller's array family. Every check raises ValueError/TypeError naming the
problem (and, for rows, the first bad row).
"""
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

RANKS = ("sparsity", "centrality", "random", "scores")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def as_tensor(a, name):
    """numpy / torch / DLPack (cupy, jax, ...) -> torch tensor, zero copy when possible."""
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        a = native(a, name)
        if any(s < 0 for s in a.strides):
            a = np.ascontiguousarray(a)
        with warnings.catch_warnings():  # read-only memmaps are only read
            warnings.simplefilter("ignore", UserWarning)
            try:
                return torch.from_numpy(a)
            except TypeError:  # torch has no such dtype (objects, strings, float128, ...)
                raise TypeError("%s must be numbers torch can hold, got numpy dtype %s"
                                % (name, a.dtype)) from None
    if hasattr(a, "__dlpack__"):
        return torch.from_dlpack(a)
    if isinstance(a, (list, tuple)):
        return torch.from_numpy(np.asarray(a))
    raise TypeError("%s must be a numpy array, a torch tensor or a DLPack array, got %s"
                    % (name, type(a).__name__))


def native(a, name):
    """A numpy array as facenms reads it: masked arrays are refused (a mask is not
    honoured silently), big-endian data is converted to the machine's byte order (a copy)."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError("%s is a numpy masked array; facenms does not apply masks: pass "
                        "the rows to use (e.g. x[~np.ma.getmaskarray(x).any(1)] with its "
                        "labels) or np.ma.getdata(x) to ignore the mask" % name)
    if not a.dtype.isnative and a.dtype.byteorder != "|" and a.dtype.names is None:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def check_tensor(x, name):
    """A dense tensor with data (not meta, not sparse), detached from autograd."""
    if x.layout != torch.strided:
        raise TypeError("%s must be a dense tensor, got layout %s" % (name, x.layout))
    if x.device.type == "meta":
        raise ValueError("%s are on the meta device and hold no data" % name)
    return x.detach()


def check_features(x):
    """A 2-D float tensor whose rows the kernels can read (strided rows are copied)."""
    x = check_tensor(x, "features")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError("features must be float32, float16 or bfloat16 (float64 is accepted "
                        "and computed in float32), got %s" % x.dtype)
    if x.dim() != 2:
        raise ValueError("features must be 2-D (N, d), got shape %s" % (tuple(x.shape),))
    if x.shape[1] > 0 and x.stride(1) != 1:
        x = x.contiguous()  # the kernels read rows; only strided rows need a copy
    return x


def check_scores(scores, n, device):
    """User ranking scores as float64 on `device`: one finite number per face."""
    scores = check_tensor(as_tensor(scores, "scores"), "scores")
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError("scores must be 1-D with one score per face (%d), got shape %s"
                         % (n, tuple(scores.shape)))
    if scores.dtype.is_complex or scores.dtype == torch.bool:
        raise TypeError("scores must be real numbers, got %s" % scores.dtype)
    scores = scores.to(device, torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores[%d] is not finite" % int(
            torch.nonzero(~torch.isfinite(scores))[0]))
    return scores


@dataclass(frozen=True)
class Settings:
    """What a selection is asked to do, validated."""
    ratio: Optional[float]  # exactly one of ratio and threshold is set
    threshold: Optional[float]
    rank: str
    min_keep: int  # every identity keeps at least min(min_keep, n_c) faces
    per_identity: bool
    seed: int

    @property
    def mode(self):
        """'threshold', 'ratio' (one global threshold searched) or 'per_identity'."""
        if self.threshold is not None:
            return "threshold"
        return "per_identity" if self.per_identity else "ratio"


def number(v, name, lo, hi, lo_open=False):
    """A real number in [lo, hi] ((lo, hi] with lo_open) as a float: Python and numpy
    scalars, 0-d arrays and 0-d tensors are numbers; bools are not."""
    if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0:
        v = v.item()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
            (lo < v if lo_open else lo <= v) and v <= hi):
        raise ValueError("%s must be a number in %s%g, %g], got %r"
                         % (name, "(" if lo_open else "[", lo, hi, v))
    return float(v)


def check_count(v, name, minimum=0):
    """An integer >= minimum (Python, numpy or 0-d; not a bool), as a Python int."""
    if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0:
        v = v.item()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError("%s must be an integer >= %d, got %r" % (name, minimum, v))
    return v


def check_labels(labels, n, name="labels"):
    """numpy labels: integers, 1-D, one per face (n); returned as an array (native byte
    order; masked arrays refused)."""
    labels = native(labels, name) if isinstance(labels, np.ndarray) else np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError("%s must be integers, got %s" % (name, labels.dtype))
    if labels.shape != (n,):
        raise ValueError("%s must be 1-D with one label per face (%d), got shape %s"
                         % (name, n, labels.shape))
    return labels


def settings(*, ratio=None, threshold=None, rank=None, scores=None, min_per_identity=1,
             per_identity=False, seed=0):
    """Validated Settings from select()'s keyword arguments."""
    if (ratio is None) == (threshold is None):
        raise ValueError("give exactly one of ratio= and threshold=, got %s" % (
            "both" if ratio is not None else "neither"))
    if ratio is not None:
        ratio = number(ratio, "ratio", 0, 1, lo_open=True)
    if threshold is not None:
        threshold = number(threshold, "threshold", -1, 1)
        if per_identity:
            raise ValueError("per_identity=True needs ratio=, not threshold=")
    if rank is None:
        rank = "scores" if scores is not None else "sparsity"
    if rank not in RANKS:
        raise ValueError("rank must be one of %s, got %r" % (", ".join(RANKS), rank))
    if (rank == "scores") != (scores is not None):
        raise ValueError("rank='scores' and scores= go together" if scores is None else
                         "scores= were given with rank=%r; leave rank unset" % rank)
    # an identity never keeps more than all its faces: larger values mean "all"
    min_keep = min(check_count(min_per_identity, "min_per_identity"), 2 ** 62)
    return Settings(ratio, threshold, rank, min_keep, bool(per_identity),
                    check_count(seed, "seed"))


def check_device(device):
    """A torch.device to run on, or None; ValueError for an unknown or absent device."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError("unknown device %r (e.g. 'cpu', 'cuda', 'cuda:1')" % (device,)) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device %r: CUDA is not available here (torch %s%s)" % (
                device, torch.__version__, "" if torch.version.cuda else ", a CPU build"))
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError("device %r: only %d CUDA device(s)" % (
                device, torch.cuda.device_count()))
    elif dev.type not in ("cpu",):
        raise ValueError("device %r is not supported: use 'cpu' or 'cuda'" % (device,))
    return dev


def to_family(result, like):
    """Indices back in the caller's array family (and, for tensors, device)."""
    if isinstance(like, torch.Tensor):
        return result
    if type(like).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy.from_dlpack(result)
    return result.cpu().numpy()  # numpy, memmaps, lists, and other DLPack producers


def bad_row_message(row, zero):
    return "features row %d has %s" % (
        row, "zero norm" if zero else "a non-finite value (NaN or Inf)")


def first_bad_row(x):
    """(row, is zero) of the first row of x that is zero or not finite, or None."""
    for a in range(0, x.shape[0], 1 << 16):
        norms = x[a:a + (1 << 16)].double().norm(dim=1)
        bad = torch.nonzero(~torch.isfinite(norms) | (norms == 0)).reshape(-1)
        if len(bad):
            return a + int(bad[0]), float(norms[int(bad[0])]) == 0
    return None


def raise_bad_row(x):
    """ValueError naming the first row of x that is zero or not finite."""
    bad = first_bad_row(x)
    if bad is None:
        raise AssertionError("no bad row in features")  # only called when a kernel saw one
    raise ValueError(bad_row_message(*bad))


def check_indices(keep, n, name="keep"):
    """Kept indices as int64 numpy: 1-D integers in [0, n), each at most once.

    ValueError/TypeError naming `name` (a path, for a file) and the first bad entry.
    """
    k = np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep)
    if k.ndim != 1:
        raise ValueError("%s: indices must be 1-D, got %s" % (
            name, "a 0-d array (a single value)" if k.ndim == 0 else "shape %s" % (k.shape,)))
    if k.dtype.kind not in "iu":
        raise TypeError("%s: indices must be integers, got %s" % (name, k.dtype))
    bad = np.flatnonzero((k < 0) | (k >= n)) if len(k) else []
    if len(bad):
        raise ValueError("%s: index %d (entry %d) is outside [0, %d)" % (
            name, int(k[bad[0]]), int(bad[0]), n))
    k = k.astype(np.int64, copy=False)
    s = np.sort(k)
    dup = np.flatnonzero(s[1:] == s[:-1])
    if len(dup):
        raise ValueError("%s: index %d appears more than once" % (name, int(s[dup[0]])))
    return k
