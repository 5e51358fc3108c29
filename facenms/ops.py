"""Typed wrappers over torch.ops.facenms.* and their fake (meta) kernels.

The fake kernels give output shapes without running anything, so that
``torch.compile`` can trace code that calls the ops.
"""
from typing import Tuple

import torch

from . import _ext  # noqa: F401  (registers the ops)

MAX_LANES = 64


def prepare(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 row norms and sparsity scores of rows ``order``, grouped by ``offsets``."""
    return torch.ops.facenms.prepare(x, order, offsets)


def nms(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
        thresholds: torch.Tensor, min_keep: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS at up to 64 ascending thresholds in one pass.

    Returns ``bits`` (int64 per row of ``order``; bit j set = kept at
    ``thresholds[..., j]``) and the kept counts, shaped like ``thresholds``.
    """
    return torch.ops.facenms.nms(x, order, offsets, thresholds, int(min_keep))


def rank_nms(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
             thresholds: torch.Tensor, min_keep: int = 1, centrality: bool = False
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank each identity by sparsity (or centrality), then ``nms`` in the same read.

    Returns the ranked ``order``, ``bits``, counts, and the smallest row index
    that is zero or not finite as a 0-d tensor (-1 if none). CPU only.
    """
    return torch.ops.facenms.rank_nms(x, order, offsets, thresholds, int(min_keep),
                                      bool(centrality))


@torch.library.register_fake("facenms::prepare")
def _prepare_fake(x, order, offsets):
    n = order.shape[0]
    return x.new_empty((n,), dtype=torch.float64), x.new_empty((n,), dtype=torch.float64)


@torch.library.register_fake("facenms::nms")
def _nms_fake(x, order, offsets, thresholds, min_keep):
    return (order.new_empty(order.shape, dtype=torch.int64),
            order.new_empty(thresholds.shape, dtype=torch.int64))


@torch.library.register_fake("facenms::rank_nms")
def _rank_nms_fake(x, order, offsets, thresholds, min_keep, centrality):
    return (torch.empty_like(order), order.new_empty(order.shape),
            order.new_empty(thresholds.shape), order.new_empty(()))
