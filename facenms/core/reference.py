"""The selection rule written as plainly as possible, in numpy float64.

Slow (a Python loop per identity and face) and meant to be: it is the oracle
the fast kernels are tested against, and users can run it on a sample of
their own data to check a result. ``check_valid`` verifies any selection
against the rule without recomputing it. ``label_issues`` is the cleaning
rule of facenms.core.cleaning, computed the same plain way.
"""
import numpy as np

NO_CENTRE = 2.0 ** -32  # unit rows summing to less than n * NO_CENTRE have no centre


def as_float64(a):
    """numpy float64 from numpy, lists or torch tensors of any float dtype (bf16 too)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def unit_rows(features):
    """float64 L2-normalised rows; a non-finite or zero row is an error."""
    x = as_float64(features)
    if x.ndim != 2:
        raise ValueError("features must be 2-D (N, d), got shape %s" % (x.shape,))
    norms = np.sqrt((x * x).sum(axis=1))
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError("features row %d has %s" % (
            i, "zero norm" if norms[i] == 0 else "a non-finite value"))
    return x / norms[:, None]


def identity_groups(labels):
    """Unique labels (ascending) and, for each, its row indices ascending."""
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    uniq, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]
    return uniq, np.split(order, bounds)


def sparsity_scores(y):
    """s_i = 1 - cos(y_i, centre), rounded to a multiple of 2**-20."""
    centre = y.sum(axis=0)
    norm = np.sqrt(centre @ centre)
    if not norm > len(y) * NO_CENTRE:  # no centre direction, only rounding noise: all tie
        return np.ones(len(y))
    s = 1.0 - (y @ centre) / norm
    return np.round(s * 2.0 ** 20) / 2.0 ** 20


def rank_order(features, labels, rank="sparsity", scores=None, seed=0):
    """Per identity (ascending label), its row indices in rank order."""
    y = unit_rows(features)
    if rank == "random":
        score = np.random.default_rng(seed).permutation(len(y)).astype(np.float64)
    elif rank == "scores":
        score = as_float64(scores)
    out = []
    for rows in identity_groups(labels)[1]:
        if rank in ("sparsity", "centrality"):
            s = sparsity_scores(y[rows])
            s = s if rank == "sparsity" else -s
        else:
            s = score[rows]
        # descending score, ties by the smaller index (rows are ascending)
        out.append(rows[np.argsort(-s, kind="stable")])
    return out


def greedy(y, t):
    """Keep mask of unit rows y (rank order): kept unless cos > t with a kept face."""
    kept = np.zeros(len(y), dtype=bool)
    for i in range(len(y)):
        kept[i] = not any(similarity(y[i], y[k]) > t for k in np.flatnonzero(kept))
    return kept


def fill_to(kept, k):
    """Exactly k kept: drop the lowest-ranked kept, or add the best-ranked suppressed."""
    kept = kept.copy()
    have = int(kept.sum())
    if have > k:
        kept[np.flatnonzero(kept)[k:]] = False
    elif have < k:
        kept[np.flatnonzero(~kept)[:k - have]] = True
    return kept


def identity_keep(y, t, m):
    kept = greedy(y, t)
    need = min(m, len(y))
    return fill_to(kept, need) if kept.sum() < need else kept


def similarity(a, b):
    """The cosine similarity of two unit rows, as every function here computes it."""
    return a @ b


def _candidates(y):
    """Thresholds at which an identity's selection can change: its pair similarities,
    computed exactly as greedy() computes them (so that no count is missed)."""
    sims = [similarity(y[i], y[k]) for i in range(len(y)) for k in range(i + 1, len(y))]
    return np.unique(np.concatenate([sims, [-1.0, 1.0]]))


def _closest(ts, counts, target):
    """Threshold with the count closest to target; ties go to the larger threshold."""
    diff = np.abs(np.asarray(counts) - target)
    j = np.flatnonzero(diff == diff.min())[-1]
    return float(ts[j])


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, return_thresholds=False):
    """Sorted indices of the kept faces, by the Face-NMS rule (README, "The selection rule").

    Ratio mode searches every candidate threshold exactly (all pair
    similarities): the best any search can do.
    """
    rank = rank or ("scores" if scores is not None else "sparsity")
    y = unit_rows(features)
    groups = rank_order(features, labels, rank, scores, seed)
    ys = [y[rows] for rows in groups]
    if threshold is not None:
        ts = [float(threshold)] * len(groups)
    elif per_identity:
        ts = []
        for yc in ys:
            target = min(len(yc), max(min_per_identity, int(np.round(ratio * len(yc)))))
            cand = _candidates(yc)
            ts.append(_closest(cand, [identity_keep(yc, t, min_per_identity).sum()
                                      for t in cand], target))
    else:
        target = int(np.round(ratio * len(y)))
        cand = np.unique(np.concatenate([_candidates(yc) for yc in ys]))
        counts = [sum(identity_keep(yc, t, min_per_identity).sum() for yc in ys) for t in cand]
        ts = [_closest(cand, counts, target)] * len(groups)
    keep = []
    for rows, yc, t in zip(groups, ys, ts):
        kept = identity_keep(yc, t, min_per_identity)
        if per_identity and threshold is None:
            kept = fill_to(kept, min(len(yc), max(min_per_identity, int(np.round(ratio * len(yc))))))
        keep.append(rows[kept])
    keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    keep = keep.astype(np.int64)
    return (keep, np.asarray(ts)) if return_thresholds else keep


def check_valid(features, labels, keep, threshold, *, scores=None, rank=None,
                min_per_identity=1, seed=0, eps=1e-5):
    """Raise AssertionError unless `keep` follows the rule at `threshold`.

    Walking each identity in rank order: a kept face is within threshold + eps
    of every earlier greedily kept face, a suppressed face is above
    threshold - eps to some earlier greedily kept face. Kept faces that break
    the first condition are allowed only as the min_per_identity fill: the
    best-ranked suppressed faces of an identity that kept too few.
    Returns the number of faces checked.
    """
    rank = rank or ("scores" if scores is not None else "sparsity")
    y = unit_rows(features)
    keep = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep, dtype=np.int64)
    if len(keep) and (np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= len(y)):
        raise AssertionError("keep must be sorted, unique indices in [0, %d)" % len(y))
    kept = np.zeros(len(y), dtype=bool)
    kept[keep] = True
    for rows in rank_order(features, labels, rank, scores, seed):
        greedy_kept, fill, suppressed = [], [], []
        for i in rows:
            sims = [similarity(y[i], y[k]) for k in greedy_kept]
            if kept[i]:
                (greedy_kept if all(s <= threshold + eps for s in sims) else fill).append(i)
            else:
                if not any(s > threshold - eps for s in sims):
                    raise AssertionError("face %d was suppressed but no kept face of its "
                                         "identity is above threshold %g" % (i, threshold))
                suppressed.append(i)
        if not kept[rows[0]]:
            raise AssertionError("face %d is ranked first in its identity but not kept" % rows[0])
        if fill:
            need = min(min_per_identity, len(rows))
            if len(greedy_kept) >= need or len(greedy_kept) + len(fill) != need:
                raise AssertionError("faces %s are kept though suppressed" % fill)
            not_kept = [i for i in rows if not kept[i]]
            last = max(list(rows).index(i) for i in fill)
            if any(list(rows).index(i) < last for i in not_kept):
                raise AssertionError("the min_per_identity fill of faces %s skipped better-ranked "
                                     "suppressed faces" % fill)
        elif len(greedy_kept) < min(min_per_identity, len(rows)):
            raise AssertionError("identity of faces %s kept %d < min_per_identity" % (
                list(rows[:3]), len(greedy_kept)))
    return len(y)


def lower_median(v):
    """The lower middle element of the sorted values."""
    return np.sort(np.asarray(v, dtype=np.float64))[(len(v) - 1) // 2]


def label_issues(features, labels, *, threshold=8.0, min_faces=3, return_scores=False):
    """Sorted indices of the faces the label-issue rule flags (facenms.core.cleaning states
    it): a loop over faces and identities in float64, with nothing pruned.

    return_scores: also return s_i for every face (NaN where not judged) and, per face,
    the label of the nearest other identity.
    """
    y = unit_rows(features)
    uniq, _ = identity_groups(labels)
    ranked = rank_order(features, labels, "centrality")
    centres = np.zeros((len(uniq), y.shape[1]))
    own = np.zeros(len(y), dtype=np.int64)
    for c, rows in enumerate(ranked):
        inner = rows[:(len(rows) + 1) // 2] if len(rows) >= min_faces else rows
        total = y[inner].sum(axis=0)
        norm = np.sqrt(total @ total)
        if norm > len(inner) * NO_CENTRE:
            centres[c] = total / norm
        own[rows] = c
    judged = np.array([len(ranked[c]) >= min_faces for c in own], dtype=bool)
    a = np.array([similarity(y[i], centres[own[i]]) for i in range(len(y))])
    scores = np.full(len(y), np.nan)
    other = np.asarray(uniq)[own].copy()
    if judged.any():
        mu = lower_median(a[judged])
        sigma = 1.4826 * lower_median(np.abs(a[judged] - mu))
        for i in np.flatnonzero(judged):
            others = [k for k in range(len(uniq)) if k != own[i]]
            b = a[i]  # no other identity: the margin is zero
            if others:
                sims = [similarity(y[i], centres[k]) for k in others]
                j = int(np.argmax(sims))  # the first of equal maxima
                b, other[i] = sims[j], uniq[others[j]]
            excess = (mu - a[i]) + (b - a[i])
            scores[i] = excess / sigma if sigma > 0 else (np.inf if excess > 0 else 0.0)
    flagged = np.flatnonzero(judged & (np.nan_to_num(scores, nan=-np.inf) > threshold))
    flagged = flagged.astype(np.int64)
    return (flagged, scores, other) if return_scores else flagged
