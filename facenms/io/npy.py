"""The one reader of .npy files: every command and every path given to the API opens
its arrays here.

The header is parsed here (never by numpy's fallback tokenizer), checked against the
file's size before any byte of data is read, and the array is then read or
memory-mapped directly. Every malformed file is a one-line error that starts with
its path: ValueError for a broken file (wrong magic, corrupt or oversized header, a
header longer than the file, a body shorter than its shape needs), TypeError for a
dtype that the slot cannot use (objects, records, complex numbers, strings, ...).
Bytes after the array's data are allowed (numpy ignores them; sorted feature files
keep a trailer there).
"""
import ast
import os
import struct
from typing import NamedTuple, Optional, Tuple

import numpy as np

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20  # numpy writes ~128 bytes; a megabyte of header is not a .npy file
KINDS = {
    # slot kind: (allowed dtype kinds, allowed item sizes or None, words for the message)
    "float": ("f", (2, 4, 8), "float16, float32 or float64"),
    "int": ("iu", None, "integers"),
    "number": ("iuf", None, "real numbers (integers or floats)"),
}


class Header(NamedTuple):
    """What a .npy header says, and where the data lies in the file."""
    shape: Tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int  # where the data starts
    nbytes: int  # how many bytes of data the shape announces
    size: int  # the file's size


def _fail(path, why):
    return ValueError("%s: %s" % (path, why))


def _parse(path, text):
    """The header dict of a .npy file, checked key by key."""
    try:
        d = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise _fail(path, "not a readable .npy file: its header is corrupt (%r)"
                    % _excerpt(text)) from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise _fail(path, "not a readable .npy file: its header is not the dict of descr, "
                    "fortran_order and shape (%r)" % _excerpt(text))
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise _fail(path, "its header has a shape that is not a tuple of integers: %r"
                    % (shape,))
    if any(n < 0 for n in shape):
        raise _fail(path, "its header has a negative shape %s" % (shape,))
    if not isinstance(d["fortran_order"], bool):
        raise _fail(path, "its header has fortran_order=%r, not True or False"
                    % (d["fortran_order"],))
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except Exception:  # numpy raises many types for a bad descr; all mean the same here
        raise _fail(path, "its header has a dtype numpy does not know: %r"
                    % (_excerpt(repr(d["descr"])),)) from None
    return shape, d["fortran_order"], dtype


def _excerpt(text, n=60):
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + "..."


def read_header(path, what: str = "array", check_size: bool = True) -> Header:
    """The header of the .npy file at `path`, checked against the file's size.

    ValueError naming the path for anything that is not a whole .npy file
    (check_size=False: a body shorter than the shape needs is left to the caller).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("%s file not found: %s" % (what, path))
    if os.path.isdir(path):
        raise IsADirectoryError("%s: a directory, not a .npy file (the %s file)" % (path, what))
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise _fail(path, "not a regular file, so not a .npy file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 10 or head[:6] != MAGIC:
            raise _fail(path, "not a .npy file (%d bytes; it starts with %r, not the .npy "
                        "magic %r)" % (size, head[:8], MAGIC))
        major, minor = head[6], head[7]
        if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
            raise _fail(path, "unknown .npy format version %d.%d" % (major, minor))
        if major == 1:
            hlen, start = struct.unpack("<H", head[8:10])[0], 10
        else:
            if len(head) < 12:
                raise _fail(path, "truncated inside its .npy header (%d bytes)" % size)
            hlen, start = struct.unpack("<I", head[8:12])[0], 12
        if start + hlen > size:
            raise _fail(path, "its header claims %d bytes but the file has only %d: truncated "
                        "or not a .npy file" % (hlen, size))
        if hlen > MAX_HEADER:
            raise _fail(path, "its header claims %d bytes; a .npy header is a few hundred"
                        % hlen)
        f.seek(start)
        raw = f.read(hlen)
    try:
        text = raw.decode("utf8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        raise _fail(path, "its header is not text") from None
    shape, fortran, dtype = _parse(path, text)
    count = 1
    for n in shape:
        count *= n
    offset = start + hlen
    nbytes = count * dtype.itemsize
    if check_size and offset + nbytes > size:
        raise _fail(path, "truncated or its header is wrong: shape %s of %s needs %d bytes of "
                    "data, the file holds %d" % (shape, dtype, nbytes, size - offset))
    return Header(shape, fortran, dtype, offset, nbytes, size)


def check_dtype(dtype, path, what, kind):
    """TypeError naming the path unless `dtype` is of the slot's kind."""
    kinds, sizes, words = KINDS[kind]
    if dtype.hasobject:
        why = "Python objects"
    elif dtype.names is not None or dtype.subdtype is not None:
        why = "records (a structured dtype %s)" % (dtype.descr,)
    elif dtype.kind not in kinds or (sizes is not None and dtype.itemsize not in sizes):
        why = {"c": "complex numbers (%s)", "S": "byte strings (%s)", "U": "strings (%s)",
               "b": "booleans (%s)", "M": "dates (%s)", "m": "time deltas (%s)",
               "V": "raw bytes (%s)"}.get(dtype.kind, "%s") % dtype
    else:
        return
    raise TypeError("%s: %s must be %s, the file holds %s" % (path, what, words, why))


def check_shape(shape, path, what, ndim):
    if len(shape) == ndim:
        return
    want = "2-D (N, d)" if ndim == 2 else "1-D (N,)" if ndim == 1 else "%d-D" % ndim
    got = "a 0-d array (a single value)" if not shape else "shape %s" % (shape,)
    raise ValueError("%s: %s must be %s, the file holds %s" % (path, what, want, got))


def load(path, *, mmap: bool = False, what: str = "array", kind: Optional[str] = None,
         ndim: Optional[int] = None) -> np.ndarray:
    """The array in the .npy file at `path`, read or (mmap=True) memory-mapped read-only.

    what: the slot's name for messages ("features", "labels"); kind: "float", "int"
    or "number" to check the dtype; ndim: the number of dimensions wanted. A plain
    read converts big-endian data to the machine's order; a map keeps the file's.
    """
    path = os.fspath(path)
    h = read_header(path, what)
    if h.dtype.hasobject:  # never unpickled, whatever the slot
        check_dtype(h.dtype, path, what, kind or "number")
    if kind is not None:
        check_dtype(h.dtype, path, what, kind)
    if ndim is not None:
        check_shape(h.shape, path, what, ndim)
    order = "F" if h.fortran_order else "C"
    if mmap:
        if h.nbytes == 0:  # nothing to map (mmap refuses a zero length)
            return np.empty(h.shape, h.dtype, order=order)
        try:
            return np.memmap(path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
                             order=order)
        except (ValueError, OSError) as e:  # e.g. cut short since its header was read
            raise _fail(path, "cannot be memory-mapped (%s)" % " ".join(str(e).split())) \
                from None
    with open(path, "rb") as f:
        f.seek(h.offset)
        count = h.nbytes // h.dtype.itemsize if h.dtype.itemsize else 0
        data = np.fromfile(f, dtype=h.dtype, count=count)
    if data.size != count:  # the file shrank since its header was read
        raise _fail(path, "truncated while it was read")
    arr = data.reshape(h.shape, order=order)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def load_features(path, mmap: bool = True) -> np.ndarray:
    """(N, d) float16/32/64 features (memory-mapped by default)."""
    return load(path, mmap=mmap, what="features", kind="float", ndim=2)


def load_labels(path) -> np.ndarray:
    """(N,) integer labels."""
    return load(path, what="labels", kind="int", ndim=1)


def load_indices(path, what: str = "keep") -> np.ndarray:
    """(k,) integer indices (their range is the caller's to check)."""
    return load(path, what=what, kind="int", ndim=1)
