"""The order in which an identity's faces are walked: by descending score,
ties by the smaller row index."""
import numpy as np
import torch

from . import ops
from .csr import segment_ids, stable_argsort
from .inputs import raise_bad_row


def fused(x, rank):
    """The ranking rank_nms does inside the first pass (CPU: one read of the features)."""
    return rank if x.device.type == "cpu" and rank in ("sparsity", "centrality") else None


def random_key(n, seed):
    """The per-face key of rank='random': numpy's generator, so that the
    reference and every device and block layout draw the same order."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(n).astype(np.float64))


def rank(x, order, offsets, sizes, rank, scores, seed):
    """Reorder each identity's rows of `order` by descending score, ties by smaller index.

    rank: "sparsity" | "centrality" | "random" | "scores" (then `scores`, one
    per row of x). Raises ValueError naming the first zero or non-finite row.
    """
    norms, sparsity = ops.prepare(x, order, offsets)
    if bool((~torch.isfinite(norms) | (norms == 0)).any()):
        raise_bad_row(x)
    if rank == "sparsity":
        key = sparsity
    elif rank == "centrality":
        key = -sparsity
    elif rank == "random":
        key = random_key(x.shape[0], seed).to(x.device)[order]
    else:
        key = scores[order]
    # Stable sorts: by key descending, then by identity; within an identity,
    # rows start in ascending index order, so ties keep the smaller index first.
    perm = stable_argsort(-key)
    ident = segment_ids(sizes, total=order.shape[0])
    perm = perm[stable_argsort(ident[perm])]
    return order[perm]
