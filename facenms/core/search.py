"""Which thresholds to run, and what to keep: threshold, ratio and per-identity mode.

Everything here drives a Runner (see runner.py): in memory, block by block
or over several processes, the decisions are the same because they are
taken on the same (summed) counts.
"""
import numpy as np
import torch

from . import ops
from .csr import arange_within, offsets_of, segment_ids
from .runner import Runner

LANES = ops.MAX_LANES


def decide(run, settings, n, sizes, device, first_lanes=None):
    """Run the passes a selection needs: (keep per rank position, the global
    threshold used or None, per-identity thresholds or None).

    first_lanes: a callable giving the ratio search's first 64 thresholds
    (sample_lanes), or None for evenly over [-1, 1].
    """
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=device), settings.threshold, None
    if settings.mode == "threshold":
        bits, _ = run(torch.tensor([settings.threshold], dtype=torch.float64))
        if settings.threshold >= 1.0:  # a cosine rounded above 1 must not suppress a copy
            return keep_all(n, device), settings.threshold, None
        return (bits & 1).bool(), settings.threshold, None
    if settings.ratio == 1.0:  # all faces; the one pass still checks every row
        run(torch.tensor([1.0], dtype=torch.float64))
        if settings.mode == "per_identity":
            return keep_all(n, device), None, torch.ones(len(sizes), dtype=torch.float64,
                                                          device=sizes.device)
        return keep_all(n, device), 1.0, None
    if settings.mode == "ratio":
        first = first_lanes() if first_lanes is not None else None
        # a count within 0.01% of the faces is as good as exact and saves a pass
        best = search(run, round(settings.ratio * n), first, max_passes=5, tol=n // 10_000)
        return ((best.bits >> best.lane) & 1).bool(), best.t, None
    keep, thresholds = per_identity(run, sizes, settings.ratio, settings.min_keep)
    return keep, None, thresholds


def keep_all(n, device):
    """Keep bits for every rank position (a threshold of 1 or more suppresses nothing)."""
    return torch.ones(n, dtype=torch.bool, device=device)


def even_lanes(lo, hi, n=LANES):
    """n ascending thresholds covering [lo, hi] with both ends included."""
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def bracket(ts, counts, target):
    """Narrowest (lo, hi) between evaluated thresholds around the target count,
    or None when it lies beyond [-1, 1].

    The count grows with the threshold on real data (not always: the search
    never relies on it beyond choosing where to look next).
    """
    above = np.flatnonzero(counts >= target)
    step = max(4 * (ts[-1] - ts[0]), 0.05)  # beyond the range: next door first, not all of [-1, 1]
    if len(above) == 0:
        return None if ts[-1] >= 1.0 else (ts[-1], min(1.0, ts[-1] + step))
    j = above[0]
    if j == 0:
        return None if ts[0] <= -1.0 else (max(-1.0, ts[0] - step), ts[0])
    return ts[j - 1], ts[j]


class Best:
    """Closest count to the target seen so far; ties go to the larger threshold."""

    def __init__(self, target):
        self.target, self.key, self.t, self.bits, self.lane = target, None, None, None, None

    def offer(self, ts, counts, bits):
        for j, (t, c) in enumerate(zip(ts, counts)):
            key = (abs(int(c) - self.target), -float(t))
            if self.key is None or key < self.key:
                self.key, self.t, self.bits, self.lane = key, float(t), bits, j


def search(run, target, first=None, max_passes=4, tol=0, stop_width=1e-9):
    """Global threshold whose count is closest to target, 64 thresholds a pass.

    `first`: the thresholds of the first pass (default: evenly over [-1, 1]).
    Stops early once a count is within `tol` faces of the target.
    """
    best = Best(target)
    ts = even_lanes(-1.0, 1.0) if first is None else first
    for _ in range(max_passes):
        bits, counts = run(ts)
        ts, counts = ts.numpy(), counts.cpu().numpy()
        best.offer(ts, counts, bits)
        if best.key[0] <= tol:
            break
        new = bracket(ts, counts, target)
        if new is None or new[1] - new[0] < stop_width:
            break
        ts = even_lanes(*new)
    return best


def sample_lanes(x, order, offsets, sizes, *, min_keep, ratio, seed=0, fuse=None):
    """Where to look for the global threshold: a cheap search on a sample of identities.

    Returns 64 ascending thresholds at which the sample keeps evenly spaced
    ratios from 5 points below the target to 5 points above (a sample of
    identities can be off by a few points), so that one full pass there
    brackets the target finely wherever the curve is steep. None when the
    set is too small to sample. With `fuse`, `order` is not ranked yet (see
    Runner).
    """
    take = sample_take(offsets, sizes, seed)
    if take is None:
        return None
    take = take.to(order.device)
    sub_sizes = sizes[take]
    starts = offsets[take]
    sub_order = order[torch.repeat_interleave(starts, sub_sizes)
                      + arange_within(sub_sizes)]
    sub_off = offsets_of(sub_sizes)
    n_s = int(sub_off[-1])
    points = []

    passes = Runner(x, sub_order, sub_off, sub_sizes, min_keep=min_keep, fuse=fuse)

    def run(ts):
        bits, counts = passes(ts)
        points.extend(zip(ts.tolist(), (counts.cpu().double() / n_s).tolist()))
        return bits, counts

    search(run, round(ratio * n_s), max_passes=2)
    points.sort()
    ts = np.array([t for t, _ in points] + [-1.0, 1.0])
    rs = np.array([r for _, r in points] + [0.0, 1.0])
    order_t = np.argsort(ts, kind="stable")
    ts, rs = ts[order_t], np.maximum.accumulate(rs[order_t])  # the curve, made monotone
    want = np.linspace(max(0.0, ratio - 0.05), min(1.0, ratio + 0.05), LANES)
    lanes = np.interp(want, rs, ts)
    lanes = np.maximum.accumulate(np.clip(lanes, -1.0, 1.0))
    if lanes[-1] - lanes[0] < 1e-3:  # a flat sample curve: look a little wider
        return even_lanes(max(-1.0, lanes[0] - 0.01), min(1.0, lanes[-1] + 0.01))
    return torch.from_numpy(lanes)


def sample_take(offsets, sizes, seed):
    """The identities (ascending, CPU) of the sample, or None: too few to sample."""
    n = int(offsets[-1])
    sample_faces = min(max(n // 8, 20_000), 200_000)
    if n < 4 * sample_faces or len(sizes) < 200:
        return None
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(sizes), generator=g)
    sizes_h = sizes.cpu()[pick]
    return pick[: int(torch.searchsorted(sizes_h.cumsum(0), sample_faces)) + 1].sort().values


def fill_exact(kept, sizes, want):
    """Per identity exactly `want` kept: drop the lowest-ranked kept, add the best suppressed."""
    seg = segment_ids(sizes, total=kept.shape[0])
    starts = torch.cumsum(sizes, 0) - sizes
    k = kept.long()
    rank_kept = torch.cumsum(k, 0) - (torch.cumsum(k, 0) - k)[starts][seg]  # 1-based
    s = 1 - k
    rank_supp = torch.cumsum(s, 0) - (torch.cumsum(s, 0) - s)[starts][seg]
    have = torch.zeros(len(sizes), dtype=torch.int64, device=kept.device).index_add_(0, seg, k)
    w, h = want[seg], have[seg]
    return torch.where(kept, rank_kept <= w, rank_supp <= (w - h))


def per_identity(run, sizes, ratio, m):
    """Every identity its own threshold, then exactly max(m, round(ratio*n_c)) faces."""
    c = len(sizes)
    want = torch.clamp(torch.round(sizes.double() * ratio).long(), min=m)
    want = torch.minimum(want, sizes)
    lanes = even_lanes(-1.0, 1.0).to(sizes.device)
    thr = lanes.expand(c, LANES).contiguous()
    best_key = torch.full((c,), 1 << 62, dtype=torch.int64, device=sizes.device)
    best_t = torch.zeros(c, dtype=torch.float64, device=sizes.device)
    best_kept = None
    seg = segment_ids(sizes)
    for _ in range(3):
        bits, counts = run(thr)
        diff = (counts - want[:, None]).abs()
        # closest count, ties to the larger threshold (the later lane)
        lane = LANES - 1 - torch.argmin(diff.flip(1), dim=1)
        d = diff.gather(1, lane[:, None]).squeeze(1)
        t = thr.gather(1, lane[:, None]).squeeze(1)
        better = (d < best_key) | ((d == best_key) & (t > best_t))
        kept = ((bits >> lane[seg]) & 1).bool()
        best_kept = kept if best_kept is None else torch.where(better[seg], kept, best_kept)
        best_key = torch.where(better, d, best_key)
        best_t = torch.where(better, t, best_t)
        if not bool((best_key > 0).any()):
            break
        # next lanes: between the last threshold under the target and the first at or above it
        first = torch.argmax((counts >= want[:, None]).to(torch.int8), dim=1)
        none_above = ~(counts >= want[:, None]).any(1)
        lo = torch.where(first > 0, thr.gather(1, (first - 1).clamp(min=0)[:, None]).squeeze(1),
                         torch.full_like(best_t, -1.0))
        hi = thr.gather(1, first[:, None]).squeeze(1)
        lo = torch.where(none_above, thr[:, -1], lo)
        hi = torch.where(none_above, torch.ones_like(hi), hi)
        frac = torch.linspace(0, 1, LANES, dtype=torch.float64, device=sizes.device)
        thr = (lo[:, None] + (hi - lo)[:, None] * frac).contiguous()
    return fill_exact(best_kept, sizes, want), best_t
