"""Rebuilding a .rec file's .idx by scanning its frames (as DALI's rec2idx), for a .rec
written without one (rec2shufrec.py) or whose index was lost."""
import os

from ..io import AtomicFiles, check_not_inputs
from .recfiles import default_idx_path, property_path
from .recordio import FRAME, LEN_MASK, MAGIC, pad_length

__all__ = ["scan_records", "build_index", "companion_files"]


def companion_files(rec_path):
    """The files that belong to a .rec's dataset besides its .idx: its property (and the
    folder's shared `property`), the labels sidecar and the label map."""
    rec_path = os.fspath(rec_path)
    base = rec_path[:-4] if rec_path.endswith(".rec") else rec_path
    folder = os.path.dirname(os.path.abspath(rec_path))
    return [property_path(rec_path), os.path.join(folder, "property"), base + ".labels.npz",
            base + ".label_map.npy", os.path.join(folder, "label_map.npy")]


def _looks_like_index(path):
    """An existing file `--force` may replace: empty, or `key\toffset` lines."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return not head.translate(None, b"0123456789\t\n\r -")


def scan_records(rec_path):
    """Yield the byte offset of every record of a .rec file, in file order, by its frames.

    Split records (cflag 1, 2.., 3) count once, at their first frame. Raises
    ValueError naming the file and byte position where the frames stop making sense.
    """
    rec_path = os.fspath(rec_path)
    size = os.path.getsize(rec_path)
    with open(rec_path, "rb", buffering=1 << 20) as f:
        pos, start, inside = 0, None, False
        while pos < size:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                raise ValueError("%s: truncated frame header at byte %d (file is %d bytes)"
                                 % (rec_path, pos, size))
            magic, lrec = FRAME.unpack(head)
            if magic != MAGIC:
                raise ValueError("%s: bad magic 0x%08x at byte %d, expected 0x%08x: not a "
                                 "RecordIO file, or damaged there" % (rec_path, magic, pos, MAGIC))
            length, cflag = lrec & LEN_MASK, lrec >> 29
            if pos + FRAME.size + pad_length(length) > size:
                raise ValueError("%s: truncated record at byte %d: its frame needs %d bytes, "
                                 "only %d left" % (rec_path, pos, pad_length(length),
                                                   size - pos - FRAME.size))
            if cflag in (0, 1):
                if inside:
                    raise ValueError("%s: split record at byte %d never ends" % (rec_path, start))
                start = pos
                inside = cflag == 1
                if cflag == 0:
                    yield start
            elif cflag in (2, 3):
                if not inside:
                    raise ValueError("%s: continuation frame at byte %d outside a split record"
                                     % (rec_path, pos))
                if cflag == 3:
                    inside = False
                    yield start
            else:
                raise ValueError("%s: frame at byte %d has cflag %d" % (rec_path, pos, cflag))
            f.seek(pad_length(length), 1)
            pos += FRAME.size + pad_length(length)
        if inside:
            raise ValueError("%s: split record at byte %d cut off by the end of the file"
                             % (rec_path, start))


def build_index(rec_path, idx_path=None, overwrite=False):
    """Write the .idx of a .rec by scanning it: keys 0..n-1 in file order (as DALI's rec2idx).

    The .idx is written atomically; an existing one is kept unless overwrite=True.
    Returns (idx path, number of records).
    """
    rec_path = os.fspath(rec_path)
    idx_path = os.fspath(idx_path) if idx_path is not None else default_idx_path(rec_path)
    if not os.path.isfile(rec_path):
        raise FileNotFoundError("RecordIO file %s not found" % rec_path)
    # an index never replaces its dataset: the .rec, its property or sidecar (links and
    # other spellings included), another .rec, or a file that is no index
    check_not_inputs([idx_path], [rec_path] + companion_files(rec_path))
    if not idx_path.endswith(".idx"):
        raise ValueError("%s: an index file's name ends in .idx (refusing to write an index "
                         "anywhere else)" % idx_path)
    if os.path.isdir(idx_path):
        raise IsADirectoryError("%s is a folder, not an index file" % idx_path)
    if os.path.exists(idx_path) and not overwrite:
        raise FileExistsError("%s already exists; pass --force to rebuild it" % idx_path)
    if os.path.exists(idx_path) and not _looks_like_index(idx_path):
        raise ValueError("%s is not a RecordIO index (not `key\\toffset` lines); --force "
                         "replaces only an index" % idx_path)
    n = 0
    with AtomicFiles() as files:
        with files.open(idx_path, "w") as f:
            for n, off in enumerate(scan_records(rec_path), 1):
                f.write("%d\t%d\n" % (n - 1, off))
        if n == 0:
            raise ValueError("%s: no records" % rec_path)
    return idx_path, n


