"""The nearest other identity of each candidate face of label_issues:
b_i = max over k != own_i of cos(y_i, m_k), and that k.

The exact search takes blocks of rows against all centres. A large float32
search is screened first (facenms.core.screen: int8 or bfloat16 with a proven
error bound), a small one computed in float32. Either way, each row that can
be flagged then gets b and k in float64 from the few centres within that
error of its maximum, which must hold the true nearest one. So a screened and
an unscreened search give the same b and k bit for bit, and ties go to the
smaller identity index. search="faiss" asks a faiss index of the centres
instead (approximate from FAISS_EXACT identities on).
"""
import math

import numpy as np
import torch

from .screen import screen, screen_kind

# elements per block (rows x centres for the search, pairs x d for the exact
# products): 8 MB of float32 stays in a shared L3
BLOCK_ELEMENTS = 1 << 21
FAISS_EXACT = 100_000  # centres below which search="faiss" uses a flat (exact) index
SCREEN_WORK = 1 << 28  # multiply-adds below which the screen costs more than it saves
# float64 rounding of the exact products and of `need` (computed in float32 from a, mu,
# sigma) next to the score test s > threshold, with room
NEAR_NEED = 2.0 ** -16


def product_error(dtype, d):
    """|computed - exact| of a dot product of unit vectors of length d in dtype: at
    most d unit roundings (each product, each add), with room."""
    return 1.01 * d * torch.finfo(dtype).eps / 2 + NEAR_NEED


def nearest_other(y, own, centres, need=None):
    """(b float64, k): for unit rows y of identities `own` (indices into centres),
    the largest cosine to another identity's centre and that identity; (None,
    None) when there is no other identity.

    need: per row, the b above which the row would be flagged. Rows that cannot
    pass it keep a lower b (-inf if the screen ruled them out) and k = 0; only
    the others get exact b and k. Without need, every row does.
    """
    n, k_all = y.shape[0], centres.shape[0]
    if k_all < 2:  # no other identity: b_i = a_i (the caller's rule)
        return None, None
    b = torch.full((n,), -math.inf, dtype=torch.float64, device=y.device)
    k = torch.zeros(n, dtype=torch.int64, device=y.device)
    kind = screen_kind(y.device, y.shape[1])
    if need is not None:
        need = need - NEAR_NEED
    if need is not None and y.dtype == torch.float32 and kind and \
            n * k_all * y.shape[1] > SCREEN_WORK:
        rows, cols = screen(y, own, centres, need, max(1, BLOCK_ELEMENTS // k_all), kind)
    else:
        rows, cols = float_pairs(y, own, centres, need, b)
    exact_nearest(y, centres, rows, cols, b, k)
    return b, k


def float_pairs(y, own, centres, need, b):
    """(rows, cols): for each row of y that can pass `need`, the centres within
    twice the float product's error of its largest; b gets every row's largest."""
    err = 2 * product_error(y.dtype, y.shape[1])
    step = max(1, BLOCK_ELEMENTS // centres.shape[0])
    rows, cols = [], []
    for lo in range(0, y.shape[0], step):
        sims = torch.mm(y[lo:lo + step], centres.T)
        sims.scatter_(1, own[lo:lo + step, None], -math.inf)
        top = sims.amax(dim=1)  # values alone: several times faster than max()
        b[lo:lo + step] = top
        floor = top - err
        if need is not None:  # the exact b may exceed need only if top > need - err
            floor = torch.where(top > need[lo:lo + step] - err, floor, math.inf)
        i, c = torch.nonzero(sims >= floor[:, None], as_tuple=True)
        rows.append(lo + i)
        cols.append(c)
    if not rows:
        return (torch.zeros(0, dtype=torch.int64, device=y.device),) * 2
    return torch.cat(rows), torch.cat(cols)


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


__all__ = ["nearest_other", "nearest_other_faiss", "faiss_index", "product_error"]
