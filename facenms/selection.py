"""facenms.select: input checks, grouping, ranking, threshold and ratio search.

Everything here is a few vectorised torch calls around the two kernels; the
same code runs on CPU and CUDA tensors. Faces are grouped by label into CSR
segments (``order`` lists the rows of identity c at ``offsets[c]:offsets[c+1]``)
and put in rank order once; every kernel pass sees that same order.
"""
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch

from . import ops

RANKS = ("sparsity", "centrality", "random", "scores")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
LANES = ops.MAX_LANES


@dataclass
class SelectionInfo:
    """What a selection did. Per-identity arrays follow ``identities`` (ascending)."""
    threshold: Optional[float]  # the global threshold (None with per_identity=True)
    ratio: float  # kept / faces, achieved
    target_ratio: Optional[float]
    kept: int
    n_faces: int
    identities: np.ndarray
    faces_per_identity: np.ndarray
    kept_per_identity: np.ndarray
    thresholds: Optional[np.ndarray] = None  # per identity, with per_identity=True
    passes: int = 0  # NMS passes over the whole set (not counting the sample's)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def n_identities(self) -> int:
        return len(self.identities)

    def summary(self) -> str:
        t = self.timings.get("total", 0.0)
        thr = "per identity" if self.threshold is None else "%.6f" % self.threshold
        return ("%d faces, %d identities -> kept %d (%.2f%%), threshold %s, %d pass%s, "
                "%.3f s, %.0f faces/s" % (
                    self.n_faces, self.n_identities, self.kept, 100 * self.ratio, thr,
                    self.passes, "" if self.passes == 1 else "es", t,
                    self.n_faces / t if t > 0 else float("inf")))


# ---------------------------------------------------------------- inputs ----

def as_tensor(a, name):
    """numpy / torch / DLPack (cupy, jax, ...) -> torch tensor, zero copy when possible."""
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        if any(s < 0 for s in a.strides):
            a = np.ascontiguousarray(a)
        with warnings.catch_warnings():  # read-only memmaps are only read
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(a)
    if hasattr(a, "__dlpack__"):
        return torch.from_dlpack(a)
    if isinstance(a, (list, tuple)):
        return torch.from_numpy(np.asarray(a))
    raise TypeError("%s must be a numpy array, a torch tensor or a DLPack array, got %s"
                    % (name, type(a).__name__))


def check_scores(scores, n, device):
    """User ranking scores as float64 on `device`: one finite number per face."""
    scores = as_tensor(scores, "scores")
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError("scores must be 1-D with one score per face (%d), got shape %s"
                         % (n, tuple(scores.shape)))
    if scores.dtype.is_complex or scores.dtype == torch.bool:
        raise TypeError("scores must be real numbers, got %s" % scores.dtype)
    scores = scores.to(device, torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores[%d] is not finite" % int(
            torch.nonzero(~torch.isfinite(scores))[0]))
    return scores


def _check_features(x):
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError("features must be float32, float16 or bfloat16 (float64 is accepted "
                        "and computed in float32), got %s" % x.dtype)
    if x.dim() != 2:
        raise ValueError("features must be 2-D (N, d), got shape %s" % (tuple(x.shape),))
    if x.shape[1] > 0 and x.stride(1) != 1:
        x = x.contiguous()  # the kernels read rows; only strided rows need a copy
    return x


def _group(labels, n, device):
    """Group by label: (unique labels as numpy, order, offsets, sizes) on `device`."""
    if isinstance(labels, torch.Tensor) or (
            hasattr(labels, "__dlpack__") and not isinstance(labels, np.ndarray)):
        lab = as_tensor(labels, "labels")
        if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
            raise TypeError("labels must be integers, got %s" % lab.dtype)
        shape = tuple(lab.shape)
    else:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise TypeError("labels must be integers, got %s" % lab.dtype)
        shape = lab.shape
    if len(shape) != 1 or shape[0] != n:
        raise ValueError("labels must be 1-D with one label per face (%d), got shape %s"
                         % (n, shape))
    if isinstance(lab, torch.Tensor) and lab.device.type == "cpu" and device.type == "cpu":
        lab = lab.numpy()  # numpy's integer sorts are several times faster on the CPU
    if isinstance(lab, torch.Tensor):
        uniq, inverse, sizes = torch.unique(lab.to(device), sorted=True, return_inverse=True,
                                            return_counts=True)
        uniq = uniq.cpu().numpy()
        order = _stable_argsort(inverse.long())
    else:  # one stable sort; numpy also covers uint64 labels, which torch cannot sort
        order = np.argsort(lab, kind="stable")
        s = lab[order]
        start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if n else np.zeros(0, np.int64)
        uniq = s[start]
        sizes = torch.from_numpy(np.diff(np.r_[start, n]).astype(np.int64)).to(device)
        order = torch.from_numpy(order.astype(np.int64)).to(device)
    offsets = torch.zeros(len(uniq) + 1, dtype=torch.int64, device=device)
    torch.cumsum(sizes.long(), 0, out=offsets[1:])
    return uniq, order, offsets, sizes.long()


def _fused(x, rank):
    """The ranking rank_nms does inside the first pass (CPU: one read of the features)."""
    return rank if x.device.type == "cpu" and rank in ("sparsity", "centrality") else None


def _rank(x, order, offsets, sizes, rank, scores, seed):
    """Reorder each identity's rows by descending score, ties by smaller index."""
    norms, sparsity = ops.prepare(x, order, offsets)
    if bool((~torch.isfinite(norms) | (norms == 0)).any()):
        _raise_bad_row(x)
    if rank == "sparsity":
        key = sparsity
    elif rank == "centrality":
        key = -sparsity
    elif rank == "random":
        # numpy's generator, so the reference and every device draw the same order
        perm = np.random.default_rng(seed).permutation(x.shape[0]).astype(np.float64)
        key = torch.from_numpy(perm).to(x.device)[order]
    else:
        key = scores[order]
    # Stable sorts: by key descending, then by identity; within an identity,
    # rows start in ascending index order, so ties keep the smaller index first.
    perm = _stable_argsort(-key)
    ident = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes)
    perm = perm[_stable_argsort(ident[perm])]
    return order[perm]


def _raise_bad_row(x):
    """ValueError naming the first row of x that is zero or not finite."""
    for a in range(0, x.shape[0], 1 << 16):
        norms = x[a:a + (1 << 16)].double().norm(dim=1)
        bad = torch.nonzero(~torch.isfinite(norms) | (norms == 0)).reshape(-1)
        if len(bad):
            row = a + int(bad[0])
            raise ValueError("features row %d has %s" % (row, "zero norm" if float(
                norms[int(bad[0])]) == 0 else "a non-finite value (NaN or Inf)"))
    raise AssertionError("no bad row in features")  # only called when a kernel saw one


def _stable_argsort(t):
    """Ascending stable argsort; numpy's on the CPU (radix sort for integers)."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.argsort(t.numpy(), kind="stable"))
    return torch.sort(t, stable=True).indices


# ------------------------------------------------------------ the passes ----

class _Runner:
    """Runs NMS passes, in chunks of identities when a progress bar is shown."""

    def __init__(self, x, order, offsets, sizes, min_keep, progress, fuse=None):
        # fuse: "sparsity" or "centrality" when `order` is not ranked yet; the
        # first pass ranks it (rank_nms) and self.order becomes the rank order
        self.x, self.order, self.offsets, self.min_keep = x, order, offsets, min_keep
        self.fuse = fuse
        self.passes = 0
        self.bar = None
        self.chunks = [(0, len(sizes))]
        if progress and len(sizes) > 1:
            from tqdm.auto import tqdm
            cost = (sizes.double() ** 2).cpu().cumsum(0)
            total = float(cost[-1])
            cuts = torch.searchsorted(cost, torch.linspace(0, total, 51, dtype=torch.float64)[1:-1])
            bounds = sorted(set([0, len(sizes)] + [int(c) + 1 for c in cuts]))
            self.chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if a < b]
            self.bar = tqdm(total=int(offsets[-1]), unit="face", desc="facenms", leave=False,
                            dynamic_ncols=True)
        self.bounds_host = offsets.cpu()

    def __call__(self, thresholds):
        """bits (per rank position) and counts (shaped like thresholds)."""
        thresholds = thresholds.to(self.x.device, torch.float64).contiguous()
        self.passes += 1
        if self.bar is not None:
            self.bar.reset()
            self.bar.set_description("facenms pass %d" % self.passes)
        ranked, bits, counts, bad = [], [], [], False
        for c0, c1 in self.chunks:
            a, b = int(self.bounds_host[c0]), int(self.bounds_host[c1])
            thr = thresholds[c0:c1] if thresholds.dim() == 2 else thresholds
            args = (self.x, self.order[a:b], self.offsets[c0:c1 + 1] - a, thr, self.min_keep)
            if self.fuse:
                rk, bi, co, first_bad = ops.rank_nms(*args, centrality=self.fuse == "centrality")
                ranked.append(rk)
                bad = bad or int(first_bad) >= 0
            else:
                bi, co = ops.nms(*args)
            bits.append(bi)
            counts.append(co)
            if self.bar is not None:
                self.bar.update(b - a)
        if bad:
            _raise_bad_row(self.x)
        if self.fuse:
            self.order, self.fuse = _cat(ranked), None
        counts = _cat(counts) if thresholds.dim() == 2 else sum(counts[1:], counts[0])
        return _cat(bits), counts

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _cat(ts):
    return ts[0] if len(ts) == 1 else torch.cat(ts)


def _lanes(lo, hi, n=LANES):
    """n ascending thresholds covering [lo, hi] with both ends included."""
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def _bracket(ts, counts, target):
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


class _Best:
    """Closest count to the target seen so far; ties go to the larger threshold."""

    def __init__(self, target):
        self.target, self.key, self.t, self.bits, self.lane = target, None, None, None, None

    def offer(self, ts, counts, bits):
        for j, (t, c) in enumerate(zip(ts, counts)):
            key = (abs(int(c) - self.target), -float(t))
            if self.key is None or key < self.key:
                self.key, self.t, self.bits, self.lane = key, float(t), bits, j


def _search(run, target, first=None, max_passes=4, tol=0, stop_width=1e-9):
    """Global threshold whose count is closest to target, 64 thresholds a pass.

    `first`: the thresholds of the first pass (default: evenly over [-1, 1]).
    Stops early once a count is within `tol` faces of the target.
    """
    best = _Best(target)
    ts = _lanes(-1.0, 1.0) if first is None else first
    for _ in range(max_passes):
        bits, counts = run(ts)
        ts, counts = ts.numpy(), counts.cpu().numpy()
        best.offer(ts, counts, bits)
        if best.key[0] <= tol:
            break
        new = _bracket(ts, counts, target)
        if new is None or new[1] - new[0] < stop_width:
            break
        ts = _lanes(*new)
    return best


def _sample_lanes(x, order, offsets, sizes, min_keep, ratio, seed=0, fuse=None):
    """Where to look for the global threshold: a cheap search on a sample of identities.

    Returns 64 ascending thresholds at which the sample keeps evenly spaced
    ratios from 5 points below the target to 5 points above (a sample of
    identities can be off by a few points), so that one full pass there
    brackets the target finely wherever the curve is steep. None when the
    set is too small to sample. With `fuse`, `order` is not ranked yet (see
    _Runner).
    """
    take = _sample_take(offsets, sizes, seed)
    if take is None:
        return None
    take = take.to(order.device)
    sub_sizes = sizes[take]
    starts = offsets[take]
    sub_order = order[torch.repeat_interleave(starts, sub_sizes)
                      + _arange_within(sub_sizes)]
    sub_off = torch.zeros(len(take) + 1, dtype=torch.int64, device=order.device)
    torch.cumsum(sub_sizes, 0, out=sub_off[1:])
    n_s = int(sub_off[-1])
    points = []

    passes = _Runner(x, sub_order, sub_off, sub_sizes, min_keep, False, fuse)

    def run(ts):
        bits, counts = passes(ts)
        points.extend(zip(ts.tolist(), (counts.cpu().double() / n_s).tolist()))
        return bits, counts

    _search(run, round(ratio * n_s), max_passes=2)
    points.sort()
    ts = np.array([t for t, _ in points] + [-1.0, 1.0])
    rs = np.array([r for _, r in points] + [0.0, 1.0])
    order_t = np.argsort(ts, kind="stable")
    ts, rs = ts[order_t], np.maximum.accumulate(rs[order_t])  # the curve, made monotone
    want = np.linspace(max(0.0, ratio - 0.05), min(1.0, ratio + 0.05), LANES)
    lanes = np.interp(want, rs, ts)
    lanes = np.maximum.accumulate(np.clip(lanes, -1.0, 1.0))
    if lanes[-1] - lanes[0] < 1e-3:  # a flat sample curve: look a little wider
        return _lanes(max(-1.0, lanes[0] - 0.01), min(1.0, lanes[-1] + 0.01))
    return torch.from_numpy(lanes)


def _sample_take(offsets, sizes, seed):
    """The identities (ascending, CPU) of the sample, or None: too few to sample."""
    n = int(offsets[-1])
    sample_faces = min(max(n // 8, 20_000), 200_000)
    if n < 4 * sample_faces or len(sizes) < 200:
        return None
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(sizes), generator=g)
    sizes_h = sizes.cpu()[pick]
    return pick[: int(torch.searchsorted(sizes_h.cumsum(0), sample_faces)) + 1].sort().values


def _arange_within(sizes):
    """0..n_c-1 for each segment, concatenated."""
    starts = torch.cumsum(sizes, 0) - sizes
    return torch.arange(int(sizes.sum()), device=sizes.device) - torch.repeat_interleave(
        starts, sizes)


def _fill_exact(kept, sizes, want):
    """Per identity exactly `want` kept: drop the lowest-ranked kept, add the best suppressed."""
    seg = torch.repeat_interleave(torch.arange(len(sizes), device=kept.device), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    k = kept.long()
    rank_kept = torch.cumsum(k, 0) - (torch.cumsum(k, 0) - k)[starts][seg]  # 1-based
    s = 1 - k
    rank_supp = torch.cumsum(s, 0) - (torch.cumsum(s, 0) - s)[starts][seg]
    have = torch.zeros(len(sizes), dtype=torch.int64, device=kept.device).index_add_(0, seg, k)
    w, h = want[seg], have[seg]
    return torch.where(kept, rank_kept <= w, rank_supp <= (w - h))


# ------------------------------------------------------------------- API ----

def _validate(ratio, threshold, rank, scores, min_per_identity, per_identity):
    if (ratio is None) == (threshold is None):
        raise ValueError("give exactly one of ratio= and threshold=, got %s" % (
            "both" if ratio is not None else "neither"))
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) \
                or not 0 < float(ratio) <= 1:
            raise ValueError("ratio must be a number in (0, 1], got %r" % (ratio,))
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
                or not -1 <= float(threshold) <= 1:
            raise ValueError("threshold must be a number in [-1, 1], got %r" % (threshold,))
        if per_identity:
            raise ValueError("per_identity=True needs ratio=, not threshold=")
    if rank is None:
        rank = "scores" if scores is not None else "sparsity"
    if rank not in RANKS:
        raise ValueError("rank must be one of %s, got %r" % (", ".join(RANKS), rank))
    if (rank == "scores") != (scores is not None):
        raise ValueError("rank='scores' and scores= go together" if scores is None else
                         "scores= were given with rank=%r; leave rank unset" % rank)
    if isinstance(min_per_identity, bool) or not isinstance(min_per_identity, (int, np.integer)) \
            or min_per_identity < 0:
        raise ValueError("min_per_identity must be an integer >= 0, got %r" % (min_per_identity,))
    return rank


def _to_family(result, like):
    """Indices back in the caller's array family (and, for tensors, device)."""
    if isinstance(like, torch.Tensor):
        return result
    if type(like).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy.from_dlpack(result)
    return result.cpu().numpy()  # numpy, memmaps, lists, and other DLPack producers


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, device=None, return_info=False,
           progress=False, block_size=None, max_memory=None, distributed=None):
    """Indices of the core set: Face-NMS within each identity.

    Args:
        features: (N, d) float32/float16/bfloat16 embeddings (numpy, torch CPU or
            CUDA, or any DLPack array such as cupy); need not be normalised.
        labels: (N,) integer identity labels, any values, any order.
        ratio: keep this fraction of all faces (a global threshold is searched), or
        threshold: suppress a face whose cosine similarity to a kept face of its
            identity exceeds this.
        scores: (N,) ranking scores, higher first (e.g. face quality).
        rank: "sparsity" (default: farthest from the identity centre first),
            "centrality" (nearest first), "random" (seeded), "scores".
        min_per_identity: every identity keeps at least min(m, n_c) faces.
        per_identity: with ratio, every identity keeps max(m, round(ratio*n_c)).
        seed: for rank="random".
        device: run there (e.g. "cuda" for numpy input); default: where features are.
        return_info: also return a SelectionInfo.
        progress: show a progress bar.
        block_size, max_memory: stream the features one block of identities at
            a time, of block_size faces or of max_memory bytes for two blocks
            (default 1 GiB). Memory-mapped arrays and paths to a .npy always
            stream; see facenms.streaming. Same result as in memory.
        distributed: split the identities over the ranks of torch.distributed
            (default: when it is initialised with several processes); every
            rank returns the whole result. See facenms.distributed.

    Returns:
        Sorted int64 indices of the kept faces, in the array family and on the
        device of ``features`` (and a SelectionInfo with return_info=True).
    """
    from . import streaming  # larger than memory, or several processes
    if streaming.wanted(features, block_size, max_memory, distributed):
        return streaming.select(
            features, labels, ratio, threshold, scores=scores, rank=rank,
            min_per_identity=min_per_identity, per_identity=per_identity, seed=seed,
            device=device, return_info=return_info, progress=progress, block_size=block_size,
            max_memory=max_memory, distributed=distributed)
    t0 = time.perf_counter()
    rank = _validate(ratio, threshold, rank, scores, min_per_identity, per_identity)
    x = _check_features(as_tensor(features, "features"))
    if device is not None:
        x = x.to(device)
    n = x.shape[0]
    uniq, order, offsets, sizes = _group(labels, n, x.device)
    if scores is not None:
        scores = check_scores(scores, n, x.device)
    timings = {"group": time.perf_counter() - t0}

    t1 = time.perf_counter()
    fuse = _fused(x, rank)
    if n > 0 and not fuse:
        order = _rank(x, order, offsets, sizes, rank, scores, seed)
    timings["rank"] = time.perf_counter() - t1  # with fuse: inside the first pass

    t2 = time.perf_counter()
    run = _Runner(x, order, offsets, sizes, int(min_per_identity), progress, fuse)
    thr_used, per_thr = None, None
    try:
        if n == 0:
            keep_pos = torch.zeros(0, dtype=torch.bool, device=x.device)
            thr_used = float(threshold) if threshold is not None else None
        elif threshold is not None:
            bits, _ = run(torch.tensor([float(threshold)], dtype=torch.float64))
            keep_pos = (bits & 1).bool()
            thr_used = float(threshold)
        elif not per_identity:
            target = round(float(ratio) * n)
            first = _sample_lanes(x, order, offsets, sizes, int(min_per_identity), float(ratio),
                                  seed, fuse)
            # a count within 0.01% of the faces is as good as exact and saves a pass
            best = _search(run, target, first, max_passes=5, tol=n // 10_000)
            keep_pos = ((best.bits >> best.lane) & 1).bool()
            thr_used = best.t
        else:
            keep_pos, per_thr = _per_identity(run, sizes, float(ratio), int(min_per_identity))
    finally:
        run.close()
    timings["nms"] = time.perf_counter() - t2

    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[run.order[keep_pos]] = True
    result = torch.nonzero(mask).reshape(-1)  # ascending, without a sort
    out = _to_family(result, features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    kept_per = torch.zeros(len(uniq), dtype=torch.int64, device=x.device)
    if n > 0:
        seg = torch.repeat_interleave(torch.arange(len(uniq), device=x.device), sizes)
        kept_per.index_add_(0, seg, keep_pos.long())
    kept = int(result.numel())
    info = SelectionInfo(
        threshold=thr_used, ratio=kept / n if n else 0.0,
        target_ratio=None if ratio is None else float(ratio), kept=kept, n_faces=n,
        identities=uniq, faces_per_identity=sizes.cpu().numpy(),
        kept_per_identity=kept_per.cpu().numpy(),
        thresholds=None if per_thr is None else per_thr.cpu().numpy(),
        passes=run.passes, timings=timings)
    return out, info


def _per_identity(run, sizes, ratio, m):
    """Every identity its own threshold, then exactly max(m, round(ratio*n_c)) faces."""
    c = len(sizes)
    want = torch.clamp(torch.round(sizes.double() * ratio).long(), min=m)
    want = torch.minimum(want, sizes)
    lanes = _lanes(-1.0, 1.0).to(sizes.device)
    thr = lanes.expand(c, LANES).contiguous()
    best_key = torch.full((c,), 1 << 62, dtype=torch.int64, device=sizes.device)
    best_t = torch.zeros(c, dtype=torch.float64, device=sizes.device)
    best_kept = None
    seg = torch.repeat_interleave(torch.arange(c, device=sizes.device), sizes)
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
    return _fill_exact(best_kept, sizes, want), best_t


def curve(features, labels, thresholds=None, *, scores=None, rank=None, min_per_identity=1,
          seed=0, device=None, progress=False):
    """Kept ratio at up to 64 thresholds, from one pass.

    Returns (thresholds, ratios) as numpy arrays. Default thresholds: 64
    evenly spaced in [0, 1].
    """
    rank = _validate(None, 0.0, rank, scores, min_per_identity, False)
    ts = torch.linspace(0, 1, LANES, dtype=torch.float64) if thresholds is None else \
        torch.as_tensor(np.asarray(thresholds, dtype=np.float64))
    if ts.dim() != 1 or not 1 <= len(ts) <= LANES:
        raise ValueError("thresholds must be 1 to %d values, got shape %s"
                         % (LANES, tuple(ts.shape)))
    if not bool((ts[1:] >= ts[:-1]).all()):
        raise ValueError("thresholds must be ascending")
    x = _check_features(as_tensor(features, "features"))
    if device is not None:
        x = x.to(device)
    n = x.shape[0]
    uniq, order, offsets, sizes = _group(labels, n, x.device)
    if n == 0:
        return ts.numpy(), np.zeros(len(ts))
    if scores is not None:
        scores = check_scores(scores, n, x.device)
    fuse = _fused(x, rank)
    if not fuse:
        order = _rank(x, order, offsets, sizes, rank, scores, seed)
    run = _Runner(x, order, offsets, sizes, int(min_per_identity), progress, fuse)
    try:
        _, counts = run(ts)
    finally:
        run.close()
    return ts.numpy(), counts.cpu().double().numpy() / n
