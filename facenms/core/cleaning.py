"""Label issues: the faces most likely filed under the wrong identity.

The rule (``facenms.reference.label_issues`` states it in plain numpy):

1. **Trimmed centre.** Each identity's faces are ranked by centrality (cosine
   to the normalised mean of its unit rows, the ``rank="centrality"`` order of
   ``select``, ties by the smaller index). The identity's centre ``m_c`` is the
   normalised sum of its nearer half: the first ``ceil(n_c / 2)`` faces. Up to
   half the faces of an identity can be foreign without moving it.
2. **Own similarity.** ``a_i = cos(x_i, m_c)`` for every face.
3. **The dataset's scale.** ``mu`` = the median of ``a`` over the judged faces
   (see 6) and ``sigma = 1.4826 * median(|a - mu|)`` (the MAD, a standard
   deviation for a normal body). Medians are the lower middle element.
   Everything below is in units of ``sigma``, so one threshold fits a weak
   proxy (cosines spread over 0.5-1) and a strong final model (all near 0.95):
   the scale is measured on the data, not assumed.
4. **Nearest other identity.** ``b_i = max over k != c of cos(x_i, m_k)``.
5. **Score and flag.** ``s_i = ((mu - a_i) + (b_i - a_i)) / sigma``: how far the
   face lies below a typical member of its identity, plus how much more it
   resembles another identity than its own. A face is flagged when
   ``s_i > threshold`` (default 8). A foreign face of a person in the set scores
   on both terms; a face of a person outside the set (an open-set outlier)
   scores on the first, as ``a_i`` and ``b_i`` are both low; a hard but genuine
   photo (blur, pose) is far from its centre but near no other, so it needs to
   lie about twice as far out before it is flagged. On the simulated worlds of
   bench/quality the genuine faces' scores reach 8 for about 0.15% of faces and
   the foreign faces' exceed it for about 96% (see README).
6. **Small identities.** An identity with fewer than ``min_faces`` faces
   (default 3) is not judged: with one or two faces there is no majority to
   tell which face is foreign. Its faces are never flagged (score NaN), but its
   centre (the mean of all its faces) still counts as another identity in 4.
   With a single identity in the set, ``b_i`` is taken as ``a_i``.

Cost. ``s_i`` can exceed the threshold only if ``(mu - a_i) + (1 - a_i) >
threshold * sigma`` (as ``b_i <= 1``); only those candidates (a few percent)
are compared with every centre (facenms.core.nearest), in blocks of faces
against all centres, never a dense N x K matrix; large searches are screened
in int8 (x86 CPUs) or bfloat16 (where native) with a proven error bound, and
b is taken in float64 from the centres the screen leaves (one fused op per
block of products on the CPU). That search costs
candidates x K x d multiply-adds, which grows with the number of identities:
at millions of identities it, not the read, dominates; ``search="faiss"``
asks a faiss index of the centres instead (approximate from 100k identities
on: it can miss a flag, never add one). The rest is one read of the
features: the ranking, the trimmed centres and ``a`` (one fused kernel on the
CPU).
"""
import math
import time
from dataclasses import dataclass, field
from typing import Dict

import numpy as np
import torch

from . import ops, ranking
from .csr import arange_within, group, segment_ids
from .inputs import (as_tensor, check_count, check_device, check_features, number,
                     raise_bad_row, to_family)
from .nearest import NEAR_NEED, nearest_other, nearest_other_faiss

DEFAULT_THRESHOLD = 8.0
DEFAULT_MIN_FACES = 3
MAD_TO_SIGMA = 1.4826
NO_CENTRE = 2.0 ** -32  # as facenms.reference: a centre shorter than n * this is no direction
# elements per block (rows x d) for the centres: 8 MB of float32 stays in a shared L3;
# 1 << 23 measured 9-13% slower on 200k faces x 512
BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class LabelIssuesInfo:
    """What label_issues measured. Arrays over all faces are in caller order; arrays over
    the flagged faces follow the returned (ascending) indices."""
    score: np.ndarray  # (N,) float64 (mu - a_i) / sigma: below its own centre; NaN: not judged
    issue_score: np.ndarray  # (flagged,) s_i, the score compared with the threshold
    other_label: np.ndarray  # (flagged,) the label of the identity each face most resembles
    other_similarity: np.ndarray  # (flagged,) its cosine to that identity's centre
    own_similarity: np.ndarray  # (flagged,) its cosine to its own identity's centre
    threshold: float
    centre: float  # mu: median own-centre cosine
    scale: float  # sigma: 1.4826 * MAD of the own-centre cosines
    n_faces: int
    n_candidates: int  # faces compared with every centre
    n_unjudged: int  # faces of identities smaller than min_faces
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> int:
        return len(self.issue_score)

    def summary(self) -> str:
        return ("%d faces: %d label issues (%.2f%%), threshold %g sigma; own-centre cosine "
                "median %.4f, sigma %.4f; %d candidates, %d faces in identities too small "
                "to judge; %.3f s" % (
                    self.n_faces, self.flagged, 100 * self.flagged / max(1, self.n_faces),
                    self.threshold, self.centre, self.scale, self.n_candidates,
                    self.n_unjudged, self.timings.get("total", 0.0)))


SEARCHES = ("exact", "faiss")


def check_options(threshold, min_faces, search="exact"):
    """(threshold, min_faces, search) validated; None means the default."""
    if search not in SEARCHES:
        raise ValueError("search must be one of %s, got %r" % (", ".join(SEARCHES), search))
    t = DEFAULT_THRESHOLD if threshold is None else number(threshold, "threshold", 0, 1000)
    m = DEFAULT_MIN_FACES if min_faces is None else check_count(min_faces, "min_faces")
    if m < 3:
        raise ValueError("min_faces must be >= 3 (an identity of 2 faces has no majority), "
                         "got %d" % m)
    return t, m, search


def compute_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def unit(x, dtype):
    """Rows of x as unit vectors in `dtype` (callers have checked that no row is zero)."""
    y = x.to(dtype)
    return y / torch.linalg.vector_norm(y, dim=1, keepdim=True)


def ranked_centres(x, order, offsets, sizes, *, min_faces, dtype):
    """(ranked order, centres (C, d), a per ranked position) of rule steps 1-2.

    On the CPU one fused kernel ranks, sums and takes the cosines while each
    identity is in cache (float64 inside); elsewhere ranking.rank and
    trimmed_centres. Raises ValueError naming the first zero or non-finite row.
    """
    if x.device.type == "cpu" and order.numel():
        ranked, centres, a, bad = ops.trimmed_centres(x, order, offsets, min_faces)
        if int(bad) >= 0:
            raise_bad_row(x)
        return ranked, centres.to(dtype), a.to(dtype)
    ranked, norms = order, torch.zeros(0, dtype=torch.float64, device=x.device)
    if order.numel():
        ranked, norms = ranking.rank(x, order, offsets, sizes, method="centrality",
                                     with_norms=True)
    return (ranked,) + trimmed_centres(x, ranked, norms, offsets, sizes, min_faces=min_faces,
                                       dtype=dtype)


def trimmed_centres(x, ranked, norms, offsets, sizes, *, min_faces, dtype):
    """(centres (C, d) in dtype, a (per rank position)) for identities in centrality order.

    ``ranked``: rows of x, each identity nearest its plain mean first, and
    ``norms`` their float64 norms (as ranking.rank returns them). Identities
    are taken a block of whole identities at a time, so that every row is
    gathered once and its own similarity follows at once.
    """
    c, d, n = len(sizes), x.shape[1], ranked.shape[0]
    centres = torch.zeros((c, d), dtype=dtype, device=x.device)
    a = torch.empty(n, dtype=dtype, device=x.device)
    off = offsets.cpu()
    step = max(1, BLOCK_ELEMENTS // max(1, d))
    c0 = 0
    while c0 < c:
        c1 = int(torch.searchsorted(off, off[c0] + step, right=True)) - 1
        c1 = min(max(c1, c0 + 1), c)
        lo, hi = int(off[c0]), int(off[c1])
        y = x.index_select(0, ranked[lo:hi]).to(dtype)
        y /= norms[lo:hi, None].to(dtype)
        size = sizes[c0:c1]
        seg = segment_ids(size, total=hi - lo)
        take = torch.where(size >= min_faces, (size + 1) // 2, size)
        inner = arange_within(size) < take.index_select(0, seg)
        sums = torch.zeros((c1 - c0, d), dtype=dtype, device=x.device)
        sums.index_add_(0, seg[inner], y[inner])
        length = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
        ok = length > take[:, None].to(dtype) * NO_CENTRE
        centres[c0:c1] = torch.where(ok, sums / torch.where(ok, length, torch.ones_like(length)),
                                     torch.zeros_like(sums))
        a[lo:hi] = torch.einsum("ij,ij->i", y, centres[c0:c1].index_select(0, seg))
        c0 = c1
    return centres, a


def lower_median(v):
    """The lower middle element of a 1-D tensor (numpy's median of an odd count)."""
    return torch.kthvalue(v, (v.shape[0] - 1) // 2 + 1).values


def robust_scale(a, judged):
    """(mu, sigma) of a[judged] as Python floats: median and 1.4826 * MAD; (nan, nan)
    for no faces."""
    if a.device.type == "cpu":  # one exact radix select for both: no mispredictions
        mu, mad = ops.median_mad(a.contiguous(), judged.contiguous()).tolist()
        return mu, MAD_TO_SIGMA * mad
    a_judged = a[judged]
    if a_judged.shape[0] == 0:
        return math.nan, math.nan
    mu = lower_median(a_judged)
    sigma = MAD_TO_SIGMA * float(lower_median((a_judged - mu).abs()))
    return float(mu), sigma


def candidates(a, judged, mu, sigma, threshold):
    """Faces whose score could exceed the threshold even if b_i were 1:
    (mu - a) + (1 - a) > threshold * sigma, as one comparison of a with a cut,
    which NEAR_NEED widens so that float rounding cannot leave a face out."""
    if not math.isfinite(mu):
        return torch.zeros_like(judged)
    cut = (mu + 1 - threshold * max(sigma, 0.0)) / 2 + NEAR_NEED
    return judged & (a < cut)


def issue_scores(a, b, mu, sigma):
    """s_i = ((mu - a_i) + (b_i - a_i)) / sigma (sigma 0: +inf for any positive excess)."""
    excess = (mu - a) + (b - a)
    if sigma > 0:
        return excess / sigma
    return torch.where(excess > 0, torch.full_like(a, math.inf), torch.zeros_like(a))


def label_issues(features, labels, *, threshold=None, min_faces=None, device=None,
                 return_info=False, search="exact"):
    """facenms.label_issues with the features in memory (see its documentation)."""
    t0 = time.perf_counter()
    threshold, min_faces, search = check_options(threshold, min_faces, search)
    x = check_features(as_tensor(features, "features"))
    dev = check_device(device)
    if dev is not None:
        x = x.to(dev)
    n, dtype = x.shape[0], compute_dtype(x)
    uniq, order, offsets, sizes = group(labels, n, x.device)
    ranked, centres, a = ranked_centres(x, order, offsets, sizes, min_faces=min_faces,
                                        dtype=dtype)
    # per rank position (rows `ranked`), put back in row order only for the info
    own = segment_ids(sizes, total=n)
    judged = (sizes >= min_faces).index_select(0, own)
    mu, sigma = robust_scale(a, judged)
    timings = {"centres": time.perf_counter() - t0}
    t1 = time.perf_counter()
    pos = torch.nonzero(candidates(a, judged, mu, sigma, threshold)).reshape(-1)
    cand = ranked.index_select(0, pos)  # index_select: several times faster than x[cand]
    found = flag_candidates(unit(x.index_select(0, cand), dtype), cand, a.index_select(0, pos),
                            own.index_select(0, pos), centres, mu=mu, sigma=sigma,
                            threshold=threshold, search=search)
    timings["candidates"] = time.perf_counter() - t1
    out = to_family(found[0], features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    a_rows = torch.empty_like(a)
    a_rows[ranked] = a
    judged_rows = torch.empty_like(judged)
    judged_rows[ranked] = judged
    return out, make_info(a_rows, judged_rows, found, uniq, mu=mu, sigma=sigma,
                          threshold=threshold, n=n, n_cand=int(cand.numel()), timings=timings)


def flag_candidates(y, rows, a, own, centres, *, mu, sigma, threshold, search="exact",
                    index=None):
    """(flagged rows ascending, their s, b, a, other identity index) among candidates.
    search="faiss": through `index` (faiss_index(centres), built here when None)."""
    need = threshold * sigma - (mu - a) + a if sigma > 0 else None
    if search == "faiss":
        b, k = nearest_other_faiss(y, own, centres, index)
    else:
        b, k = nearest_other(y, own, centres, need)
    if b is None:
        b, k = a, own
    s = issue_scores(a.double(), b.double(), mu, sigma)  # b is float64: so is the test
    hit = torch.nonzero(s > threshold).reshape(-1)
    hit = hit.index_select(0, torch.argsort(rows.index_select(0, hit)))  # ascending rows
    return (rows.index_select(0, hit), s.index_select(0, hit).to(a.dtype),
            b.index_select(0, hit).to(a.dtype), a.index_select(0, hit), k.index_select(0, hit))


def make_info(a, judged, found, uniq, *, mu, sigma, threshold, n, n_cand, timings):
    """LabelIssuesInfo from the per-face own similarities and the flagged candidates."""
    rows, s, b, a_f, k = (t.cpu() for t in found)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (mu - a.cpu().double().numpy()) / sigma if sigma > 0 else \
            np.where(a.cpu().double().numpy() < mu, np.inf, 0.0)
    judged_h = judged.cpu().numpy()
    score = np.where(judged_h, score, np.nan)
    other = np.asarray(uniq)[k.numpy()] if len(k) else np.asarray(uniq)[:0]
    return LabelIssuesInfo(
        score=score, issue_score=s.double().numpy(), other_label=other,
        other_similarity=b.double().numpy(), own_similarity=a_f.double().numpy(),
        threshold=threshold, centre=mu, scale=sigma, n_faces=n, n_candidates=n_cand,
        n_unjudged=int(n - judged_h.sum()), timings=timings)


def counted_ratio(ratio, n, dropped):
    """The ratio of the faces left after cleaning that keeps round(ratio * n) of all n."""
    left = n - dropped
    return 1.0 if left <= 0 else min(1.0, ratio * n / left)


__all__ = ["LabelIssuesInfo", "label_issues", "ranked_centres", "trimmed_centres",
           "robust_scale", "candidates", "issue_scores", "flag_candidates", "make_info",
           "counted_ratio"]
