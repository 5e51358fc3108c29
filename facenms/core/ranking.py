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


def float32_safe(x, norms=None):
    """x, or x with rows rescaled by powers of two where a row's norm lies outside
    [2**-60, 2**60]. The CUDA kernels accumulate float32 (tensor-core) dot products
    of the raw rows, whose squares would overflow or underflow there; the CPU
    kernels rescale such rows themselves. `norms`: the rows' float64 norms when
    known (else one reduction over x)."""
    if x.device.type != "cuda" or x.dtype == torch.float16 or x.numel() == 0:
        return x  # float16 rows cannot leave the range
    return rescale_rows(x, x.abs().amax(dim=1).double() if norms is None else norms)


def rescale_rows(x, size):
    """x with every row whose `size` (norm or largest element, float64) is outside
    [2**-60, 2**60] multiplied by the power of two that brings it into [0.5, 1):
    exact, so no row changes direction. x itself when no row needs it."""
    odd = (size > 0) & torch.isfinite(size) & ((size < 2.0 ** -60) | (size > 2.0 ** 60))
    if not bool(odd.any()):
        return x
    _, e = torch.frexp(size)
    scale = torch.where(odd, torch.ldexp(torch.ones_like(size), -e), torch.ones_like(size))
    return (x.double() * scale[:, None]).to(x.dtype)


def rank(x, order, offsets, sizes, *, method, scores=None, seed=0, with_norms=False):
    """Reorder each identity's rows of `order` by descending score, ties by smaller index.

    method: "sparsity" | "centrality" | "random" | "scores" (then `scores`, one
    per row of x). Raises ValueError naming the first zero or non-finite row.
    with_norms: also return the rows' float64 norms, following the ranked order.
    """
    norms, sparsity = ops.prepare(x, order, offsets)
    if bool((~torch.isfinite(norms) | (norms == 0)).any()):
        raise_bad_row(x)
    perm = _perm(x, order, sizes, sparsity, method=method, scores=scores, seed=seed)
    return (order[perm], norms[perm]) if with_norms else order[perm]


def _perm(x, order, sizes, sparsity, *, method, scores, seed):
    """The permutation of `order` that puts every identity in rank order."""
    ident = segment_ids(sizes, total=order.shape[0])
    if method in ("sparsity", "centrality"):
        # scores are multiples of 2**-20 in [0, 2]: small integers, so that one
        # sort of (identity, key) packed into an int64 does what two stable sorts do
        k = torch.round(sparsity * 2.0 ** 20).long()
        key = (1 << 21) - k if method == "sparsity" else k  # in [0, 2**21]
        return stable_argsort(pack_keys(ident, key, 22, len(sizes)))
    if method == "random":
        key = random_key(x.shape[0], seed).to(x.device)[order].long()
        bits = max(1, int(x.shape[0] - 1).bit_length())
        return stable_argsort(pack_keys(ident, (x.shape[0] - 1) - key, bits, len(sizes)))
    # Any float key: stable sorts by key descending, then by identity; within an
    # identity, rows start in ascending index order, so ties keep the smaller index.
    perm = stable_argsort(-scores[order])
    return perm[stable_argsort(ident[perm])]


def pack_keys(ident, key, bits, n_ident):
    """ident * 2**bits + key as int64 (key in [0, 2**bits)): ascending = by identity,
    then by key; a stable sort keeps equal keys in position order."""
    if n_ident >= 1 << (62 - bits):
        raise ValueError("too many identities (%d) to rank in one sort" % n_ident)
    return (ident << bits) | key
