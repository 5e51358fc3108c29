"""Rows of a feature array read into RAM: pread() on a memory-mapped .npy,
numpy gathers otherwise."""
import mmap
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..io import load_features, load_labels, pread_all


def is_mapped(a):
    """True for a numpy array whose memory is (a view of) a memory-mapped file."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def nbytes(a):
    if isinstance(a, torch.Tensor):
        return a.numel() * a.element_size()
    return getattr(a, "nbytes", 0)


def is_path(a):
    """A .npy path or an existing file (any other string is a type error later)."""
    return isinstance(a, (str, os.PathLike)) and (
        os.fspath(a).endswith(".npy") or os.path.isfile(a))


def open_features(features):
    """A path to a .npy opens memory-mapped (checked by facenms.io's loader); arrays pass
    through."""
    if isinstance(features, (str, os.PathLike)):
        return load_features(features)
    return features


def open_labels(labels):
    """A path to a .npy of labels is read (checked by facenms.io's loader); arrays pass
    through."""
    if isinstance(labels, (str, os.PathLike)):
        return load_labels(labels)
    return labels


class Reader:
    """Gathers rows of a 2-D numpy array (memory-mapped or not) into RAM.

    Rows are read in ascending order. Rows of a memory-mapped .npy are read
    with pread() straight into the block, one call per run of consecutive
    rows (a file in identity order reads sequentially, with the kernel's
    read-ahead). Pages are never mapped into this process: the page cache may
    hold a file in large folios, and touching one row through the mapping can
    map megabytes of its neighbours. Other arrays are gathered with
    numpy (a shared memory map is then released with madvise(MADV_DONTNEED)).

    pread reads what the array holds only when the mapping is shared (a
    copy-on-write map may hold edits the file does not) and the file under
    the array's name is still the mapped one (re-extraction replaces it with
    os.replace): both are checked here, once, and the file is kept open, so a
    later replacement cannot change what is read.

    lanes: preads in parallel for a large block: one reader thread keeps up with
    a CPU selection on a few cores, not with a GPU one; see read_lanes and
    docs/scale.md for the measured rates.
    """

    def __init__(self, arr, lanes=1):
        self.arr = arr
        self.lanes = max(1, int(lanes))
        self._pool = None
        mm = arr
        while isinstance(mm, np.ndarray) and getattr(mm, "_mmap", None) is None:
            mm = mm.base
        self.mm = mm._mmap if isinstance(mm, np.memmap) else (
            mm if isinstance(mm, mmap.mmap) else None)
        inode, kind = _mapping(arr) if self.mm is not None else (None, None)
        self.shared = kind == "shared"
        self.file = None  # (fd, file position of row 0, bytes between rows)
        name = getattr(arr, "filename", None)  # a str, or the Path np.load was given
        name = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
        if isinstance(arr, np.memmap) and arr.ndim == 2 and self.shared and arr.size and \
                arr.strides[1] == arr.itemsize and arr.strides[0] >= 0 and \
                name is not None and os.path.isfile(name):
            fd = os.open(name, os.O_RDONLY)
            if os.fstat(fd).st_ino == inode:
                # the mapping starts at the granularity boundary below arr.offset
                start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
                base = np.frombuffer(self.mm, dtype=np.uint8, count=1).ctypes.data
                self.file = (fd, start + arr.ctypes.data - base, arr.strides[0])
                weakref.finalize(self, os.close, fd)
            else:  # replaced since it was mapped: read through the mapping
                os.close(fd)

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
        fd, pos0, stride = self.file
        row_bytes = out.shape[1] * out.itemsize
        view = memoryview(out.reshape(len(rows), -1).view(np.uint8)).cast("B")
        if stride != row_bytes:  # padded rows: one read per row
            for i in range(len(rows)):
                pread_all(fd, view[i * row_bytes:(i + 1) * row_bytes],
                          pos0 + int(rows[i]) * stride)
            return out
        runs = [(s * row_bytes, e * row_bytes, pos0 + int(rows[s]) * stride)
                for s, e in zip(starts, ends)]
        lanes = min(self.lanes, len(view) // SPLIT_BYTES)
        if lanes <= 1:
            for a, b, pos in runs:
                pread_all(fd, view[a:b], pos)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="facenms-read")
        cuts = [len(view) * k // lanes for k in range(lanes + 1)]
        done = [self._pool.submit(_pread_range, fd, view, runs, cuts[k], cuts[k + 1])
                for k in range(lanes)]
        for f in done:
            f.result()
        return out

    def load(self, pos):
        """The rows `pos` in RAM: (features, local indices of pos, local -> caller row)."""
        rows = np.sort(pos)
        data = self.read(rows)
        if not data.dtype.isnative:  # a big-endian file: converted a block at a time
            data = data.astype(data.dtype.newbyteorder("="))
        return torch.from_numpy(data), torch.from_numpy(np.searchsorted(rows, pos)), rows

    def release(self):
        """Unmap the pages read so far; never on a private map (that would drop its edits)."""
        if self.shared and hasattr(self.mm, "madvise"):
            try:
                self.mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - not every platform
                pass


def _mapping(arr):
    """(inode, "shared" | "private") of the file mapping that holds arr's data, from
    /proc/self/maps; (None, None) when it cannot be told (then nothing is assumed)."""
    addr = arr.__array_interface__["data"][0]
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                lo, hi = (int(v, 16) for v in fields[0].split("-"))
                if lo <= addr < hi:
                    return int(fields[4]), "shared" if fields[1][3] == "s" else "private"
    except (OSError, ValueError, IndexError):
        pass
    return None, None


SPLIT_BYTES = 16 << 20  # a block is split over lanes in pieces of at least this


def read_lanes(device, cores=None):
    """Parallel preads for a streamed selection on `device`: one below 16 cores for
    the CPU (compute, not the copy, sets the pace there); up to 4 for a GPU, whose
    kernels outrun one reading thread."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    per = 4 if device.type == "cuda" else 16
    return max(1, min(4, cores // per))


def _pread_range(fd, view, runs, lo, hi):
    """The bytes [lo, hi) of a block laid out as runs of (start, end, file position)."""
    for a, b, pos in runs:
        a2, b2 = max(a, lo), min(b, hi)
        if a2 < b2:
            pread_all(fd, view[a2:b2], pos + a2 - a)
