"""The same selection written the way one would without facenms.

Each baseline takes the faces grouped and ranked (a list of row-index
arrays, one per identity, in rank order) and returns the kept rows.
``numpy_rank`` is the grouping and sparsity ranking in plain numpy: timed
with it, a baseline does the whole job that ``facenms.select`` does; given
facenms's ranking (``ranked_groups``), only the similarity + suppression.
"""
import numpy as np
import torch


def unit(x):
    y = np.asarray(x, dtype=np.float32)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def _walk(sup):
    """Greedy walk over a boolean 'similar above threshold' matrix, rank order."""
    n = len(sup)
    kept = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    for i in range(n):
        if not blocked[i]:
            kept[i] = True
            blocked |= sup[i]
    return kept


def numpy_nms(x, groups, t):
    """Per identity: Gram matrix with numpy, then the greedy walk."""
    out = []
    for rows in groups:
        y = unit(x[rows])
        out.append(rows[_walk(y @ y.T > t)])
    return np.sort(np.concatenate(out))


def torch_nms(x, groups, t):
    """Per identity: Gram matrix with torch, then the greedy walk."""
    xt = torch.as_tensor(np.asarray(x))
    out = []
    for rows in groups:
        y = torch.nn.functional.normalize(xt[torch.from_numpy(rows)].float(), dim=1)
        out.append(rows[_walk((y @ y.T > t).numpy())])
    return np.sort(np.concatenate(out))


def faiss_nms(x, groups, t):
    """Per identity: faiss IndexFlatIP + range_search, then the greedy walk."""
    import faiss
    out = []
    for rows in groups:
        y = np.ascontiguousarray(unit(x[rows]))
        index = faiss.IndexFlatIP(y.shape[1])
        index.add(y)
        lims, _, nbr = index.range_search(y, float(t))  # pairs with similarity > t
        n = len(rows)
        kept = np.zeros(n, dtype=bool)
        blocked = np.zeros(n, dtype=bool)
        for i in range(n):
            if not blocked[i]:
                kept[i] = True
                blocked[nbr[lims[i]:lims[i + 1]]] = True
        out.append(rows[kept])
    return np.sort(np.concatenate(out))


def ranked_groups(x, labels):
    """facenms's grouping and rank order, as a list of row-index arrays."""
    from facenms.core.csr import group as _group
    from facenms.core.ranking import rank as _rank
    xt = torch.as_tensor(np.asarray(x))
    _, order, offsets, sizes = _group(labels, len(labels), xt.device)
    order = _rank(xt, order, offsets, sizes, method="sparsity").numpy()
    return np.split(order, offsets[1:-1].numpy())


def numpy_rank(x, labels):
    """Grouping and sparsity ranking (README, "The selection rule") in plain numpy, per identity."""
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    groups = []
    for rows in np.split(order, starts[1:]):
        y = x[rows].astype(np.float64)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        m = y.sum(0)
        score = np.round((1 - y @ (m / np.linalg.norm(m))) * 2 ** 20) / 2 ** 20
        groups.append(rows[np.lexsort((rows, -score))])  # score down, index up
    return groups


def whole_job(fn):
    """A baseline that ranks with numpy_rank first: the whole select() job."""
    def run(x, labels, t):
        return fn(x, numpy_rank(x, labels), t)
    run.__name__ = fn.__name__ + "_whole"
    return run
