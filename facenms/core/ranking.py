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
    ident = segment_ids(sizes, total=order.shape[0])
    if rank in ("sparsity", "centrality"):
        # scores are multiples of 2**-20 in [0, 2]: small integers, so that one
        # sort of (identity, key) packed into an int64 does what two stable sorts do
        k = torch.round(sparsity * 2.0 ** 20).long()
        key = (1 << 21) - k if rank == "sparsity" else k  # in [0, 2**21]
        return order[stable_argsort(pack_keys(ident, key, 22, len(sizes)))]
    if rank == "random":
        key = random_key(x.shape[0], seed).to(x.device)[order].long()
        bits = max(1, int(x.shape[0] - 1).bit_length())
        return order[stable_argsort(pack_keys(ident, (x.shape[0] - 1) - key, bits, len(sizes)))]
    # Any float key: stable sorts by key descending, then by identity; within an
    # identity, rows start in ascending index order, so ties keep the smaller index.
    perm = stable_argsort(-scores[order])
    perm = perm[stable_argsort(ident[perm])]
    return order[perm]


def pack_keys(ident, key, bits, n_ident):
    """ident * 2**bits + key as int64 (key in [0, 2**bits)): ascending = by identity,
    then by key; a stable sort keeps equal keys in position order."""
    if n_ident >= 1 << (62 - bits):
        raise ValueError("too many identities (%d) to rank in one sort" % n_ident)
    return (ident << bits) | key
