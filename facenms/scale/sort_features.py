"""Rewrite a feature file in identity order, in one pass with bounded memory.

Streaming selection reads one block of consecutive identities at a time; when
the file holds each identity's faces together (in ascending label order) every
block is one sequential read. ``sort_features`` makes such a file:

    facenms sort-features feats.npy feats_sorted.npy --labels labels.npy

writes ``feats_sorted.npy`` (row i = row perm[i] of the input),
``feats_sorted.perm.npy`` (perm, int64), ``feats_sorted.labels.npy``
(labels[perm]) and, last, ``feats_sorted.sorted.json``, which ties the three
together. ``facenms select`` on a sorted file maps its result back through
perm, so the indices it writes are positions in the dataset, as ``export``
expects (see ``dataset_order``). Faces keep their relative order within an identity (a stable
sort), so rank="sparsity"/"centrality" selections on the sorted file, mapped
back through perm, equal those on the original (rank="random" draws by row
and user scores must be permuted with perm).

Output rows are produced in order, a block at a time: the block's source rows
are gathered from the input (ascending, so reads go forward through the file)
and appended to the output. Resident memory: one block plus perm and labels
(16 bytes a face). All three outputs are written under temporary names and
renamed when complete.
"""
import json
import os

import numpy as np

from ..io import AtomicFiles, check_not_inputs, file_identity
from .blocks import block_rows
from .reader import Reader, open_features, open_labels


FORMAT = "facenms-sorted/1"


def side_paths(out):
    """Default (perm, sorted labels) paths beside a sorted features file."""
    stem = out[:-4] if out.endswith(".npy") else out
    return stem + ".perm.npy", stem + ".labels.npy"


def manifest_path(out):
    stem = out[:-4] if out.endswith(".npy") else out
    return stem + ".sorted.json"


def dataset_order(features_path):
    """For a file written by sort_features: (perm, sorted labels path); None for any
    other file. ValueError when its side files do not belong to it (a sort that
    was interrupted between renames, or files from another run)."""
    path = os.fspath(features_path)
    man, perm_path = manifest_path(path), side_paths(path)[0]
    if not os.path.exists(man):
        if os.path.exists(perm_path):
            raise ValueError("%s lies beside %s but %s is missing: the sort was interrupted; "
                             "run facenms sort-features again" % (perm_path, path, man))
        return None
    try:
        with open(man) as f:
            doc = json.load(f)
        ok = doc.get("format") == FORMAT and doc["features"] == file_identity(path) and \
            doc["perm"][1] == file_identity(doc["perm"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise ValueError("%s does not match %s or its permutation (replaced or rewritten "
                         "since it was sorted?); run facenms sort-features again" % (man, path))
    return np.load(doc["perm"][0]), doc["labels"][0]


def sort_features(features, labels, out, perm_out=None, labels_out=None, block_size=None,
                  max_memory=None, progress=None):
    """Write `features` (a .npy path or array) in ascending label order to `out`.

    Returns (perm, sorted labels). `progress`, if given, is called with the
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
    check_not_inputs([out, perm_out, labels_out, manifest_path(out)],
                     [p for p in (features, labels_arg) if isinstance(p, (str, os.PathLike))])
    if len({os.path.abspath(p) for p in (out, perm_out, labels_out)}) < 3:
        raise ValueError("sort-features needs three different output files, got %s, %s, %s"
                         % (out, perm_out, labels_out))

    perm = np.argsort(labels, kind="stable").astype(np.int64)
    rows = block_rows(x.shape[1], x.itemsize, block_size, max_memory)
    reader = Reader(x)
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False,
              "shape": x.shape}
    with AtomicFiles() as files:
        f = files.open(out, "wb")
        np.lib.format.write_array_header_2_0(f, header) if x.shape[0] >= 2 ** 31 else \
            np.lib.format.write_array_header_1_0(f, header)
        for i in range(0, x.shape[0], rows):
            want = perm[i:i + rows]
            src = np.sort(want)
            block = reader.read(src)[np.searchsorted(src, want)]
            f.write(memoryview(np.ascontiguousarray(block)).cast("B"))
            if progress is not None:
                progress(min(i + rows, x.shape[0]))
        np.save(files.open(perm_out), perm)
        np.save(files.open(labels_out), labels[perm])
    with AtomicFiles() as files:  # last: it vouches for the three files above
        doc = dict(format=FORMAT, n=int(x.shape[0]), features=file_identity(out),
                   perm=[os.path.abspath(perm_out), file_identity(perm_out)],
                   labels=[os.path.abspath(labels_out), file_identity(labels_out)])
        files.open(manifest_path(out), "w").write(json.dumps(doc, indent=1))
    return perm, labels[perm]
