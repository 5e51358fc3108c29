"""Out-of-core and multi-process selection: one block of identities at a time.

``facenms.select`` hands over here when the features are a memory-mapped
array or a path to a ``.npy`` file, when they exceed ``max_memory``, when a
``block_size`` is given, or when several processes share the work (see
``facenms.distributed``). The answer is exactly the in-memory one: the kernels
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
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import ops
from . import selection as sel
from .distributed import Comm, active, init, split_identities

DEFAULT_MAX_MEMORY = 1 << 30  # bytes of feature blocks in RAM when nothing is said


# ---------------------------------------------------------------- inputs ----

def _is_mapped(a):
    """True for a numpy array whose memory is (a view of) a memory-mapped file."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def _nbytes(a):
    if isinstance(a, torch.Tensor):
        return a.numel() * a.element_size()
    return getattr(a, "nbytes", 0)


def wanted(features, block_size=None, max_memory=None, distributed=None):
    """Whether select() should stream (see the module doc)."""
    if distributed or (distributed is None and active()):
        return True
    if _is_path(features) or _is_mapped(features):
        return True
    if block_size is not None:
        return True
    return max_memory is not None and _nbytes(features) > max_memory


def _is_path(a):
    """A .npy path or an existing file (any other string is a type error later)."""
    return isinstance(a, (str, os.PathLike)) and (
        os.fspath(a).endswith(".npy") or os.path.isfile(a))


def open_features(features):
    """A path to a .npy opens memory-mapped; arrays pass through."""
    if isinstance(features, (str, os.PathLike)):
        path = os.fspath(features)
        if not os.path.exists(path):
            raise FileNotFoundError("features file not found: %s" % path)
        try:
            return np.load(path, mmap_mode="r")
        except ValueError as e:
            raise ValueError("cannot memory-map features file %s: %s" % (path, e)) from None
    return features


class _Reader:
    """Gathers rows of a 2-D numpy array (memory-mapped or not) into RAM.

    Rows are read in ascending order. Rows of a memory-mapped .npy are read
    with pread() straight into the block, one call per run of consecutive
    rows (a file in identity order reads sequentially, with the kernel's
    read-ahead). Pages are never mapped into this process: the page cache may
    hold a file in large folios, and touching one row through the mapping can
    map megabytes of its neighbours. Other arrays are gathered with
    numpy (a memory map without a file we can open is then released with
    madvise(MADV_DONTNEED)).
    """

    def __init__(self, arr):
        self.arr = arr
        mm = arr
        while isinstance(mm, np.ndarray) and getattr(mm, "_mmap", None) is None:
            mm = mm.base
        self.mm = mm._mmap if isinstance(mm, np.memmap) else (
            mm if isinstance(mm, mmap.mmap) else None)
        self.file = None  # (path, file position of row 0, bytes between rows)
        if isinstance(arr, np.memmap) and arr.ndim == 2 and self.mm is not None and \
                arr.strides[1] == arr.itemsize and arr.strides[0] >= 0 and \
                isinstance(arr.filename, str) and os.path.isfile(arr.filename):
            # the mapping starts at the granularity boundary below arr.offset
            start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
            base = np.frombuffer(self.mm, dtype=np.uint8, count=1).ctypes.data
            self.file = (arr.filename, start + arr.ctypes.data - base, arr.strides[0])

    def read(self, rows):
        """arr[rows] for ascending int64 rows, as a C-contiguous array."""
        if len(rows) == 0:
            return np.empty((0,) + self.arr.shape[1:], self.arr.dtype)
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        if self.file is None and len(cut) + 1 > max(1, len(rows) // 16):
            out = np.take(self.arr, rows, axis=0)
            self.release()
            return np.ascontiguousarray(out)
        out = np.empty((len(rows),) + self.arr.shape[1:], self.arr.dtype)
        starts = np.concatenate([[0], cut]).tolist()
        ends = np.concatenate([cut, [len(rows)]]).tolist()
        if self.file is None:
            for s, e in zip(starts, ends):
                out[s:e] = self.arr[rows[s]:rows[s] + (e - s)]
            self.release()
            return out
        path, pos0, stride = self.file
        row_bytes = out.shape[1] * out.itemsize
        view = memoryview(out.reshape(len(rows), -1).view(np.uint8)).cast("B")
        fd = os.open(path, os.O_RDONLY)
        try:
            for s, e in zip(starts, ends):
                if stride != row_bytes:  # padded rows: one read per row
                    for i in range(s, e):
                        _pread_all(fd, view[i * row_bytes:(i + 1) * row_bytes],
                                   pos0 + int(rows[i]) * stride)
                else:
                    _pread_all(fd, view[s * row_bytes:e * row_bytes],
                               pos0 + int(rows[s]) * stride)
        finally:
            os.close(fd)
        return out

    def load(self, pos):
        """The rows `pos` in RAM: (features, local indices of pos, local -> caller row)."""
        rows = np.sort(pos)
        data = self.read(rows)
        return torch.from_numpy(data), torch.from_numpy(np.searchsorted(rows, pos)), rows

    def release(self):
        if self.mm is not None and hasattr(self.mm, "madvise"):
            try:
                self.mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - not every platform
                pass


def _pread_all(fd, buf, pos):
    """Fill buf from file position pos (pread may return less than asked)."""
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], pos + done)
        if got <= 0:
            raise OSError("features file ended early at byte %d" % (pos + done))
        done += got


def _bad_row_message(row, kind):
    return "features row %d has %s" % (
        row, "zero norm" if kind == 0 else "a non-finite value (NaN or Inf)")


# ------------------------------------------------------------ the passes ----

class _BlockRunner:
    """NMS passes over this rank's identities, one block at a time.

    Same interface as selection._Runner: call with thresholds, get the kept
    bits per rank position (all N; zero outside this rank's range) and the
    kept counts summed over ranks. The first pass (or rank()) also ranks each
    identity and stores the rank order into ``order`` in place.
    """

    def __init__(self, src, order, offsets, sizes, ident_range, block_rows, rank, key, seed,
                 min_keep, comm, device, progress):
        self.src, self.order, self.min_keep, self.comm = src, order, min_keep, comm
        self.offsets, self.sizes = offsets, sizes
        self.rank_kind, self.key, self.seed, self.device = rank, key, seed, device
        self.off_np = offsets.numpy()
        self.c_lo, self.c_hi = ident_range
        self.blocks = _blocks(self.off_np, self.c_lo, self.c_hi, block_rows)
        self.ranked = False
        self.passes = 0
        self.seconds = {"read": 0.0, "rank": 0.0, "nms": 0.0}
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=int(self.off_np[self.c_hi] - self.off_np[self.c_lo]),
                            unit="face", desc="facenms", leave=False, dynamic_ncols=True)

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
        ranking = not self.ranked
        with ThreadPoolExecutor(1) as pool:  # reads the next block while this one runs
            nxt = pool.submit(self._load, 0) if self.blocks else None
            for k, (c0, c1) in enumerate(self.blocks):
                x_h, local, rows = nxt.result()
                if k + 1 < len(self.blocks):
                    nxt = pool.submit(self._load, k + 1)
                a, b = int(self.off_np[c0]), int(self.off_np[c1])
                x = x_h.to(self.device)
                local = local.to(self.device)
                off = (self.offsets[c0:c1 + 1] - a).to(self.device)
                if ranking:
                    t = time.perf_counter()
                    try:
                        local = self._rank_block(x, local, off, self.sizes[c0:c1], rows)
                    except ValueError:  # a bad row: find the first one in caller order
                        row, kind = _first_bad_row(x_h, local, rows)
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
        if ranking:
            self._raise_if_bad(bad)
            self.ranked = True

    def _rank_block(self, x, local, off, sizes, rows):
        if self.key is None:
            return sel._rank(x, local, off, sizes, self.rank_kind, None, self.seed)
        # random and user scores rank by a per-face key of the whole set
        key = self.key if rows is None else self.key[torch.from_numpy(rows)]
        key = key.to(x.device)
        return sel._rank(x, local, off, sizes, "scores", key, self.seed)

    def _raise_if_bad(self, bad):
        """Every rank learns the first bad row over all ranks, so all raise together."""
        n = int(self.off_np[-1])
        code = torch.tensor([2 * n + 2 if bad is None else 2 * bad[0] + bad[1]],
                            dtype=torch.int64)
        code = int(self.comm.min(code))
        if code < 2 * n + 2:
            raise ValueError(_bad_row_message(code // 2, code % 2))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _first_bad_row(x, local, rows):
    """(caller row, 0 for zero norm / 1 for non-finite) of the first bad row of a block."""
    norms = x[local].double().norm(dim=1).cpu()
    bad = torch.nonzero(~torch.isfinite(norms) | (norms == 0)).reshape(-1)
    glob = local.cpu()[bad].numpy() if rows is None else rows[local.cpu()[bad].numpy()]
    i = int(np.argmin(glob))
    return int(glob[i]), 0 if float(norms[bad[i]]) == 0 else 1


def _blocks(offsets, c_lo, c_hi, rows):
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
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
                or block_size < 1:
            raise ValueError("block_size must be a positive number of faces, got %r"
                             % (block_size,))
        return int(block_size)
    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError("max_memory must be a positive number of bytes, got %r" % (max_memory,))
    return max(1, int(budget) // (2 * max(1, d * itemsize)))


# ------------------------------------------------------------------- API ----

def _sample_rows(src, order, offsets, sizes, seed):
    """Features and an order for selection._sample_lanes that hold only the rows
    of the identities it samples (read here, in one sorted gather). The order
    points every other position at row 0; the sample never reads those."""
    take = sel._sample_take(offsets, sizes, seed)
    if take is None:  # no sample is drawn: nothing to read
        return torch.zeros(1, 1), torch.zeros_like(order)
    pos = torch.repeat_interleave(offsets[take], sizes[take]) + sel._arange_within(sizes[take])
    x_s, local, _ = src.load(order[pos].numpy())
    order_s = torch.zeros_like(order)
    order_s[pos] = local.to(order_s.device)
    return x_s, order_s


def _comm(distributed):
    if distributed is False or (distributed is None and not active()):
        return Comm.single()
    init()
    return Comm()


def select(features, labels, ratio=None, threshold=None, *, scores=None, rank=None,
           min_per_identity=1, per_identity=False, seed=0, device=None, return_info=False,
           progress=False, block_size=None, max_memory=None, distributed=None):
    """facenms.select over blocks of identities; see its documentation.

    Every rank of a process group gets the same answer.
    """
    t0 = time.perf_counter()
    rank = sel._validate(ratio, threshold, rank, scores, min_per_identity, per_identity)
    features = open_features(features)
    if isinstance(labels, (str, os.PathLike)):
        labels = np.load(os.fspath(labels))
    comm = _comm(distributed)
    if isinstance(features, np.ndarray):
        sel._check_features(sel.as_tensor(features[:0], "features"))  # dtype and shape only
        if _is_mapped(features) and features.shape[1] > 1 \
                and features.strides[1] != features.itemsize:
            raise ValueError("memory-mapped features must have contiguous rows, got strides %s"
                             % (features.strides,))
        src = _Reader(features)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        n, d, itemsize = features.shape[0], features.shape[1], features.itemsize
    else:  # a tensor (or DLPack array) already in memory: blocks are read in place
        x = sel._check_features(sel.as_tensor(features, "features"))
        if device is not None:
            x = x.to(device)
        src = _InPlace(x)
        dev = x.device
        n, d, itemsize = x.shape[0], x.shape[1], x.element_size()
    uniq, order, offsets, sizes = sel._group(labels, n, torch.device("cpu"))
    key = None
    if scores is not None:
        key = sel.check_scores(scores, n, "cpu")
    elif rank == "random":  # the same draw as the in-memory path
        key = torch.from_numpy(np.random.default_rng(seed).permutation(n).astype(np.float64))
    bounds = split_identities(sizes.numpy(), comm.world)
    c_lo, c_hi = int(bounds[comm.rank]), int(bounds[comm.rank + 1])
    rows = block_rows(d, itemsize, block_size, max_memory)
    timings = {"group": time.perf_counter() - t0}

    t2 = time.perf_counter()
    m = int(min_per_identity)
    run = _BlockRunner(src, order, offsets, sizes, (c_lo, c_hi), rows, rank, key, seed, m, comm,
                       dev, progress and comm.rank == 0)
    thr_used, per_thr = None, None
    try:
        if n == 0:
            keep_pos = torch.zeros(0, dtype=torch.bool)
            thr_used = float(threshold) if threshold is not None else None
        elif threshold is not None:
            bits, _ = run(torch.tensor([float(threshold)], dtype=torch.float64))
            keep_pos = (bits & 1).bool()
            thr_used = float(threshold)
        elif not per_identity:
            run.rank()
            if comm.world > 1:  # the sample below may pick any rank's identities
                a, b = int(offsets[c_lo]), int(offsets[c_hi])
                mine = torch.zeros_like(order)
                mine[a:b] = order[a:b]
                order = comm.sum(mine)
            x_s, order_s = _sample_rows(src, order, offsets, sizes, seed)
            first = sel._sample_lanes(x_s.to(dev), order_s.to(dev), offsets.to(dev),
                                      sizes.to(dev), m, float(ratio), seed)
            del x_s, order_s
            # the same search and tolerance as selection.select
            best = sel._search(run, round(float(ratio) * n), first, max_passes=5,
                               tol=n // 10_000)
            keep_pos = ((best.bits >> best.lane) & 1).bool()
            thr_used = best.t
        else:
            keep_pos, per_thr = sel._per_identity(run, sizes, float(ratio), m)
    finally:
        run.close()
    # rank / nms: time in those steps; read: time reading blocks (overlaps them);
    # passes: wall time of all reads and passes
    timings["passes"] = time.perf_counter() - t2
    timings.update(run.seconds)

    a, b = int(offsets[c_lo]), int(offsets[c_hi])
    mine = run.order[a:b][keep_pos[a:b]]
    kept_per = torch.zeros(len(uniq), dtype=torch.int64)
    if n > 0:
        seg = torch.repeat_interleave(torch.arange(c_lo, c_hi), sizes[c_lo:c_hi])
        kept_per.index_add_(0, seg, keep_pos[a:b].long())
    if comm.world > 1:
        mask = torch.zeros(n, dtype=torch.uint8)
        mask[mine] = 1
        result = torch.nonzero(comm.sum(mask)).reshape(-1)
        kept_per = comm.sum(kept_per)
    else:
        result = torch.sort(mine).values
    out = sel._to_family(result.to(dev), features)
    timings["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    kept = int(result.numel())
    info = sel.SelectionInfo(
        threshold=thr_used, ratio=kept / n if n else 0.0,
        target_ratio=None if ratio is None else float(ratio), kept=kept, n_faces=n,
        identities=uniq, faces_per_identity=sizes.numpy(), kept_per_identity=kept_per.numpy(),
        thresholds=None if per_thr is None else per_thr.cpu().numpy(),
        passes=run.passes, timings=timings)
    return out, info


class _InPlace:
    """A tensor already in memory (CPU or GPU): blocks index it without copying."""

    def __init__(self, x):
        self.x = x

    def load(self, pos):
        return self.x, torch.from_numpy(pos), None

