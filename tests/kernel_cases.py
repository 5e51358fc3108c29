"""Test data and slow references for the kernels' lane-level tests (CPU and CUDA files)."""
import numpy as np
import torch

from facenms.core import ops

WARP_MAX, TILE = 32, 64  # kWarpMax, kTile of csrc/nms_common.h


def csr(sizes, device="cpu"):
    sizes = torch.as_tensor(sizes, dtype=torch.int64)
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    torch.cumsum(sizes, 0, out=offsets[1:])
    return offsets.to(device)


def clustered(sizes, d, seed, spread=0.9):
    """Rows grouped by identity (consecutive), with near duplicates, not unit norm."""
    g = np.random.default_rng(seed)
    out = []
    for n in sizes:
        centre = g.standard_normal(d)
        x = centre + spread * g.standard_normal((n, d))
        dup = g.random(n) < 0.3
        for i in np.flatnonzero(dup):
            if i:
                x[i] = x[g.integers(0, i)] + 0.05 * g.standard_normal(d)
        out.append(x * g.uniform(0.5, 3.0, (n, 1)))
    return np.concatenate(out) if out else np.zeros((0, d))


def pair_sims(x, order, offsets):
    """float64 cosine similarities of every within-identity pair (rank order)."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = []
    for c in range(len(offsets) - 1):
        rows = order[offsets[c]:offsets[c + 1]]
        s = y[rows] @ y[rows].T
        sims.append(s[np.triu_indices(len(rows), 1)])
    return np.concatenate(sims) if sims else np.zeros(0)


def safe_thresholds(sims, k, lo=-0.2, hi=0.99, margin=1e-4):
    """k ascending thresholds in [lo, hi], each at least `margin` from every similarity."""
    grid = np.linspace(lo, hi, 20000)
    s = np.sort(sims)
    j = np.searchsorted(s, grid)
    near = np.minimum(np.abs(grid - s[np.clip(j - 1, 0, len(s) - 1)]),
                      np.abs(grid - s[np.clip(j, 0, len(s) - 1)])) if len(s) else np.inf + grid
    ok = grid[near > margin]
    assert len(ok) >= k, "data too dense for safe thresholds"
    return ok[np.linspace(0, len(ok) - 1, k).astype(int)]


def lane_reference(x, order, offsets, thr, min_keep):
    """bits and counts of the nms op, one plain greedy walk per lane."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    per_ident = thr.ndim == 2
    lanes = thr.shape[-1]
    bits = np.zeros(len(order), dtype=np.uint64)
    counts = np.zeros(thr.shape, dtype=np.int64)
    for c in range(len(offsets) - 1):
        a, b = offsets[c], offsets[c + 1]
        s = y[order[a:b]] @ y[order[a:b]].T
        for j in range(lanes):
            t = thr[c, j] if per_ident else thr[j]
            kept = np.zeros(b - a, dtype=bool)
            for i in range(b - a):
                kept[i] = not np.any(s[i, kept[:i].nonzero()[0]] > t)
            need = min(min_keep, b - a)
            if kept.sum() < need:
                kept[np.flatnonzero(~kept)[:need - kept.sum()]] = True
            bits[a:b] |= kept.astype(np.uint64) << np.uint64(j)
            if per_ident:
                counts[c, j] = kept.sum()
            else:
                counts[j] += kept.sum()
    return bits.view(np.int64), counts


def make_case(sizes, d=24, lanes=5, per_ident=False, seed=0, shuffle=True, thresholds=None):
    x = clustered(sizes, d, seed)
    n = len(x)
    order = np.random.default_rng(seed + 1).permutation(n) if shuffle else np.arange(n)
    # group the shuffled rows by identity again: order lists identity 0's rows first, ...
    ident = np.repeat(np.arange(len(sizes)), sizes)
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    xs = x[inv] if shuffle else x  # row order[p] holds original face p
    order = order if shuffle else np.arange(n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if thresholds is not None:
        return xs, order, offsets, np.asarray(thresholds, dtype=np.float64)
    sims = pair_sims(xs, order, offsets)
    if per_ident:
        thr = np.stack([safe_thresholds(sims, lanes, lo=-0.1 + 0.01 * c, hi=0.95)
                        for c in range(len(sizes))])
    else:
        thr = safe_thresholds(sims, lanes)
    del ident
    return xs, order, offsets, thr


def discrete_case(sizes, d, lanes, per_ident=False, seed=0, protos=48):
    """Rows that are copies of a few fp16-exact prototypes scaled by powers of
    two, shuffled: every similarity is one of few values (1 between copies),
    so thresholds far from all of them exist even for huge identities, and
    every dtype sees the same rows."""
    g = np.random.default_rng(seed)
    p = g.standard_normal((protos, d)).astype(np.float16).astype(np.float64)
    pick = []
    for n in sizes:
        own = g.choice(protos, size=min(protos, 12), replace=False)
        pick.append(own[np.minimum(g.geometric(0.25, n) - 1, len(own) - 1)])
    pick = np.concatenate(pick) if pick else np.zeros(0, dtype=np.int64)
    x = p[pick] * 2.0 ** g.integers(-2, 3, (len(pick), 1))
    n = len(x)
    order = g.permutation(n)
    xs = np.empty_like(x)
    xs[order] = x  # row order[i] holds face i
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    y = p / np.linalg.norm(p, axis=1, keepdims=True)
    sims = (y @ y.T)[np.triu_indices(protos, 1)]
    if per_ident:
        thr = np.stack([safe_thresholds(sims, lanes, lo=-0.3 + 0.02 * c, hi=0.6, margin=1e-3)
                        for c in range(len(sizes))])
    else:
        thr = safe_thresholds(sims, lanes, lo=-0.3, hi=0.6, margin=1e-3)
    return xs, order, offsets, thr


def check_lane_valid(x, order, offsets, bits, t, lane=0, eps=1e-5):
    """Vectorised validity check of one lane (min_keep <= 1): a kept face is
    within t + eps of every earlier kept face, a suppressed one above t - eps
    to some earlier kept face."""
    y = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    kept_all = ((np.asarray(bits) >> lane) & 1).astype(bool)
    for c in range(len(offsets) - 1):
        a, b = offsets[c], offsets[c + 1]
        if b - a < 2:
            continue
        yc = y[order[a:b]]
        kept = kept_all[a:b]
        s = yc @ yc.T
        s[~np.tril(np.ones((b - a, b - a), dtype=bool), -1)] = -2
        s[:, ~kept] = -2
        worst = s.max(1)
        assert kept[0]
        assert np.all(worst[kept] <= t + eps), "a kept face is too similar to a kept one"
        assert np.all(worst[~kept] > t - eps), "a suppressed face has no kept suppressor"


def run_op(x, order, offsets, thr, min_keep, device="cpu", dtype=torch.float64):
    xt = torch.as_tensor(x).to(device, dtype)
    return ops.nms(xt, torch.as_tensor(order).to(device), torch.as_tensor(offsets).to(device),
                   torch.as_tensor(thr, dtype=torch.float64).to(device), min_keep)


SIZES = [1, 2, 3, 0, 7, 20, 31, 32, 33, 40, 64, 65, 100, 129, 5, 2]
