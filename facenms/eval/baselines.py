"""Baselines to compare Face-NMS against, with the call shape of ``facenms.select``.

    keep = facenms.baselines.random_subset(features, labels, ratio=0.6)
    keep = facenms.baselines.kcenter_greedy(features, labels, ratio=0.6)
    keep = facenms.baselines.semdedup(features, labels, ratio=0.6)
    keep = facenms.baselines.diffprob(features, labels, ratio=0.6)

Each returns sorted int64 indices of the kept faces in the array family and on
the device of ``features`` (numpy in -> numpy out, torch in -> torch out), and
with ``return_info=True`` also a ``facenms.SelectionInfo`` (its ``threshold``
holds the method's own parameter: SemDeDup's threshold, DiffProb's gap).

The rules, as we read them (every one is per identity, like Face-NMS):

- ``random_subset``: ``round(ratio*N)`` faces uniformly at random (or
  ``max(1, round(ratio*n_c))`` per identity with ``per_identity=True``).
- ``kcenter_greedy``: farthest-point sampling. Start from the face nearest the
  identity centre, repeatedly add the face farthest (lowest maximum cosine
  similarity) from those chosen, until ``max(1, round(ratio*n_c))``. On the unit
  sphere cosine order is chord-distance order, so this is Gonzalez's
  2-approximation of the k-center problem in Euclidean distance.
- ``semdedup``: walk an identity in rank order (Face-NMS's sparsity ranking by
  default) and drop a face whose similarity to ANY earlier face exceeds ``t``,
  kept or not. Face-NMS suppresses only by kept faces: on a chain a~b, b~c,
  a!~c SemDeDup keeps {a}, Face-NMS keeps {a, c}.
- ``diffprob``: walk an identity by descending true-class probability ``p``;
  keep the first face, then drop each face with ``p > p_last - gap`` where
  ``p_last`` is the last kept face's probability (its difficulty is too close
  to one already kept). ``p`` comes from ``probs=`` (e.g. the proxy's
  classifier) or from a softmax over cosine similarities to identity
  prototypes (normalised means), scaled by ``scale``.

Ratio modes search the method's parameter for the kept count closest to
``round(ratio*N)``; SemDeDup's and DiffProb's counts are monotone in it, so the
search is exact (a sort for SemDeDup, bisection for DiffProb).

Work is vectorised over identities: identities of similar size are padded into
(B, n, n) blocks and handled with batched matrix products, so there is no
Python loop over identities.
"""
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..core.csr import group, segment_ids
from ..core.inputs import as_tensor, check_features, check_scores, number, settings, to_family
from ..core.ranking import rank as rank_rows
from ..core.select import SelectionInfo

__all__ = ["random_subset", "kcenter_greedy", "semdedup", "diffprob", "METHODS"]

_BLOCK = 1 << 24  # elements per padded block (64 MiB of float32)


# ------------------------------------------------------------- helpers ----

def _check_ratio(ratio, name="ratio"):
    return number(ratio, name, 0, 1, lo_open=True)


def _one_of(ratio, param, pname):
    if (ratio is None) == (param is None):
        raise ValueError("give exactly one of ratio= and %s=, got %s" % (
            pname, "both" if ratio is not None else "neither"))
    if ratio is not None:
        _check_ratio(ratio)


class _Prepared:
    """Features grouped by identity (CSR) and put in rank order, as select() does."""

    def __init__(self, features, labels, rank, device, seed=0, scores=None):
        self.t0 = time.perf_counter()
        self.features = features
        x = check_features(as_tensor(features, "features"))
        if device is not None:
            x = x.to(device)
        self.n = x.shape[0]
        self.uniq, order, self.offsets, self.sizes = group(labels, self.n, x.device)
        if scores is not None:
            scores = scores.to(x.device, torch.float64)
        if self.n > 0:  # also rejects zero-norm and non-finite rows, naming the row
            order = rank_rows(x, order, self.offsets, self.sizes, method=rank, scores=scores,
                              seed=seed)
        self.order = order
        self.x = x
        self.seg = segment_ids(self.sizes, total=self.n)

    def unit(self):
        """Unit rows in rank order, float32."""
        return F.normalize(self.x[self.order].float(), dim=1)

    def finish(self, keep_pos, param, target_ratio, passes=1, return_info=False):
        """keep_pos (bool per rank position) -> indices in the caller's family."""
        result = torch.sort(self.order[keep_pos]).values
        out = to_family(result, self.features)
        if not return_info:
            return out
        kept_per = torch.zeros(len(self.uniq), dtype=torch.int64, device=self.x.device)
        kept_per.index_add_(0, self.seg, keep_pos.long())
        kept = int(result.numel())
        info = SelectionInfo(
            threshold=None if param is None else float(param),
            ratio=kept / self.n if self.n else 0.0, target_ratio=target_ratio, kept=kept,
            n_faces=self.n, identities=self.uniq, faces_per_identity=self.sizes.cpu().numpy(),
            kept_per_identity=kept_per.cpu().numpy(), passes=passes,
            timings={"total": time.perf_counter() - self.t0})
        return out, info


def _blocks(sizes, per_row):
    """Identities in padded blocks: yields (identity ids, padded size n).

    Identities are sorted by size and grouped by power-of-two size class, then
    cut so that a block's B * n * per_row(n) elements stay under _BLOCK.
    """
    if len(sizes) == 0:
        return
    s = sizes.cpu()
    by_size = torch.argsort(s, stable=True)
    cls = torch.ceil(torch.log2(s[by_size].double().clamp(min=1))).long()
    bounds = torch.cat([torch.tensor([0]), torch.nonzero(cls[1:] != cls[:-1]).flatten() + 1,
                        torch.tensor([len(s)])]).tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        n = int(s[by_size[b - 1]])
        step = max(1, _BLOCK // max(1, n * per_row(n)))
        for c in range(a, b, step):
            yield by_size[c:min(b, c + step)].to(sizes.device), n


def _pad_index(offsets, sizes, ids, n):
    """(B, n) rank positions of identities `ids` (clamped) and the validity mask."""
    ar = torch.arange(n, device=offsets.device)
    valid = ar[None, :] < sizes[ids][:, None]
    pos = offsets[ids][:, None] + torch.minimum(ar[None, :], sizes[ids][:, None] - 1)
    return pos, valid


def _quota(sizes, ratio, m=1):
    """max(m, round(ratio*n_c)), at most n_c: round half to even, as numpy and torch do."""
    q = torch.round(sizes.double() * ratio).long().clamp(min=m)
    return torch.minimum(q, sizes)


# -------------------------------------------------------------- random ----

def random_subset(features, labels, ratio=0.6, *, seed=0, per_identity=False, device=None,
                  return_info=False):
    """A uniformly random core set of exactly round(ratio*N) faces.

    With per_identity=True every identity keeps max(1, round(ratio*n_c)) of its
    faces at random instead (no identity is lost). `features` are only checked
    (shape, finite, non-zero rows) and used for the output's family and device.
    """
    ratio = _check_ratio(ratio)
    p = _Prepared(features, labels, "random", device, seed=seed)
    if per_identity:
        # rank="random" already shuffled each identity: take each one's first q faces
        start = p.offsets[:-1][p.seg]
        within = torch.arange(p.n, device=p.x.device) - start
        keep_pos = within < _quota(p.sizes, ratio)[p.seg]
    else:
        pick = np.random.default_rng(seed).permutation(p.n)[:round(ratio * p.n)]
        keep_pos = torch.zeros(p.n, dtype=torch.bool, device=p.x.device)
        # order is a permutation of 0..N-1: mark the rank positions of the picked faces
        inv = torch.empty_like(p.order)
        inv[p.order] = torch.arange(p.n, device=p.x.device)
        keep_pos[inv[torch.from_numpy(pick).to(p.x.device)]] = True
    return p.finish(keep_pos, None, ratio, passes=0, return_info=return_info)


# ------------------------------------------------------------ k-center ----

def kcenter_greedy(features, labels, ratio=0.6, *, device=None, return_info=False):
    """Per identity, farthest-point sampling of max(1, round(ratio*n_c)) faces.

    The first centre is the face nearest the identity centre; then the face
    whose highest cosine similarity to the chosen ones is lowest is added, ties
    to the face nearer the centre. The total is the sum of the per-identity
    quotas, so it can differ from round(ratio*N) by rounding.
    """
    ratio = _check_ratio(ratio)
    p = _Prepared(features, labels, "centrality", device)
    keep_pos = torch.zeros(p.n, dtype=torch.bool, device=p.x.device)
    if p.n:
        y = p.unit()
        quota = _quota(p.sizes, ratio)
        d = y.shape[1]
        for ids, n in _blocks(p.sizes, lambda n: n + d):
            pos, valid = _pad_index(p.offsets, p.sizes, ids, n)
            yb = y[pos] * valid[..., None]
            g = torch.bmm(yb, yb.transpose(1, 2))
            q = quota[ids]
            b = torch.arange(len(ids), device=y.device)
            chosen = torch.zeros_like(valid)
            chosen[:, 0] = True
            near = g[:, 0, :].clone()  # highest similarity to a chosen face
            inf = torch.tensor(float("inf"), device=y.device)
            for step in range(1, int(q.max())):
                active = q > step
                cand = torch.where(chosen | ~valid, inf, near)
                j = torch.argmin(cand, dim=1)  # first minimum: the more central face
                chosen[b[active], j[active]] = True
                near = torch.where(active[:, None], torch.maximum(near, g[b, j]), near)
            keep_pos[pos[chosen & valid]] = True
    return p.finish(keep_pos, None, ratio, return_info=return_info)


# ------------------------------------------------------------ SemDeDup ----

def _max_earlier(p, y):
    """Per rank position: highest similarity to any earlier face of its identity (-inf first)."""
    out = torch.full((p.n,), float("-inf"), device=y.device)
    d = y.shape[1]
    for ids, n in _blocks(p.sizes, lambda n: n + d):
        pos, valid = _pad_index(p.offsets, p.sizes, ids, n)
        yb = y[pos] * valid[..., None]
        g = torch.bmm(yb, yb.transpose(1, 2))
        earlier = torch.ones(n, n, dtype=torch.bool, device=y.device).tril(-1)
        m = g.masked_fill(~(earlier[None] & valid[:, None, :]), float("-inf")).amax(dim=2)
        out[pos[valid]] = m[valid]
    return out


def _closest_threshold(values, target):
    """t with #{values <= t} closest to target (ties: the larger t), over t in [-1, 1]."""
    v = torch.sort(values.double().cpu()).values
    cand = torch.unique(torch.cat([v[torch.isfinite(v)].clamp(-1, 1),
                                   torch.tensor([-1.0, 1.0], dtype=torch.float64)]))
    counts = torch.searchsorted(v, cand, right=True)
    diff = (counts - target).abs()
    j = int(torch.nonzero(diff == diff.min()).flatten()[-1])
    return float(cand[j])


def semdedup(features, labels, ratio=None, threshold=None, *, scores=None, rank=None, seed=0,
             device=None, return_info=False):
    """Per identity, in rank order, drop a face whose cosine similarity to ANY
    earlier face (kept or not) exceeds `threshold`.

    With ratio=, the threshold whose kept count is closest to round(ratio*N)
    (ties: the larger threshold). The first face of every identity is always
    kept, so the count cannot go below the number of identities. Ranking as in
    select(): rank="sparsity" (default), "centrality", "random", or scores=.
    """
    # validates like select()
    rank = settings(ratio=ratio, threshold=threshold, rank=rank, scores=scores, seed=seed).rank
    if scores is not None:
        scores = check_scores(scores, len(labels), "cpu")
    p = _Prepared(features, labels, rank, device, seed=seed, scores=scores)
    m = _max_earlier(p, p.unit()) if p.n else torch.zeros(0, device=p.x.device)
    t = float(threshold) if threshold is not None else (
        _closest_threshold(m, round(float(ratio) * p.n)) if p.n else None)
    keep_pos = m <= t if p.n else torch.zeros(0, dtype=torch.bool, device=p.x.device)
    return p.finish(keep_pos, t, None if ratio is None else float(ratio),
                    return_info=return_info)


# ------------------------------------------------------------ DiffProb ----

def prototype_probs(features, labels, scale=30.0, device=None):
    """True-class probability of each face under a softmax over scaled cosine
    similarities to the identity prototypes (normalised means of unit rows).

    Needs an (N, C) product computed in row chunks; for millions of identities
    pass the trained classifier's probabilities to diffprob(probs=) instead.
    """
    x = check_features(as_tensor(features, "features"))
    if device is not None:
        x = x.to(device)
    n = x.shape[0]
    _, order, offsets, sizes = group(labels, n, x.device)
    y = F.normalize(x.float(), dim=1)
    seg = segment_ids(sizes, total=n)
    cls = torch.empty(n, dtype=torch.int64, device=x.device)
    cls[order] = seg
    proto = torch.zeros(len(sizes), y.shape[1], device=x.device).index_add_(0, cls, y)
    proto = F.normalize(proto, dim=1)
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    step = max(1, _BLOCK // max(1, len(sizes)))
    for a in range(0, n, step):
        logp = torch.log_softmax(scale * (y[a:a + step] @ proto.T), dim=1)
        out[a:a + step] = logp.gather(1, cls[a:a + step, None]).squeeze(1).double().exp()
    return out


def _gap_walk(p, prob_pos, gap):
    """Keep mask (rank positions; rank = descending p) of the gap rule at `gap`."""
    keep = torch.zeros(p.n, dtype=torch.bool, device=prob_pos.device)
    for ids, n in _blocks(p.sizes, lambda n: 1):
        pos, valid = _pad_index(p.offsets, p.sizes, ids, n)
        # -p ascending, padded with +inf: the next kept face is the first with
        # -p >= -p_last + gap, i.e. p <= p_last - gap
        q = torch.where(valid, -prob_pos[pos], torch.tensor(float("inf"), dtype=torch.float64,
                                                             device=pos.device)).contiguous()
        size = p.sizes[ids]
        b = torch.arange(len(ids), device=pos.device)
        cur = torch.zeros(len(ids), dtype=torch.int64, device=pos.device)
        kept = torch.zeros_like(valid)
        kept[:, 0] = True
        alive = size > 1
        while bool(alive.any()):
            nxt = torch.searchsorted(q, (q[b, cur] + gap)[:, None], side="left").squeeze(1)
            nxt = torch.maximum(nxt, cur + 1)
            alive &= nxt < size
            kept[b[alive], nxt[alive]] = True
            cur = torch.where(alive, nxt, cur)
        keep[pos[kept & valid]] = True
    return keep


def diffprob(features, labels, ratio=None, gap=None, *, probs=None, scale=30.0, device=None,
             return_info=False, max_passes=60):
    """Per identity, walk faces by descending true-class probability p; keep the
    first, drop each face with p > p_last - gap (p_last: the last kept face's).

    probs: (N,) true-class probabilities (e.g. from a trained classifier); by
    default ``prototype_probs(features, labels, scale)``. With ratio=, the gap
    whose kept count is closest to round(ratio*N), by bisection (the count
    falls as the gap grows; ties: the smaller gap).
    """
    _one_of(ratio, gap, "gap")
    if gap is not None:
        gap = number(gap, "gap", 0, 1)
    x = check_features(as_tensor(features, "features"))
    if probs is None:
        probs = prototype_probs(x, labels, scale=scale, device=device)
    else:
        probs = as_tensor(probs, "probs")
        if probs.dim() != 1 or probs.shape[0] != x.shape[0]:
            raise ValueError("probs must be 1-D with one probability per face (%d), got shape %s"
                             % (x.shape[0], tuple(probs.shape)))
        probs = probs.to(torch.float64)
        bad = ~torch.isfinite(probs) | (probs < 0) | (probs > 1)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError("probs[%d] = %r is not a probability in [0, 1]" % (i, float(probs[i])))
    p = _Prepared(features, labels, "scores", device, scores=probs)
    if p.n == 0:
        return p.finish(torch.zeros(0, dtype=torch.bool, device=p.x.device), gap, ratio,
                        return_info=return_info)
    prob_pos = probs.to(p.x.device)[p.order]
    passes = 1
    if gap is not None:
        g = float(gap)
        keep_pos = _gap_walk(p, prob_pos, g)
    else:
        target = round(float(ratio) * p.n)
        lo, hi = 0.0, 1.0 + 1e-9  # count(lo) = N >= target; count(hi) = #identities
        best = None
        for g in (lo, hi):
            k = _gap_walk(p, prob_pos, g)
            best = _better(best, (abs(int(k.sum()) - target), g, k))
        passes = 2
        while passes < max_passes and best[0] > 0 and hi - lo > 1e-12:
            mid = 0.5 * (lo + hi)
            k = _gap_walk(p, prob_pos, mid)
            passes += 1
            best = _better(best, (abs(int(k.sum()) - target), mid, k))
            if int(k.sum()) > target:
                lo = mid
            else:
                hi = mid
        _, g, keep_pos = best
    return p.finish(keep_pos, g, None if ratio is None else float(ratio), passes=passes,
                    return_info=return_info)


def _better(best, cand):
    """Closer count wins; ties go to the smaller gap."""
    if best is None or (cand[0], cand[1]) < (best[0], best[1]):
        return cand
    return best


METHODS = {
    "random": random_subset,
    "kcenter": kcenter_greedy,
    "semdedup": semdedup,
    "diffprob": diffprob,
}
