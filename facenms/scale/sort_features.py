"""Rewrite a feature file in identity order, in one pass with bounded memory.

Streaming selection reads one block of consecutive identities at a time; when
the file holds each identity's faces together (in ascending label order) every
block is one sequential read. ``sort_features`` makes such a file:

    facenms sort-features feats.npy feats_sorted.npy --labels labels.npy

writes ``feats_sorted.npy`` (row i = row perm[i] of the dataset),
``feats_sorted.perm.npy`` (perm, int64) and ``feats_sorted.labels.npy``
(labels[perm]), committed together. The sorted file carries its own order: after
its array data comes a trailer (numpy ignores bytes after the data, so np.load
and np.memmap read the array as ever) holding perm, its SHA-256, and the SHA-256
of the labels in the dataset's order and in the sorted order. ``facenms select``
and ``report`` read the order from the file itself (see ``dataset_order``), so a
copy, a rename or a lost side file changes nothing, and labels that are neither
of the two hashed are refused. Faces keep their relative order within an
identity (a stable sort), so rank="sparsity"/"centrality" selections on the
sorted file, mapped back through perm, equal those on the original (rank="random"
draws by row and user scores must be permuted with perm). Sorting a sorted file
again composes the orders: perm stays relative to the dataset.

Output rows are produced in order, a block at a time: the block's source rows
are gathered from the input (ascending, so reads go forward through the file)
and appended to the output. Resident memory: one block plus perm and labels
(16 bytes a face). All three outputs are written under temporary names and
renamed together under a journal, so a kill leaves the old sort or the new one
(the next command in that folder finishes a half-done rename).
"""
import hashlib
import json
import os
import struct
from typing import NamedTuple

import numpy as np

from ..io import AtomicFiles, check_not_inputs, read_npy_header
from .blocks import block_rows
from .reader import Reader, open_features, open_labels


FORMAT = "facenms-sorted/2"
END = b"FNMSORT2"
TAIL = struct.Struct("<Q8s")  # length of the JSON before it, END
LEGACY = "facenms-sorted/1"  # an order kept in a side manifest (X.sorted.json), not trusted


class Order(NamedTuple):
    """The order a sorted file is in: row i is row perm[i] of the dataset."""
    perm: np.ndarray
    labels_sha256: str  # of the labels in the dataset's order (as int64)
    sorted_labels_sha256: str  # of labels[perm]


def side_paths(out):
    """Default (perm, sorted labels) paths beside a sorted features file."""
    stem = out[:-4] if out.endswith(".npy") else out
    return stem + ".perm.npy", stem + ".labels.npy"


def labels_sha256(labels):
    """SHA-256 of labels as little-endian int64 (uint64 above 2^63): one value whatever
    integer dtype holds them."""
    a = np.asarray(labels)
    big = a.dtype.kind == "u" and a.size and int(a.max()) >= 1 << 63
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<u8" if big else "<i8").data
                          ).hexdigest()


def _damaged(path, why):
    return ValueError("%s: %s; its order cannot be trusted: run facenms sort-features "
                      "again" % (path, why))


def _legacy(path):
    """An older sort's side manifest beside a file without a trailer: refused."""
    stem = path[:-4] if path.endswith(".npy") else path
    man = stem + ".sorted.json"
    try:
        with open(man) as f:
            legacy = json.load(f).get("format") == LEGACY
    except (OSError, ValueError, AttributeError):
        return
    if legacy:
        raise ValueError("%s: %s says it was sorted by an older facenms, whose order does not "
                         "travel with the file; run facenms sort-features again (or delete %s "
                         "if %s is not a sorted file)" % (path, man, man, path))


def dataset_order(features_path):
    """The Order of a file written by sort_features; None for a plain .npy.

    ValueError when bytes follow the array but are not a whole, consistent trailer
    (a truncated or damaged sorted file).
    """
    path = os.fspath(features_path)
    h = read_npy_header(path, "features")
    end = h.offset + h.nbytes
    if h.size == end:
        _legacy(path)
        return None
    n = h.shape[0] if h.shape else 0
    with open(path, "rb") as f:
        if h.size - end < TAIL.size + 8 * n:
            raise _damaged(path, "%d bytes follow its array data, too few for a sort trailer"
                           % (h.size - end))
        f.seek(h.size - TAIL.size)
        size, magic = TAIL.unpack(f.read(TAIL.size))
        if magic != END or size != h.size - TAIL.size - end - 8 * n:
            raise _damaged(path, "%d bytes follow its array data but they are not a whole "
                           "facenms sort trailer" % (h.size - end))
        f.seek(end + 8 * n)
        try:
            doc = json.loads(f.read(size))
            ok = doc["format"] == FORMAT and doc["n"] == n
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise _damaged(path, "its sort trailer is unreadable or for another file")
        f.seek(end)
        perm = np.fromfile(f, dtype="<i8", count=n)
    if hashlib.sha256(perm.data).hexdigest() != doc.get("perm_sha256"):
        raise _damaged(path, "its permutation does not match its checksum")
    return Order(perm.astype(np.int64), doc.get("labels_sha256"),
                 doc.get("sorted_labels_sha256"))


def labels_in_file_order(order, labels, path):
    """(labels in the sorted file's row order, True when they were given in the dataset's
    order); ValueError unless they are the labels the file was sorted with."""
    labels = np.asarray(labels)
    n = len(order.perm)
    if labels.shape != (n,):
        raise ValueError("labels have shape %s, %s has %d rows" % (labels.shape, path, n))
    digest = labels_sha256(labels)
    if digest == order.sorted_labels_sha256:
        return labels, False
    if digest == order.labels_sha256:
        return labels[order.perm], True
    raise ValueError("%s: these labels are not the ones it was sorted with (neither in the "
                     "dataset's order nor in the sorted order); give the labels of that sort "
                     "(its .labels.npy, or the dataset's)" % path)


def _trailer(perm, labels_ds, labels_sorted, data_end):
    """The bytes after a sorted file's array data: perm, then its JSON and the tail."""
    raw = np.ascontiguousarray(perm, dtype="<i8")
    doc = json.dumps(dict(format=FORMAT, n=len(raw), perm_at=data_end,
                          perm_sha256=hashlib.sha256(raw.data).hexdigest(),
                          labels_sha256=labels_sha256(labels_ds),
                          sorted_labels_sha256=labels_sha256(labels_sorted))).encode()
    return raw, doc + TAIL.pack(len(doc), END)


def _input_order(features, labels, n):
    """(dataset perm of the input's rows or None, labels in the input's row order, labels
    in the dataset's order): an input that is itself a sorted file keeps its order."""
    order = dataset_order(features) if isinstance(features, (str, os.PathLike)) else None
    if order is None:
        return None, labels, labels
    if labels.shape != (n,):
        return None, labels, labels  # told below
    in_file, given_ds = labels_in_file_order(order, labels, os.fspath(features))
    if given_ds:
        return order.perm, in_file, labels
    ds = np.empty_like(labels)
    ds[order.perm] = labels
    return order.perm, in_file, ds


def sort_features(features, labels, out, *, perm_out=None, labels_out=None, block_size=None,
                  max_memory=None, progress=None):
    """Write `features` (a .npy path or array) in ascending label order to `out`.

    `labels` are in the input's row order (for an input that is itself a sorted
    file, the dataset's order works too). Returns (perm, sorted labels). `progress`, if given, is called with the
    number of rows written so far.
    """
    x = open_features(features)
    labels_arg = labels
    labels = open_labels(labels)
    labels = np.asarray(labels)
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError("features must be a 2-D numpy array or .npy file, got %s"
                         % (getattr(x, "shape", type(x).__name__),))
    if x.dtype not in (np.float16, np.float32, np.float64):  # what select reads
        raise TypeError("features must be float16, float32 or float64, got %s" % x.dtype)
    if labels.dtype.kind not in "iu":
        raise TypeError("labels must be integers, got %s" % labels.dtype)
    if labels.shape != (x.shape[0],):
        raise ValueError("labels must be 1-D with one label per face (%d), got shape %s"
                         % (x.shape[0], labels.shape))
    out = os.fspath(out)
    side = side_paths(out)
    perm_out = os.fspath(perm_out) if perm_out is not None else side[0]
    labels_out = os.fspath(labels_out) if labels_out is not None else side[1]
    check_not_inputs([out, perm_out, labels_out],
                     [p for p in (features, labels_arg) if isinstance(p, (str, os.PathLike))])
    if len({os.path.abspath(p) for p in (out, perm_out, labels_out)}) < 3:
        raise ValueError("sort-features needs three different output files, got %s, %s, %s"
                         % (out, perm_out, labels_out))

    before, labels, labels_ds = _input_order(features, labels, x.shape[0])
    local = np.argsort(labels, kind="stable").astype(np.int64)
    perm = local if before is None else before[local]  # always relative to the dataset
    rows = block_rows(x.shape[1], x.itemsize, block_size, max_memory)
    reader = Reader(x)
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False,
              "shape": x.shape}
    with AtomicFiles() as files:  # one group: the old sort or the new one, never a mix
        # every temporary first: an output that cannot be written fails before the copy
        f, perm_f, labels_f = (files.open(p, "wb") for p in (out, perm_out, labels_out))
        np.lib.format.write_array_header_2_0(f, header) if x.shape[0] >= 2 ** 31 else \
            np.lib.format.write_array_header_1_0(f, header)
        for i in range(0, x.shape[0], rows):
            want = local[i:i + rows]
            src = np.sort(want)
            block = reader.read(src)[np.searchsorted(src, want)]
            f.write(memoryview(np.ascontiguousarray(block)).cast("B"))
            if progress is not None:
                progress(min(i + rows, x.shape[0]))
        raw, tail = _trailer(perm, labels_ds, labels[local], f.tell())
        f.write(memoryview(raw).cast("B"))
        f.write(tail)
        np.save(perm_f, perm)
        np.save(labels_f, labels[local])
    return perm, labels[local]
