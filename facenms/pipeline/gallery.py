"""What the HTML report shows: a documented sample of identities, each suppressed face
with the kept face that suppressed it, and the typical faces beside a label issue.

Only the identities shown are touched: their rows are ranked again with the
selection's own ranking (facenms.core.ranking; on the CPU the kernel's fused
ranking, as facenms.select runs it), so "ranked before" means what it meant
to the walk. Cost: O(faces shown x kept faces of their identity).
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch

from ..core import ops, ranking
from ..core.csr import group
from ..core.inputs import as_tensor, check_features

__all__ = ["IdentityIndex", "Gallery", "choose_identities", "ranked_rows", "galleries",
           "suppressors", "centres", "issue_neighbours"]


class IdentityIndex:
    """Rows grouped by label: uniq[c] has rows order[start[c]:start[c] + size[c]] (ascending)."""

    def __init__(self, labels):
        self.order = np.argsort(labels, kind="stable")
        s = labels[self.order]
        first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, int)
        self.uniq, self.start = s[first], first
        self.size = np.diff(np.r_[first, len(s)])

    def rows(self, c):
        return self.order[self.start[c]:self.start[c] + self.size[c]]

    def find(self, label):
        """The identity number of `label`, or -1."""
        c = int(np.searchsorted(self.uniq, label))
        return c if c < len(self.uniq) and self.uniq[c] == label else -1


@dataclass
class Gallery:
    label: int
    reasons: List[str]
    n_faces: int
    n_kept: int
    kept: List[int] = field(default_factory=list)  # rows shown, in rank order
    pairs: List[tuple] = field(default_factory=list)  # (suppressed row, suppressor row, sim)


def choose_identities(index, kept_per, *, named=(), largest=6, suppressed=6, random=12,
                      seed=0):
    """[(identity number, [reasons])]: the named labels, the `largest` identities by faces,
    the `suppressed` with most faces suppressed, and `random` more drawn with `seed`."""
    picked = {}

    def add(c, why):
        picked.setdefault(int(c), []).append(why)

    for lab in named:
        c = index.find(lab)
        if c < 0:
            raise ValueError("identity %r is not among the labels" % (lab,))
        add(c, "named")
    n_sup = index.size - kept_per
    # ties by the smaller label, so the sample does not depend on the sort's whims
    for c in np.lexsort((np.arange(len(index.size)), -index.size))[:largest]:
        add(c, "largest")
    for c in np.lexsort((np.arange(len(n_sup)), -n_sup))[:suppressed]:
        if n_sup[c] > 0:
            add(c, "most suppressed")
    rest = np.setdiff1d(np.arange(len(index.size)), list(picked))
    rng = np.random.default_rng(seed)
    for c in rng.permutation(rest)[:random]:
        add(c, "random")
    return list(picked.items())


def _unit(features, rows):
    y = np.asarray(features[np.asarray(rows)], dtype=np.float32)
    n = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(n > 0, n, 1)


def ranked_rows(features, groups, rank="sparsity", scores=None, seed=0):
    """Each group of rows (one identity, any order) in the selection's rank order.

    rank: as facenms.select's ("sparsity", "centrality", "random", "scores" with
    `scores`, one per row of the whole set); seed: its seed for rank="random".
    """
    groups = [np.sort(np.asarray(g, dtype=np.int64)) for g in groups]
    if not groups:
        return []
    rows = np.concatenate(groups)
    sub = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    x = check_features(as_tensor(np.ascontiguousarray(features[rows]), "features"))
    _, order, offsets, sizes = group(sub, len(rows), x.device)
    key = None
    if rank == "random":  # the key of a face depends on its row in the whole set
        key = ranking.random_key(len(features), seed)[torch.from_numpy(rows)]
    elif rank == "scores" or scores is not None:
        key = torch.as_tensor(np.asarray(scores, dtype=np.float64)[rows])
    if key is not None:
        order = ranking.rank(x, order, offsets, sizes, method="scores", scores=key,
                             seed=seed)
    elif ranking.fused(x, rank):  # the CPU kernel ranks inside its first pass: use it
        order = ops.rank_nms(x, order, offsets, torch.zeros(1, dtype=torch.float64), 1,
                             centrality=rank == "centrality")[0]
    else:
        order = ranking.rank(x, order, offsets, sizes, method=rank, seed=seed)
    ranked = rows[order.numpy()]
    return np.split(ranked, offsets[1:-1].numpy())


def suppressors(y, kept, positions):
    """For rank positions `positions` of one identity (unit rows y in rank order, kept mask):
    (position of the most similar kept face ranked before each, its similarity); -1 and
    nan where no kept face is ranked before it."""
    k = np.flatnonzero(kept)
    positions = np.asarray(positions, dtype=np.int64)
    if len(k) == 0 or len(positions) == 0:
        return np.full(len(positions), -1), np.full(len(positions), np.nan, np.float32)
    sims = y[positions] @ y[k].T
    sims[k[None, :] >= positions[:, None]] = -np.inf  # only faces ranked earlier suppress
    best = sims.argmax(axis=1)
    sim = sims[np.arange(len(positions)), best]
    found = np.isfinite(sim)
    return np.where(found, k[best], -1), np.where(found, sim, np.nan).astype(np.float32)


def _spread(items, n):
    """Up to n items, evenly spaced over the list (all when it is short)."""
    if len(items) <= n:
        return list(items)
    return [items[int(j)] for j in np.linspace(0, len(items) - 1, n).round()]


def galleries(features, kept_mask, index, chosen, *, kept_shown=12, pairs_shown=12,
              rank="sparsity", scores=None, seed=0):
    """A Gallery per chosen identity: up to `kept_shown` kept faces and `pairs_shown`
    suppressed faces with their suppressors, both spread evenly over the rank order."""
    ranked = ranked_rows(features, [index.rows(c) for c, _ in chosen], rank, scores, seed)
    out = []
    for (c, why), rows in zip(chosen, ranked):
        kept = kept_mask[rows]
        g = Gallery(label=int(index.uniq[c]), reasons=why, n_faces=len(rows),
                    n_kept=int(kept.sum()))
        g.kept = [int(rows[p]) for p in _spread(np.flatnonzero(kept), kept_shown)]
        pos = _spread(np.flatnonzero(~kept), pairs_shown)
        if pos:
            by, sim = suppressors(_unit(features, rows), kept, pos)
            g.pairs = [(int(rows[p]), int(rows[b]) if b >= 0 else -1, float(s))
                       for p, b, s in zip(pos, by, sim)]
        out.append(g)
    return out


def _typical(features, rows, n, exclude):
    """The n rows of an identity nearest its centre (the most typical faces)."""
    rows = rows[rows != exclude]
    if len(rows) <= n:
        return [int(r) for r in rows]
    y = _unit(features, rows)
    centre = y.sum(axis=0)
    return [int(r) for r in rows[np.argsort(-(y @ centre), kind="stable")[:n]]]


def centres(features, index, chunk=1 << 16):
    """Unit centre of every identity (rows of `features` normalised, summed, normalised)."""
    out = np.zeros((len(index.uniq), features.shape[1]), np.float32)
    c = 0
    while c < len(index.uniq):  # whole identities, about `chunk` rows at a time
        d = max(c + 1, int(np.searchsorted(index.start, index.start[c] + chunk)))
        a, b = index.start[c], index.start[d - 1] + index.size[d - 1]
        out[c:d] = np.add.reduceat(_unit(features, index.order[a:b]), index.start[c:d] - a)
        c = d
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(n > 0, n, 1)


def issue_neighbours(features, index, issues, *, typical=3, shown=40):
    """The `shown` label issues of highest score, each with up to `typical` typical faces
    of its own label and of the label it most resembles. Where the issues do not name
    that label, it is the other identity whose centre is nearest the face."""
    order = np.argsort(-np.nan_to_num(issues["score"], nan=-np.inf), kind="stable")[:shown]
    near, near_sim = issues["other_label"], issues["other_similarity"]
    if near is None and len(order):
        cen = centres(features, index)
        sims = _unit(features, issues["index"][order]) @ cen.T
        own = np.array([index.find(lab) for lab in issues["label"][order]])
        mine = own >= 0
        sims[np.flatnonzero(mine), own[mine]] = -np.inf  # another identity than its own
        best = sims.argmax(axis=1)
        near = np.full(len(issues["index"]), -1, np.int64)
        near_sim = np.full(len(issues["index"]), np.nan)
        ok = np.isfinite(sims[np.arange(len(order)), best])
        near[order[ok]] = index.uniq[best[ok]]
        near_sim[order[ok]] = sims[np.arange(len(order)), best][ok]
    out = []
    for j in order:
        i = int(issues["index"][j])
        lab, other = issues["label"][j], near[j]
        c, o = index.find(lab), index.find(other)
        out.append(dict(
            index=i, label=lab, score=issues["score"][j], other_label=other,
            other_similarity=None if near_sim is None else near_sim[j],
            own=_typical(features, index.rows(c), typical, i) if c >= 0 else [],
            other=_typical(features, index.rows(o), typical, i) if o >= 0 else []))
    return out
