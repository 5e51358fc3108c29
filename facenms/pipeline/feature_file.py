"""The extraction's output while it runs, and how a run resumes it.

    features.npy.partial     the .npy being filled (valid header, N x d float16)
    features.npy.progress    8 bytes per batch: "done" and the CRC-32 of its rows,
                             written once the rows are on disk
    features.npy.state.json  the settings the partial file was made with

When every batch is done, the labels and ``features.npy.json`` (the settings)
are written and the partial file is renamed to ``features.npy``: a file under
the final name is always complete. A resume first checks every batch marked
done against its CRC and redoes those that fail; a partial file of the wrong
size is started afresh.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np

from ..io import AtomicFiles, fsync_dir, pwrite_all, read_npy_header
from . import runtime as rt

FORMAT = "facenms-features/2"
MARK = struct.Struct("<4sI")  # b"done", CRC-32 of the batch's row bytes; zeros: to do
DONE = b"done"


def batches_done(progress_path):
    """Which batches a progress file marks done (bool per batch)."""
    marks = np.fromfile(progress_path, np.uint8)
    marks = marks[:len(marks) // MARK.size * MARK.size].reshape(-1, MARK.size)
    return (marks[:, :4] == np.frombuffer(DONE, np.uint8)).all(1)


def output_paths(out_path, labels_path):
    """Every file of one extraction, by role."""
    out = os.fspath(out_path)
    if labels_path is None:
        labels_path = os.path.join(os.path.dirname(os.path.abspath(out)), "labels.npy")
    return dict(out=out, labels=os.fspath(labels_path), meta=out + ".json",
                partial=out + ".partial", progress=out + ".progress",
                state=out + ".state.json")


def _diff(old, new):
    return ["%s: %r before, %r now" % (k, old.get(k), new[k]) for k in new
            if old.get(k) != new[k]]


def open_partial(paths, config, labels, resume, n_batches):
    """Rank 0: make or reuse the partial file; returns 'done' when the final
    outputs already match, else None."""
    if resume and os.path.exists(paths["out"]):
        meta = rt.read_json(paths["meta"])
        if meta is not None and meta.get("config") == config:
            if not os.path.exists(paths["labels"]):  # lost or moved since: cheap to redo
                with AtomicFiles() as files:
                    np.save(files.open(paths["labels"]), labels)
            return "done"
        why = ("it has no settings file %s" % paths["meta"] if meta is None else
               "it was made with other settings (%s)"
               % "; ".join(_diff(meta.get("config", {}), config)))
        raise ValueError("features %s exist but %s; delete them or pass resume=False"
                         % (paths["out"], why))
    state = rt.read_json(paths["state"]) if resume else None
    if state is not None and state.get("format") != FORMAT:
        state = None  # an older layout of the progress file: start afresh
    if state is not None and state.get("config") != config:
        raise ValueError("cannot resume the extraction in %s, it was started with other "
                         "settings (%s); delete %s or pass resume=False" % (
                             paths["partial"], "; ".join(_diff(state.get("config", {}), config)),
                             paths["state"]))
    if state is not None:
        why = _unusable(paths, config, n_batches)
        if why is None:
            _verify(paths, config, n_batches)
            return None
        print("extract: %s %s; starting afresh" % (paths["partial"], why), file=sys.stderr,
              flush=True)
    _start(paths, config, n_batches)
    return None


def _unusable(paths, config, n_batches):
    """Why the partial and progress files cannot be resumed, or None."""
    for k in ("partial", "progress"):
        if not os.path.exists(paths[k]):
            return "has no %s file %s" % (k, paths[k])
    try:
        h = read_npy_header(paths["partial"], check_size=False)  # the size is told below
    except (ValueError, OSError) as e:
        return "has an unreadable header (%s)" % e
    if h.shape != (config["n"], config["dim"]) or h.dtype != np.float16:
        return "holds %s %s, not %d x %d float16" % (h.dtype, h.shape, config["n"],
                                                      config["dim"])
    want = h.offset + config["n"] * config["dim"] * 2
    if os.path.getsize(paths["partial"]) != want:
        return "is %d bytes, not %d (truncated?)" % (os.path.getsize(paths["partial"]), want)
    if os.path.getsize(paths["progress"]) != n_batches * MARK.size:
        return "has a progress file of %d bytes, not %d" % (
            os.path.getsize(paths["progress"]), n_batches * MARK.size)
    return None


def _verify(paths, config, n_batches):
    """Clears the done mark of every batch whose rows fail their CRC (flipped
    bytes, rows that never reached the disk, a forged mark)."""
    out = Rows(paths["partial"], paths["progress"], config["batch_size"])
    bad = []
    try:
        for k in np.flatnonzero(batches_done(paths["progress"])):
            mark = MARK.unpack(os.pread(out.marks, MARK.size, int(k) * MARK.size))
            if mark[1] != zlib.crc32(out.read_batch(int(k), config["n"])):
                bad.append(int(k))
        out.clear(bad)
    finally:
        out.close()
    if bad:
        print("extract: %d batch%s of %s marked done fail their checksum (batch %s); "
              "redoing them" % (len(bad), "es" if len(bad) > 1 else "", paths["partial"],
                                ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")),
              file=sys.stderr, flush=True)


def _start(paths, config, n_batches):
    for k in ("state", "partial", "progress", "meta", "out"):
        if os.path.exists(paths[k]):
            os.unlink(paths[k])
    os.makedirs(os.path.dirname(os.path.abspath(paths["out"])), exist_ok=True)
    mm = np.lib.format.open_memmap(paths["partial"], mode="w+", dtype=np.float16,
                                   shape=(config["n"], config["dim"]))
    mm.flush()
    del mm
    with open(paths["progress"], "wb") as f:
        f.truncate(n_batches * MARK.size)
    rt.atomic_write_text(json.dumps(dict(format=FORMAT, config=config), indent=1), paths["state"])


class Rows:
    """Writes feature rows into the partial .npy and done-marks into the progress
    file with pwrite rather than through a memory map: ranks on several nodes
    may share one file on a network file system, and there a memory map writes
    back whole pages, which can overwrite a neighbour's rows with stale bytes;
    a pwrite sends only its own byte range."""

    def __init__(self, partial, progress, batch_size):
        h = read_npy_header(partial, check_size=False)
        self.offset, self.row_bytes = h.offset, h.shape[1] * h.dtype.itemsize
        self.batch_size = batch_size
        self.rows = os.open(partial, os.O_RDWR)
        self.marks = os.open(progress, os.O_RDWR)

    def write(self, row, values):
        """Writes float16 rows from `row` on; returns their CRC-32."""
        values = np.ascontiguousarray(values, np.float16)
        pwrite_all(self.rows, values, self.offset + row * self.row_bytes)
        return zlib.crc32(values)

    def read_batch(self, k, n):
        start = k * self.batch_size
        size = (min(n, start + self.batch_size) - start) * self.row_bytes
        return os.pread(self.rows, size, self.offset + start * self.row_bytes)

    def mark_done(self, batches):
        """batches: (k, crc) pairs whose rows are written."""
        if not batches:
            return
        os.fsync(self.rows)  # rows reach the disk before their batch is marked done
        for k, crc in batches:
            pwrite_all(self.marks, MARK.pack(DONE, crc), int(k) * MARK.size)
        os.fsync(self.marks)

    def clear(self, batches):
        for k in batches:
            pwrite_all(self.marks, bytes(MARK.size), int(k) * MARK.size)
        if batches:
            os.fsync(self.marks)

    def close(self):
        os.close(self.rows)
        os.close(self.marks)


def finish(paths, config, labels, n_batches):
    """Rank 0, once every rank is done: labels and settings, then the features under
    their final name (last: the features appear only when complete)."""
    left = int((~batches_done(paths["progress"])).sum())
    if left:
        raise RuntimeError("%d of %d batches of %s are not done after every rank finished"
                           % (left, n_batches, paths["partial"]))
    with AtomicFiles() as files:
        np.save(files.open(paths["labels"]), labels)
        files.open(paths["meta"], "w").write(json.dumps(
            dict(format=FORMAT, config=config, labels=paths["labels"]), indent=1))
    os.replace(paths["partial"], paths["out"])
    fsync_dir(os.path.dirname(os.path.abspath(paths["out"])))
    for k in ("progress", "state"):
        os.unlink(paths[k])
