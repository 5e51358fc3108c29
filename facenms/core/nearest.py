"""The nearest other identity of each candidate face of label_issues:
b_i = max over k != own_i of cos(y_i, m_k), and that k.

The exact search takes blocks of rows against all centres. A float32 search
is screened (facenms.core.screen: int8 or bfloat16 with a proven error bound)
where that pays, otherwise computed in the rows' float type. Either way, each
row that can be flagged then gets b and k in float64 from the few centres
within that error of its maximum, which must hold the true nearest one (one
fused op per block on the CPU: facenms::nearest_centres). So a screened and
an unscreened search give the same b and k bit for bit, and ties go to the
smaller identity index. search="faiss" asks a faiss index of the centres
instead (approximate from FAISS_EXACT identities on).
"""
import math

import numpy as np
import torch

from . import ops
from .hardware import screen_kind
from .screen import block_products

# elements per block (rows x centres for the search, pairs x d for the exact
# products): 8 MB of float32 stays in a shared L3
BLOCK_ELEMENTS = 1 << 21
FAISS_EXACT = 100_000  # centres below which search="faiss" uses a flat (exact) index
SCREEN_WORK = 1 << 20  # multiply-adds below which the screen costs more than it saves
# float64 rounding of the exact products and of `need` (computed in float32 from a, mu,
# sigma) next to the score test s > threshold, with room
NEAR_NEED = 2.0 ** -16


def nearest_other(y, own, centres, need=None):
    """(b float64, k): for unit rows y of identities `own` (indices into centres),
    the largest cosine to another identity's centre and that identity; (None,
    None) when there is no other identity.

    need: per row, the b above which the row would be flagged. Rows that cannot
    pass it get b = -inf and k = 0; only the others get exact b and k. Without
    need, every row does.
    """
    n, k_all = y.shape[0], centres.shape[0]
    if k_all < 2:  # no other identity: b_i = a_i (the caller's rule)
        return None, None
    kind = screen_kind(y.device, y.shape[1])
    if need is None or y.dtype != torch.float32 or n * k_all * y.shape[1] <= SCREEN_WORK:
        kind = None  # float64 rows, or a search too small to pay for a screen
    if need is None:
        need = torch.full((n,), -math.inf, dtype=torch.float64, device=y.device)
    need = need.double() - NEAR_NEED
    b = torch.empty(n, dtype=torch.float64, device=y.device)
    k = torch.empty(n, dtype=torch.int64, device=y.device)
    y, centres = y.contiguous(), centres.contiguous()
    for lo, sims, unit, err in block_products(y, centres, kind, BLOCK_ELEMENTS):
        hi = lo + sims.shape[0]
        bounds = torch.stack([unit, err, need[lo:hi]], dim=1)
        b[lo:hi], k[lo:hi] = nearest_in_block(sims, bounds, own[lo:hi], y[lo:hi], centres)
    return b, k


def nearest_in_block(sims, bounds, own, y, centres):
    """(b, k) of rows y from their block of products (block_products) and bounds
    (n, 3): per row the cosine of one unit of sims, its error bound err and
    need. -inf and 0 where the screened maximum rules a row out, else the float64
    maximum over the centres within 2 err of it (ties: the smaller index). The
    fused op on the CPU, torch elsewhere."""
    if y.device.type == "cpu":
        return ops.nearest_centres(sims.float() if sims.dtype == torch.bfloat16 else sims,
                                   bounds, own, y, centres)
    return nearest_in_block_torch(sims, bounds, own, y, centres)


def nearest_in_block_torch(sims, bounds, own, y, centres):
    """nearest_in_block in torch ops (any device; sims is overwritten)."""
    unit, err, need = bounds.unbind(dim=1)
    low = torch.iinfo(sims.dtype).min if sims.dtype == torch.int32 else -math.inf
    sims = sims.scatter_(1, own[:, None], low)
    top = sims.amax(dim=1).double() * unit  # values alone: several times faster than max()
    b = torch.full_like(top, -math.inf)
    k = torch.zeros_like(own)
    hit = torch.nonzero(top > need - err).reshape(-1)
    floor = (top[hit] - 2 * err[hit]) / unit[hit]
    i, c = torch.nonzero(sims.index_select(0, hit).double() >= floor[:, None], as_tuple=True)
    exact_nearest(y, centres, hit[i], c, b, k)
    return b, k


def exact_nearest(y, centres, rows, cols, b, k):
    """b[r], k[r] for every r in rows: the float64 maximum over its (rows, cols)
    pairs and the smallest col reaching it."""
    if rows.numel() == 0:
        return
    step = max(1, BLOCK_ELEMENTS // max(1, y.shape[1]))
    vals = torch.cat([(y.index_select(0, rows[lo:lo + step]).double()
                       * centres.index_select(0, cols[lo:lo + step]).double()).sum(dim=1)
                      for lo in range(0, rows.shape[0], step)])
    best = torch.full_like(b, -math.inf).scatter_reduce_(0, rows, vals, "amax")
    top = vals == best[rows]
    first = torch.full_like(k, centres.shape[0]).scatter_reduce_(0, rows[top], cols[top], "amin")
    hit = torch.unique(rows)
    b[hit], k[hit] = best[hit], first[hit]


def faiss_index(centres, probes=32):
    """A faiss inner-product index of the centres: flat (exact) below FAISS_EXACT
    centres, an inverted file above (4 sqrt(K) lists, `probes` of them searched)."""
    import faiss
    k_all, d = centres.shape
    c = np.ascontiguousarray(centres.detach().cpu().float().numpy())
    if k_all < FAISS_EXACT:
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, int(4 * math.sqrt(k_all)),
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(c)
        index.nprobe = probes
    index.add(c)
    return index


def nearest_other_faiss(y, own, centres, index=None):
    """nearest_other through a faiss index of the centres (faiss_index). An
    inverted-file index may miss a row's nearest other centre: b is then the cosine
    to the one it found (computed exactly), never more than the true b, so faces
    can only be missed, never flagged wrongly."""
    if centres.shape[0] < 2 or y.shape[0] == 0:
        return nearest_other(y, own, centres)
    index = faiss_index(centres) if index is None else index
    _, found = index.search(np.ascontiguousarray(y.detach().cpu().float().numpy()), 2)
    found = torch.from_numpy(found).to(y.device)
    k = torch.where(found[:, 0] == own, found[:, 1], found[:, 0])
    lost = k < 0  # the probed lists held no other centre
    k = torch.where(lost, own, k)
    b = (y.double() * centres.index_select(0, k).double()).sum(dim=1)
    return torch.where(lost, torch.full_like(b, -math.inf), b), k


__all__ = ["nearest_other", "nearest_in_block", "nearest_in_block_torch", "nearest_other_faiss",
           "faiss_index"]
