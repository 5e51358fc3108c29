"""Faces grouped by identity as CSR segments.

``order`` lists the rows of identity c at ``offsets[c]:offsets[c+1]``
(``sizes[c]`` of them); identities are in ascending label order. Every
kernel pass sees the same layout.
"""
import numpy as np
import torch

from .inputs import as_tensor, check_tensor, native


def stable_argsort(t):
    """Ascending stable argsort; numpy's on the CPU (radix sort for integers)."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.argsort(t.numpy(), kind="stable"))
    return torch.sort(t, stable=True).indices


def offsets_of(sizes):
    """CSR offsets (len(sizes) + 1, starting at 0) of segments of these sizes."""
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64, device=sizes.device)
    torch.cumsum(sizes.long(), 0, out=offsets[1:])
    return offsets


def segment_ids(sizes, first=0, total=None):
    """The segment of every position: first, first, ..., first + 1, ... (sizes[k] times each).

    ``total`` (= sizes.sum(), when the caller knows it) spares a device sync.
    """
    ids = torch.arange(first, first + len(sizes), device=sizes.device)
    return torch.repeat_interleave(ids, sizes, output_size=total)


def arange_within(sizes):
    """0..n_c-1 for each segment, concatenated."""
    total = int(sizes.sum())
    starts = torch.cumsum(sizes, 0) - sizes
    return torch.arange(total, device=sizes.device) - torch.repeat_interleave(
        starts, sizes, output_size=total)


def group(labels, n, device):
    """Group by label: (unique labels as numpy, order, offsets, sizes) on `device`."""
    if isinstance(labels, torch.Tensor) or (
            hasattr(labels, "__dlpack__") and not isinstance(labels, np.ndarray)):
        lab = check_tensor(as_tensor(labels, "labels"), "labels")
        if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
            raise TypeError("labels must be integers, got %s" % lab.dtype)
        shape = tuple(lab.shape)
    else:
        lab = native(labels, "labels") if isinstance(labels, np.ndarray) else \
            np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise TypeError("labels must be integers, got %s" % lab.dtype)
        shape = lab.shape
    if len(shape) != 1 or shape[0] != n:
        raise ValueError("labels must be 1-D with one label per face (%d), got shape %s"
                         % (n, shape))
    if isinstance(lab, torch.Tensor) and lab.device.type == "cpu" and device.type == "cpu":
        lab = lab.numpy()  # numpy's integer sorts are several times faster on the CPU
    if isinstance(lab, torch.Tensor):
        uniq, inverse, sizes = torch.unique(lab.to(device), sorted=True, return_inverse=True,
                                            return_counts=True)
        uniq = uniq.cpu().numpy()
        order = stable_argsort(inverse.long())
    else:  # one stable sort; numpy also covers uint64 labels, which torch cannot sort
        order = np.argsort(lab, kind="stable")
        s = lab[order]
        start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if n else np.zeros(0, np.int64)
        uniq = s[start]
        sizes = torch.from_numpy(np.diff(np.r_[start, n]).astype(np.int64)).to(device)
        order = torch.from_numpy(order.astype(np.int64)).to(device)
    sizes = sizes.long()
    return uniq, order, offsets_of(sizes), sizes
