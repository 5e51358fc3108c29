"""Out-of-core and multi-process selection: one block of identities at a time.

``facenms.select`` hands over here when the features are a memory-mapped
array or a path to a ``.npy`` file, when they exceed ``max_memory``, when a
``block_size`` is given, or when several processes share the work (see
``facenms.scale.dist``). The answer is exactly the in-memory one: the kernels
see every identity's rows, in the same rank order, and every decision of the
threshold search is taken on the same (summed) counts.

Memory. Labels are grouped once (O(N): labels, the rank order, per-face kept
bits: about 40 bytes a face). Features are then read one block of consecutive
identities at a time (in ascending label order), gathered into RAM and
handed to the kernels; the next block is read while the kernels run on this
one, so at most two blocks are resident, plus the kernels' scratch (the
largest identity's rows in float64). A file in identity order (see
``facenms sort-features``) reads sequentially; any order works.

Passes over the file: threshold and per-identity mode rank during the first
NMS pass; ratio mode reads once to rank (the sample that brackets the
threshold needs ranked identities), then once per NMS pass (two to five).
"""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..core import ops, ranking
from ..core.csr import arange_within, group
from ..core.inputs import (as_tensor, bad_row_message, check_count, check_device,
                           check_features, check_scores, settings, to_family)
from ..core.search import decide, sample_lanes, sample_take
from ..core.select import kept_per_identity, make_info
from ..io.progress import progress_bar
from .dist import active, comm_for, split_identities
from .reader import (Reader, is_mapped, is_path, nbytes, open_features, open_labels,
                     read_lanes)

DEFAULT_MAX_MEMORY = 1 << 30  # bytes of feature blocks in RAM when nothing is said


def should_stream(features, block_size=None, max_memory=None, distributed=None):
    """Whether select() should stream (see the module doc)."""
    if distributed not in (None, True, False):
        raise ValueError("distributed must be None, True or False, got %r" % (distributed,))
    if distributed or (distributed is None and active()):
        return True
    if is_path(features) or is_mapped(features):
        return True
    if block_size is not None:
        return True
    return max_memory is not None and nbytes(features) > max_memory


class BlockRunner:
    """NMS passes over this rank's identities, one block at a time.

    Same interface as facenms.core.runner.Runner: call with thresholds, get the kept
    bits per rank position (all N; zero outside this rank's range) and the
    kept counts summed over ranks. The first pass (or rank()) also ranks each
    identity and stores the rank order into ``order`` in place.
    """

    def __init__(self, src, order, offsets, sizes, *, ident_range, block_rows, method, key,
                 seed, min_keep, comm, device, progress):
        self.src, self.order, self.min_keep, self.comm = src, order, min_keep, comm
        self.offsets, self.sizes = offsets, sizes
        self.rank_kind, self.key, self.seed, self.device = method, key, seed, device
        self.off_np = offsets.numpy()
        self.c_lo, self.c_hi = ident_range
        self.blocks = blocks(self.off_np, self.c_lo, self.c_hi, block_rows)
        self.ranked = False
        self.passes = 0
        self.seconds = {"read": 0.0, "rank": 0.0, "nms": 0.0}
        self.bar = progress_bar(progress, total=int(self.off_np[self.c_hi] - self.off_np[self.c_lo]),
                                unit="face", desc="facenms", leave=False)

    def rank(self):
        """Rank every identity of this rank (one read), without NMS."""
        if not self.ranked:
            self._sweep(None, None, None)

    def __call__(self, thresholds):
        thresholds = thresholds.to("cpu", torch.float64).contiguous()
        self.passes += 1
        bits = torch.zeros(int(self.off_np[-1]), dtype=torch.int64)
        counts = torch.zeros(thresholds.shape, dtype=torch.int64)
        self._sweep(thresholds, bits, counts)
        return bits, self.comm.sum(counts)

    def _load(self, k):
        c0, c1 = self.blocks[k]
        pos = self.order[int(self.off_np[c0]):int(self.off_np[c1])].numpy()
        t = time.perf_counter()
        out = self.src.load(pos)
        self.seconds["read"] += time.perf_counter() - t
        return out

    def _sweep(self, thresholds, bits, counts):
        if self.bar is not None:
            self.bar.reset()
            self.bar.set_description("facenms %s" % (
                "ranking" if thresholds is None else "pass %d" % self.passes))
        bad = None  # (row, kind) of the first bad row seen by this rank
        ranking_now = not self.ranked
        with ThreadPoolExecutor(1) as pool:  # reads the next block while this one runs
            nxt = pool.submit(self._load, 0) if self.blocks else None
            for k, (c0, c1) in enumerate(self.blocks):
                x_h, local, rows = nxt.result()
                if k + 1 < len(self.blocks):
                    nxt = pool.submit(self._load, k + 1)
                a, b = int(self.off_np[c0]), int(self.off_np[c1])
                x = ranking.float32_safe(x_h.to(self.device))
                local = local.to(self.device)
                off = (self.offsets[c0:c1 + 1] - a).to(self.device)
                if ranking_now:
                    t = time.perf_counter()
                    try:
                        local = self._rank_block(x, local, off, self.sizes[c0:c1], rows)
                    except ValueError:  # a bad row: find the first one in caller order
                        row, kind = first_bad_in_block(x_h, local, rows)
                        bad = min(bad, (row, kind)) if bad is not None else (row, kind)
                    else:
                        local_h = local.cpu()
                        self.order[a:b] = local_h if rows is None else \
                            torch.from_numpy(rows)[local_h]
                    self.seconds["rank"] += time.perf_counter() - t
                if thresholds is not None and bad is None:
                    t = time.perf_counter()
                    thr = thresholds[c0:c1] if thresholds.dim() == 2 else thresholds
                    bi, co = ops.nms(x, local, off, thr.to(self.device), self.min_keep)
                    bits[a:b] = bi.cpu()
                    if thresholds.dim() == 2:
                        counts[c0:c1] = co.cpu()
                    else:
                        counts += co.cpu()
                    self.seconds["nms"] += time.perf_counter() - t
                if self.bar is not None:
                    self.bar.update(b - a)
                del x, x_h  # before the next read: at most two blocks resident
        if ranking_now:
            self._raise_if_bad(bad)
            self.ranked = True

    def _rank_block(self, x, local, off, sizes, rows):
        if self.key is None:
            return ranking.rank(x, local, off, sizes, method=self.rank_kind, seed=self.seed)
        # random and user scores rank by a per-face key of the whole set
        key = self.key if rows is None else self.key[torch.from_numpy(rows)]
        key = key.to(x.device)
        return ranking.rank(x, local, off, sizes, method="scores", scores=key, seed=self.seed)

    def _raise_if_bad(self, bad):
        """Every rank learns the first bad row over all ranks, so all raise together."""
        n = int(self.off_np[-1])
        code = torch.tensor([2 * n + 2 if bad is None else 2 * bad[0] + bad[1]],
                            dtype=torch.int64)
        code = int(self.comm.min(code))
        if code < 2 * n + 2:
            raise ValueError(bad_row_message(code // 2, code % 2 == 0))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def first_bad_in_block(x, local, rows):
    """(caller row, 0 for zero norm / 1 for non-finite) of the first bad row of a block."""
    norms = x[local].double().norm(dim=1).cpu()
    bad = torch.nonzero(~torch.isfinite(norms) | (norms == 0)).reshape(-1)
    glob = local.cpu()[bad].numpy() if rows is None else rows[local.cpu()[bad].numpy()]
    i = int(np.argmin(glob))
    return int(glob[i]), 0 if float(norms[bad[i]]) == 0 else 1


def blocks(offsets, c_lo, c_hi, rows):
    """Consecutive identity ranges [c0, c1) of at most `rows` faces (or one identity)."""
    out, c = [], c_lo
    while c < c_hi:
        e = int(np.searchsorted(offsets, offsets[c] + rows, side="right")) - 1
        e = min(max(e, c + 1), c_hi)
        out.append((c, e))
        c = e
    return out


def block_rows(d, itemsize, block_size=None, max_memory=None):
    """Faces per block: block_size, or what two blocks of max_memory bytes hold."""
    if block_size is not None:
        return check_count(block_size, "block_size (faces per block)", 1)
    budget = DEFAULT_MAX_MEMORY if max_memory is None else \
        check_count(max_memory, "max_memory (bytes)", 1)
    return max(1, budget // (2 * max(1, d * itemsize)))


def _sample_rows(src, order, offsets, sizes, seed):
    """Features and an order for search.sample_lanes that hold only the rows
    of the identities it samples (read here, in one sorted gather). The order
    points every other position at row 0; the sample never reads those."""
    take = sample_take(offsets, sizes, seed)
    if take is None:  # no sample is drawn: nothing to read
        return torch.zeros(1, 1), torch.zeros_like(order)
    pos = torch.repeat_interleave(offsets[take], sizes[take]) + arange_within(sizes[take])
    x_s, local, _ = src.load(order[pos].numpy())
    order_s = torch.zeros_like(order)
    order_s[pos] = local.to(order_s.device)
    return x_s, order_s


def source(features, device):
    """(reader, compute device, n, d, torch dtype of the rows) for an array on disk or in
    memory."""
    device = check_device(device)
    if isinstance(features, np.ndarray):
        probe = check_features(as_tensor(features[:0], "features"))  # dtype and shape only
        if is_mapped(features) and features.shape[1] > 1 \
                and features.strides[1] != features.itemsize:
            raise ValueError("memory-mapped features must have contiguous rows, got strides %s"
                             % (features.strides,))
        dev = device if device is not None else torch.device("cpu")
        return (Reader(features, read_lanes(dev)), dev, features.shape[0], features.shape[1],
                probe.dtype)
    # a tensor (or DLPack array) already in memory: blocks are read in place
    x = check_features(as_tensor(features, "features"))
    if device is not None:
        x = x.to(device)
    return InMemory(x), x.device, x.shape[0], x.shape[1], x.dtype


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, device=None, return_info=False,
           progress=False, block_size=None, max_memory=None, distributed=None, subset=None):
    """facenms.select over blocks of identities; see its documentation.

    Every rank of a process group gets the same answer. subset: select among
    these ascending rows of features only (labels and scores are theirs);
    the indices returned are positions in subset.
    """
    t0 = time.perf_counter()
    s = settings(ratio=ratio, threshold=threshold, rank=rank, scores=scores,
                 min_per_identity=min_per_identity, per_identity=per_identity, seed=seed)
    features = open_features(features)
    labels = open_labels(labels)
    comm = comm_for(distributed)
    src, dev, n, d, dtype = source(features, device)
    if subset is not None:
        src, n = Subset(src, subset, n), len(subset)
    uniq, order, offsets, sizes = group(labels, n, torch.device("cpu"))
    key = _rank_key(s.rank, scores, n, seed)
    bounds = split_identities(sizes.numpy(), comm.world)
    c_lo, c_hi = int(bounds[comm.rank]), int(bounds[comm.rank + 1])
    rows = block_rows(d, dtype.itemsize, block_size, max_memory)
    timings = {"group": time.perf_counter() - t0}

    t2 = time.perf_counter()
    run = BlockRunner(src, order, offsets, sizes, ident_range=(c_lo, c_hi), block_rows=rows,
                      method=s.rank, key=key, seed=seed, min_keep=s.min_keep, comm=comm,
                      device=dev, progress=progress and comm.main)

    def first_lanes():  # the sample needs ranked identities: one read to rank them first
        run.rank()
        full = order
        if comm.world > 1:  # the sample may pick any rank's identities
            a, b = int(offsets[c_lo]), int(offsets[c_hi])
            full = torch.zeros_like(order)
            full[a:b] = order[a:b]
            full = comm.sum(full)
        x_s, order_s = _sample_rows(src, full, offsets, sizes, seed)
        return sample_lanes(x_s.to(dev), order_s.to(dev), offsets.to(dev), sizes.to(dev),
                            min_keep=s.min_keep, ratio=s.ratio, seed=seed)

    try:
        keep_pos, thr_used, per_thr = decide(run, s, n, sizes, torch.device("cpu"), first_lanes)
    finally:
        run.close()
    # rank / nms: time in those steps; read: time reading blocks (overlaps them);
    # passes: wall time of all reads and passes
    timings["passes"] = time.perf_counter() - t2
    timings.update(run.seconds)

    result, kept_per = _gather(run, keep_pos, comm, offsets, sizes, (c_lo, c_hi))
    out = to_family(result.to(dev), features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    return out, make_info(s, int(result.numel()), n, uniq=uniq, sizes=sizes, kept_per=kept_per,
                          threshold=thr_used, thresholds=per_thr, passes=run.passes,
                          timings=timings)


def _rank_key(method, scores, n, seed):
    """The per-face key that random and user-score ranking sort by, None for the others."""
    if scores is not None:
        return check_scores(scores, n, "cpu")
    if method == "random":  # the same draw as in memory
        return ranking.random_key(n, seed)
    return None


def _gather(run, keep_pos, comm, offsets, sizes, ident_range):
    """The kept faces (sorted) and kept counts per identity of every rank, on every rank."""
    c_lo, c_hi = ident_range
    a, b = int(offsets[c_lo]), int(offsets[c_hi])
    mine = run.order[a:b][keep_pos[a:b]]
    kept_per = torch.zeros(len(sizes), dtype=torch.int64)
    kept_per[c_lo:c_hi] = kept_per_identity(keep_pos[a:b], sizes[c_lo:c_hi])
    if comm.world == 1:
        return torch.sort(mine).values, kept_per
    mask = torch.zeros(len(run.order), dtype=torch.uint8)
    mask[mine] = 1
    return torch.nonzero(comm.sum(mask)).reshape(-1), comm.sum(kept_per)


class InMemory:
    """A tensor already in memory (CPU or GPU): blocks index it without copying."""

    def __init__(self, x):
        self.x = x

    def load(self, pos):
        return self.x, torch.from_numpy(pos), None


class Subset:
    """Some rows of a source, addressed by their positions in `rows` (ascending)."""

    def __init__(self, src, rows, n):
        self.src, self.rows = src, np.asarray(rows, dtype=np.int64)
        self.inverse = None
        if isinstance(src, InMemory):  # blocks index the whole tensor: map its rows back
            self.inverse = np.full(n, -1, dtype=np.int64)
            self.inverse[self.rows] = np.arange(len(self.rows))

    def load(self, pos):
        x, local, got = self.src.load(self.rows[pos])
        if got is None:
            return x, local, self.inverse
        return x, local, np.searchsorted(self.rows, got)
