"""The files beside a .rec: where its .idx and property live, reading the .idx, and a
cheap content check of the .rec (a CRC of a sample of its bytes)."""
import os
import warnings
import zlib

import numpy as np

__all__ = ["default_idx_path", "property_path", "read_idx", "sample_crc"]


def default_idx_path(rec_path):
    rec_path = os.fspath(rec_path)
    base = rec_path[:-4] if rec_path.endswith(".rec") else rec_path
    return base + ".idx"


def property_path(rec_path):
    """Where the `num_classes,h,w` file of a .rec lives: `property` beside train.rec
    (insightface's name, what MXFaceDataset reads), PREFIX.property beside any other
    PREFIX.rec, so two datasets in one folder never share one."""
    rec_path = os.fspath(rec_path)
    folder = os.path.dirname(os.path.abspath(rec_path))
    if os.path.basename(rec_path) == "train.rec":
        return os.path.join(folder, "property")
    base = os.path.basename(rec_path[:-4] if rec_path.endswith(".rec") else rec_path)
    return os.path.join(folder, base + ".property")


def read_idx(idx_path):
    """(keys, offsets, crc32 of the file, its size), keys and offsets int64 in file order."""
    try:
        with open(idx_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        rec = idx_path[:-4] + ".rec" if idx_path.endswith(".idx") else "FILE.rec"
        raise FileNotFoundError("RecordIO index %s not found (it lists `key\\toffset` "
                                "per record); rebuild it from the .rec with `facenms index %s`"
                                % (idx_path, rec)) from None
    lines = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)
    try:
        # fromstring parses tens of millions of lines without a Python object per token
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            vals = np.fromstring(raw.decode("ascii"), dtype=np.int64, sep=" ")
    except (ValueError, UnicodeDecodeError, DeprecationWarning):
        vals = None
    if vals is None or len(vals) != 2 * lines:
        raise ValueError("%s: malformed index, expected one `key\\toffset` line of two "
                         "integers per record" % idx_path)
    pairs = vals.reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy(), zlib.crc32(raw), len(raw)


def sample_crc(fd, size, edge=1 << 16, block=1 << 12, blocks=64):
    """CRC-32 of a sample of a .rec's bytes (open file descriptor fd, `size` bytes): its
    first and last 64 KiB and 64 blocks of 4 KiB spread evenly between. What ties a
    labels sidecar to the records cheaply: records in another order, other images of
    the same sizes or a rewritten stretch change it."""
    if size <= 2 * edge + blocks * block:
        spots = [(0, size)]
    else:
        step = (size - 2 * edge - block) // (blocks - 1)
        spots = [(0, edge), (size - edge, edge)] + [(edge + k * step, block)
                                                   for k in range(blocks)]
    crc = zlib.crc32(b"%d:" % size)
    for pos, n in spots:
        data = os.pread(fd, n, pos)
        if len(data) != n:
            raise ValueError("file shorter than %d bytes" % size)
        crc = zlib.crc32(data, crc)
    return crc
