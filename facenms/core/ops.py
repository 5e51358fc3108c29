"""Typed wrappers over torch.ops.facenms.* and their fake (meta) kernels.

Each wrapper loads the compiled extension on first use (see extension.py).

The fake kernels give output shapes without running anything, so that
``torch.compile`` can trace code that calls the ops.
"""
from typing import Tuple

import torch

from . import extension

MAX_LANES = 64
_fakes = []  # registered once the extension has defined the ops


def load():
    """Load the extension (ImportError if it is unusable) and register the fake kernels."""
    extension.load()
    if not _fakes:
        _register_fakes()
        _register_search_fakes()
        _fakes.append(True)


def prepare(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 row norms and sparsity scores of rows ``order``, grouped by ``offsets``."""
    load()
    return torch.ops.facenms.prepare(x, order, offsets)


def nms(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
        thresholds: torch.Tensor, min_keep: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS at up to 64 ascending thresholds in one pass.

    Returns ``bits`` (int64 per row of ``order``; bit j set = kept at
    ``thresholds[..., j]``) and the kept counts, shaped like ``thresholds``.
    """
    load()
    return torch.ops.facenms.nms(x, order, offsets, thresholds, int(min_keep))


def nms_with_norms(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                   thresholds: torch.Tensor, min_keep: int, norms: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``nms`` given the float64 norms of rows ``order`` (as ``prepare`` returns them,
    permuted with ``order``): the CUDA kernels skip their own pass for the norms."""
    load()
    return torch.ops.facenms.nms_with_norms(x, order, offsets, thresholds, int(min_keep), norms)


def rank_nms(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
             thresholds: torch.Tensor, min_keep: int = 1, centrality: bool = False
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank each identity by sparsity (or centrality), then ``nms`` in the same read.

    Returns the ranked ``order``, ``bits``, counts, and the smallest row index
    that is zero or not finite as a 0-d tensor (-1 if none). CPU only.
    """
    load()
    return torch.ops.facenms.rank_nms(x, order, offsets, thresholds, int(min_keep),
                                      bool(centrality))


def trimmed_centres(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                    min_faces: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]:
    """Each identity ranked by centrality, the centre of its nearer ceil(n/2) unit rows
    (all rows below ``min_faces``) and every row's cosine to it, in one read.

    Returns the ranked ``order``, the centres (C, d) and cosines (following the ranked
    order) in float32 (float64 for float64 x), and the smallest row index that is zero
    or not finite as a 0-d tensor (-1 if none). CPU only.
    """
    load()
    return torch.ops.facenms.trimmed_centres(x, order, offsets, int(min_faces))


def nearest_centres(sims: torch.Tensor, bounds: torch.Tensor, own: torch.Tensor,
                    y: torch.Tensor, centres: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centre other than ``own`` from a block of screened
    products ``sims`` (n, K): int32 for int8 rows, else the rows' float type.
    ``bounds`` (n, 3) float64: per row unit, err, need; ``sims * unit`` is within
    ``err`` of the cosine. Rows whose screened largest cannot exceed ``need`` get
    b = -inf, k = 0; the others the float64 cosine and index (ties: the smaller)
    over the centres within 2 err of it. CPU only."""
    load()
    return torch.ops.facenms.nearest_centres(sims, bounds, own, y, centres)


def int8_rows(v: torch.Tensor, common: bool = False
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 rows scaled to +-63 and rounded: (q int8, scale per row or 0-d with
    ``common``, norms of the rounding residuals). CPU only."""
    load()
    return torch.ops.facenms.int8_rows(v, bool(common))


def median_mad(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float64 (2,): the lower median mu of ``v[mask]`` and the lower median of
    |v - mu| over them. CPU only."""
    load()
    return torch.ops.facenms.median_mad(v, mask)


def _register_fakes():
    """Output shapes without running anything (called once _C has defined the ops)."""
    def check_csr(x, order, offsets):  # what the kernels' TORCH_CHECKs ask of every op
        torch._check(x.dim() == 2, lambda: "x must be 2-D (faces x dims)")
        torch._check(order.dim() == 1 and order.dtype == torch.int64,
                     lambda: "order must be a 1-D int64 tensor")
        torch._check(offsets.dim() == 1 and offsets.dtype == torch.int64,
                     lambda: "offsets must be a 1-D int64 tensor")

    def check_thresholds(offsets, thresholds):
        torch._check(thresholds.dtype == torch.float64, lambda: "thresholds must be float64")
        torch._check(thresholds.dim() in (1, 2), lambda: "thresholds must be T or C x T")
        if thresholds.dim() == 2:
            torch._check(thresholds.shape[0] == offsets.shape[0] - 1,
                         lambda: "C x T thresholds need one row per identity")

    @torch.library.register_fake("facenms::prepare")
    def _prepare_fake(x, order, offsets):
        check_csr(x, order, offsets)
        n = order.shape[0]
        return x.new_empty((n,), dtype=torch.float64), x.new_empty((n,), dtype=torch.float64)

    @torch.library.register_fake("facenms::nms")
    def _nms_fake(x, order, offsets, thresholds, min_keep):
        check_csr(x, order, offsets)
        check_thresholds(offsets, thresholds)
        return (order.new_empty(order.shape, dtype=torch.int64),
                order.new_empty(thresholds.shape, dtype=torch.int64))

    @torch.library.register_fake("facenms::nms_with_norms")
    def _nms_with_norms_fake(x, order, offsets, thresholds, min_keep, norms):
        torch._check(norms.dtype == torch.float64 and norms.shape == order.shape,
                     lambda: "norms must be float64, one per row of order")
        return _nms_fake(x, order, offsets, thresholds, min_keep)

    @torch.library.register_fake("facenms::rank_nms")
    def _rank_nms_fake(x, order, offsets, thresholds, min_keep, centrality):
        check_csr(x, order, offsets)
        check_thresholds(offsets, thresholds)
        return (torch.empty_like(order), order.new_empty(order.shape),
                order.new_empty(thresholds.shape), order.new_empty(()))

    @torch.library.register_fake("facenms::trimmed_centres")
    def _trimmed_centres_fake(x, order, offsets, min_faces):
        check_csr(x, order, offsets)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return (torch.empty_like(order), x.new_empty((offsets.shape[0] - 1, x.shape[1]),
                                                     dtype=dtype),
                x.new_empty(order.shape, dtype=dtype), order.new_empty(()))


def _register_search_fakes():
    """Output shapes of the ops of label_issues' search and scale."""
    @torch.library.register_fake("facenms::nearest_centres")
    def _nearest_centres_fake(sims, bounds, own, y, centres):
        torch._check(sims.dim() == 2 and y.shape[0] == sims.shape[0],
                     lambda: "nearest_centres: sims and y must have one row per candidate")
        return bounds.new_empty(own.shape), own.new_empty(own.shape)

    @torch.library.register_fake("facenms::int8_rows")
    def _int8_rows_fake(v, common):
        n = v.shape[0]
        return (v.new_empty(v.shape, dtype=torch.int8), v.new_empty(() if common else (n,)),
                v.new_empty((n,)))

    @torch.library.register_fake("facenms::median_mad")
    def _median_mad_fake(v, mask):
        return v.new_empty((2,), dtype=torch.float64)
