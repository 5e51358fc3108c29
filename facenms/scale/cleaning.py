"""Label issues streamed over blocks of identities and split over processes.

The same rule and the same core functions as facenms.core.cleaning, and the
same answer: a block always holds whole identities, so one read of the
features ranks each identity, forms its trimmed centre and every face's own
similarity. The centres (K x d) and the own similarities (N) are then summed
over ranks, every rank takes the same median and scale, and a second read
touches only the candidate faces (a few percent), in blocks of at most
``block_rows`` faces against all centres.

Memory: select's (labels, rank order: about 24 bytes a face, two feature
blocks) plus the centres, K x d in float32, and 8 bytes a face for the own
similarities.
"""
import time

import torch

from ..core.cleaning import (candidates, check_options, compute_dtype, flag_candidates,
                             make_info, ranked_centres, robust_scale, unit)
from ..core.nearest import faiss_index
from ..core.csr import group, segment_ids
from ..core.inputs import bad_row_message, to_family
from .blocks import block_rows, blocks, first_bad_in_block, source
from .dist import comm_for, split_identities
from .reader import open_features, open_labels


def first_pass(src, dev, dtype, order, offsets, sizes, *, span, rows, min_faces):
    """Centres (K x d, zero outside this rank's identities), own similarities (N, zero
    outside) and the first bad row seen as (row, 0 zero / 1 non-finite) or None."""
    c_lo, c_hi = span
    off_np = offsets.numpy()
    n = int(off_np[-1])
    centres = None
    a = torch.zeros(n, dtype=dtype)
    bad = None
    for c0, c1 in blocks(off_np, c_lo, c_hi, rows):
        lo, hi = int(off_np[c0]), int(off_np[c1])
        x_h, local, caller = src.load(order[lo:hi].numpy())
        x = x_h.to(dev)
        off = (offsets[c0:c1 + 1] - lo).to(dev)
        try:
            ranked, cent, a_pos = ranked_centres(x, local.to(dev), off, sizes[c0:c1].to(dev),
                                                 min_faces=min_faces, dtype=dtype)
        except ValueError:
            found = first_bad_in_block(x_h, local, caller)
            bad = found if bad is None else min(bad, found)
            continue
        if centres is None:
            centres = torch.zeros((len(sizes), x.shape[1]), dtype=dtype, device=dev)
        centres[c0:c1] = cent
        ranked_h = ranked.cpu()
        a[ranked_h if caller is None else torch.from_numpy(caller)[ranked_h]] = a_pos.cpu()
        del x, x_h
    return centres, a, bad


def raise_if_bad(comm, bad, n):
    """Every rank learns the first bad row over all ranks, so all raise together."""
    code = torch.tensor([2 * n + 2 if bad is None else 2 * bad[0] + bad[1]], dtype=torch.int64)
    code = int(comm.min(code))
    if code < 2 * n + 2:
        raise ValueError(bad_row_message(code // 2, code % 2 == 0))


def label_issues(features, labels, *, threshold=None, min_faces=None, device=None,
                 return_info=False, block_size=None, max_memory=None, distributed=None,
                 search="exact"):
    """facenms.label_issues over blocks of identities; every rank gets the same answer."""
    t0 = time.perf_counter()
    threshold, min_faces, search = check_options(threshold, min_faces, search)
    features = open_features(features)
    labels = open_labels(labels)
    comm = comm_for(distributed)
    src, dev, n, d, row_dtype = source(features, device)
    dtype = torch.float64 if row_dtype == torch.float64 else torch.float32
    uniq, order, offsets, sizes = group(labels, n, torch.device("cpu"))
    bounds = split_identities(sizes.numpy(), comm.world)
    span = int(bounds[comm.rank]), int(bounds[comm.rank + 1])
    rows = block_rows(d, row_dtype.itemsize, block_size, max_memory)
    centres, a, bad = first_pass(src, dev, dtype, order, offsets, sizes, span=span, rows=rows,
                                 min_faces=min_faces)
    raise_if_bad(comm, bad, n)
    if centres is None:  # this rank has no identities
        centres = torch.zeros((len(sizes), d), dtype=dtype, device=dev)
    centres, a = comm.sum(centres), comm.sum(a)
    own = torch.empty(n, dtype=torch.int64)
    own[order] = segment_ids(sizes, total=n)
    judged = sizes[own] >= min_faces
    mu, sigma = robust_scale(a, judged)
    timings = {"centres": time.perf_counter() - t0}

    t1 = time.perf_counter()
    mine = (own >= span[0]) & (own < span[1])
    cand = torch.nonzero(candidates(a, judged, mu, sigma, threshold) & mine).reshape(-1)
    parts = []
    index = faiss_index(centres) if search == "faiss" and len(cand) and len(centres) > 1 \
        else None  # built once for every block of candidates
    for lo in range(0, cand.shape[0], rows):
        pick = cand[lo:lo + rows]
        x_h, local, _ = src.load(pick.numpy())
        y = unit(x_h.to(dev)[local.to(dev)], compute_dtype(x_h))
        parts.append([t.cpu() for t in flag_candidates(
            y, pick.to(dev), a[pick].to(dev), own[pick].to(dev), centres, mu=mu, sigma=sigma,
            threshold=threshold, search=search, index=index)])
    found = gather(comm, parts, n, dtype)
    n_cand = int(comm.sum(torch.tensor([cand.shape[0]], dtype=torch.int64)))
    timings["candidates"] = time.perf_counter() - t1
    out = to_family(found[0].to(dev), features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    return out, make_info(a, judged, found, uniq, mu=mu, sigma=sigma, threshold=threshold, n=n,
                          n_cand=n_cand, timings=timings)


def gather(comm, parts, n, dtype):
    """This rank's flagged (rows, s, b, a, k) blocks joined, then summed over ranks into
    the same ascending arrays on every rank."""
    if parts:
        rows, s, b, a, k = (torch.cat(c) for c in zip(*parts))
    else:
        rows = k = torch.zeros(0, dtype=torch.int64)
        s = b = a = torch.zeros(0, dtype=dtype)
    if comm.world == 1:
        srt = torch.argsort(rows)
        return rows[srt], s[srt], b[srt], a[srt], k[srt]
    mask = torch.zeros(n, dtype=torch.uint8)
    mask[rows] = 1
    full = torch.zeros((4, n), dtype=torch.float64)
    full[0, rows], full[1, rows], full[2, rows] = s.double(), b.double(), a.double()
    full[3, rows] = k.double()
    mask, full = comm.sum(mask), comm.sum(full)
    rows = torch.nonzero(mask).reshape(-1)
    return (rows, full[0, rows].to(dtype), full[1, rows].to(dtype), full[2, rows].to(dtype),
            full[3, rows].long())
