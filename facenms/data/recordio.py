"""MXNet / insightface RecordIO (.rec + .idx) in pure Python, no mxnet needed.

The format (dmlc-core recordio):

    record   := frame+                    one logical record, 1 or more frames
    frame    := magic:u32 lrec:u32 data pad
    magic    =  0xced7230a (little endian)
    lrec     =  cflag << 29 | length      length < 2**29, cflag in the top 3 bits
    pad      =  zeros up to a multiple of 4 bytes

cflag 0 is a whole record. The writer never lets the magic word appear in a
frame's data at a 4-byte aligned position (so a reader can resynchronise): it
cuts the payload there, drops that magic word and writes the pieces as frames
with cflag 1 (first), 2 (middle), 3 (last); the reader joins the pieces with
the magic word between them.

A payload packed by mxnet.recordio.pack starts with a 24-byte header
`IfQQ` = (flag, label, id, id2). flag == 0: `label` is the scalar label.
flag > 0: `flag` float32 labels follow the header (and `label` is 0).

The .idx file has one `key\\toffset` line per record; offset is the byte
position of the record's first frame in the .rec file.
"""
import os
import struct
import zlib
from collections import namedtuple

import numpy as np

from ..io import AtomicFiles, Transaction
from .recfiles import default_idx_path, read_idx, sample_crc

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
FRAME = _FRAME  # magic, lrec: the head of every frame
_WORD = np.dtype("<u4")
_HEAD_WORDS = struct.Struct("<6I")  # an IRHeader as the six words dmlc's split rule sees
_LEN_MASK = (1 << 29) - 1
LEN_MASK = _LEN_MASK
MAX_RECORD_LEN = 1 << 29

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
_IR = struct.Struct("<IfQQ")
IR_SIZE = _IR.size  # 24


def pack(header, payload):
    """mxnet.recordio.pack: header (flag, label, id, id2) + payload bytes.

    An array label (anything with a length) is written as float32 values after
    the header with flag = its length, as mxnet does; a scalar goes in `label`.
    """
    flag, label, id_, id2 = header
    if isinstance(label, (int, float)) or np.ndim(label) == 0:
        return _IR.pack(int(flag), float(label), int(id_), int(id2)) + bytes(payload)
    label = np.asarray(label, dtype=np.float32).ravel()
    return (_IR.pack(label.size, 0.0, int(id_), int(id2)) + label.astype("<f4").tobytes()
            + bytes(payload))


def unpack(record):
    """mxnet.recordio.unpack: bytes -> (IRHeader, payload bytes).

    The header's label is a float for flag == 0 and a float32 array otherwise.
    """
    if len(record) < IR_SIZE:
        raise ValueError("record of %d bytes is shorter than the %d-byte IRHeader"
                         % (len(record), IR_SIZE))
    flag, label, id_, id2 = _IR.unpack_from(record, 0)
    if flag > 0:
        end = IR_SIZE + 4 * flag
        if len(record) < end:
            raise ValueError("record of %d bytes is too short for its %d float32 labels"
                             % (len(record), flag))
        label = np.frombuffer(record, dtype="<f4", count=flag, offset=IR_SIZE).astype(np.float32)
        return IRHeader(flag, label, id_, id2), bytes(record[end:])
    return IRHeader(flag, label, id_, id2), bytes(record[IR_SIZE:])


def pad_length(n):
    """A frame's data length padded to a multiple of 4 bytes."""
    return _pad(n)


def _pad(n):
    return (n + 3) & ~3


def _split_at_magic(buf):
    """Cut points where the magic word sits at a 4-byte aligned offset (dmlc's rule)."""
    # only aligned words count: comparing them as uint32 is faster than bytes.find
    hit = np.frombuffer(buf, dtype=_WORD, count=len(buf) // 4) == MAGIC
    return (np.flatnonzero(hit) * 4).tolist() if np.count_nonzero(hit) else []


def _one_frame(n, *pieces):
    """The single frame of an n-byte record made of pieces: header, bytes, zero padding."""
    return b"".join((_FRAME.pack(MAGIC, n),) + pieces + (b"\0" * (_pad(n) - n),))


def encode_record(buf):
    """The frames of one record, exactly as dmlc's RecordIOWriter lays them out."""
    buf = bytes(buf)
    if len(buf) >= MAX_RECORD_LEN:
        raise ValueError("RecordIO records must be shorter than 2**29 bytes, got %d" % len(buf))
    cuts = _split_at_magic(buf)
    if not cuts:  # one frame, the usual case
        return _one_frame(len(buf), buf)
    out = []
    start = 0
    for cut in cuts:
        # the pieces before the last one end at aligned cuts: no padding needed
        out.append(_FRAME.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (cut - start)))
        out.append(buf[start:cut])
        start = cut + 4
    out.append(_FRAME.pack(MAGIC, ((3 if start else 0) << 29) | (len(buf) - start)))
    out.append(buf[start:])
    out.append(b"\0" * (_pad(len(buf)) - len(buf)))
    return b"".join(out)


class RecordIO:
    """Random access reader of a .rec file through its .idx.

        rec = RecordIO("train.rec")        # train.idx beside it
        header, img = unpack(rec.read(rec.keys[0]))

    The file is opened lazily and reopened in a forked process, so one instance
    can be shared with DataLoader workers.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path) if idx_path is not None else default_idx_path(rec_path)
        if not os.path.isfile(self.rec_path):
            raise FileNotFoundError("RecordIO file %s not found" % self.rec_path)
        self.keys, self.offsets, self.idx_crc, self.idx_bytes = read_idx(self.idx_path)
        self.size = os.path.getsize(self.rec_path)
        if len(self.keys) == 0 and self.size > 0:
            raise ValueError("%s: the RecordIO index is empty (0 records) but %s holds %d bytes; "
                             "an interrupted write? Rebuild it with `facenms index %s`"
                             % (self.idx_path, self.rec_path, self.size, self.rec_path))
        bad = np.flatnonzero((self.offsets < 0) | (self.offsets + _FRAME.size > self.size))
        if bad.size:
            i = int(bad[0])
            raise ValueError("%s: record key %d has offset %d past the end of %s (%d bytes)"
                             % (self.idx_path, self.keys[i], self.offsets[i],
                                self.rec_path, self.size))
        # key -> offset without a dict (42M keys would cost gigabytes): binary search
        if np.all(self.keys[1:] > self.keys[:-1]):
            self._skeys, self._soffsets = self.keys, self.offsets
        else:
            order = np.argsort(self.keys, kind="stable")
            self._skeys, self._soffsets = self.keys[order], self.offsets[order]
            dup = np.flatnonzero(self._skeys[1:] == self._skeys[:-1])
            if dup.size:
                raise ValueError("%s: key %d appears more than once"
                                 % (self.idx_path, self._skeys[dup[0]]))
        self._fh = None
        self._pid = None
        self._guess = 1 << 14  # bytes the first read of a record asks for
        self._starts = None  # sorted record offsets: where each record must end

    def __len__(self):
        return len(self.keys)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = None
        return state

    def _fd(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._fh.fileno()

    def _pread(self, n, pos):
        # positioned reads: no shared file offset, so threads can share the handle
        return os.pread(self._fd(), n, pos)

    def close(self):
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def sample_crc(self):
        """sample_crc of this .rec file."""
        return sample_crc(self._fd(), self.size)

    def offset(self, key):
        """Byte position of the record `key` in the .rec file."""
        k = self._skeys
        # dense keys (im2rec's 0..n-1) sit at their own position: no search
        j = key if 0 <= key < len(k) and k[key] == key else int(np.searchsorted(k, key))
        if j >= len(k) or k[j] != key:
            raise KeyError("record key %r is not in %s" % (key, self.idx_path))
        return int(self._soffsets[j])

    def sizes(self, keys):
        """Bytes each record of `keys` spans in the .rec (to the next record's offset)."""
        so = np.sort(self._soffsets)
        pos = np.searchsorted(self._skeys, np.asarray(keys, dtype=np.int64))
        off = self._soffsets[np.minimum(pos, len(self._skeys) - 1)]
        nxt = np.searchsorted(so, off, side="right")
        ends = np.where(nxt < len(so), so[np.minimum(nxt, len(so) - 1)], self.size)
        return ends - off

    def contains(self, keys):
        """Boolean array: which of `keys` the index has."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self._skeys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        j = np.minimum(np.searchsorted(self._skeys, keys), len(self._skeys) - 1)
        return self._skeys[j] == keys

    def _frame(self, key, pos):
        """(cflag, data, position of the next frame) of the frame at `pos`."""
        head = self._pread(_FRAME.size, pos)
        if len(head) < _FRAME.size:
            raise ValueError("%s: truncated record key %d: frame header at byte %d cut short "
                             "(file is %d bytes)" % (self.rec_path, key, pos, self.size))
        magic, lrec = _FRAME.unpack(head)
        if magic != MAGIC:
            raise ValueError("%s: bad magic 0x%08x at byte %d (record key %d); expected 0x%08x "
                             "- not a RecordIO file, or the .idx does not match it"
                             % (self.rec_path, magic, pos, key, MAGIC))
        length, cflag = lrec & _LEN_MASK, lrec >> 29
        data = self._pread(_pad(length), pos + _FRAME.size)
        if len(data) < _pad(length):
            raise ValueError("%s: truncated record key %d: frame at byte %d needs %d bytes, "
                             "only %d left" % (self.rec_path, key, pos, _pad(length), len(data)))
        return cflag, data[:length], pos + _FRAME.size + _pad(length)

    def _end(self, pos):
        """Where the record at byte `pos` must end: the next record's offset, or the end."""
        if self._starts is None:
            so = self._soffsets
            self._starts = so if np.all(so[1:] > so[:-1]) else np.unique(so)
        j = int(np.searchsorted(self._starts, pos, side="right"))
        return int(self._starts[j]) if j < len(self._starts) else self.size

    def _overrun(self, key, pos, end, stop):
        if stop > end:
            raise ValueError("%s: record key %d at byte %d runs %d bytes into the next record "
                             "(at byte %d): a damaged length field or .idx"
                             % (self.rec_path, key, pos, stop - end, end))

    def read(self, key):
        """The record stored under `key` (split frames joined), as bytes.

        A record whose frames run past the next record's offset is refused (a
        damaged length field would otherwise hand out the next record's bytes)."""
        pos = self.offset(key)
        end = self._end(pos)
        # one pread for the frame header and a whole record of about the last one's size
        buf = self._pread(_FRAME.size + self._guess, pos)
        if len(buf) >= _FRAME.size:
            magic, lrec = _FRAME.unpack_from(buf)
            length = lrec & _LEN_MASK
            self._guess = max(4096, _pad(length + (length >> 2)))
            if magic == MAGIC and lrec >> 29 == 0 and _FRAME.size + length <= len(buf):
                self._overrun(key, pos, end, pos + _FRAME.size + _pad(length))
                return buf[_FRAME.size:_FRAME.size + length]
        cflag, data, nxt = self._frame(key, pos)
        if cflag == 0:
            self._overrun(key, pos, end, nxt)
            return data
        if cflag != 1:
            raise ValueError("%s: record key %d at byte %d starts with a continuation frame "
                             "(cflag %d)" % (self.rec_path, key, pos, cflag))
        parts = [data]
        while cflag != 3:
            p = nxt
            cflag, data, nxt = self._frame(key, p)
            if cflag not in (2, 3):
                raise ValueError("%s: record key %d: split record broken at byte %d "
                                 "(cflag %d inside a split record)" % (self.rec_path, key, p, cflag))
            parts.append(data)
        self._overrun(key, pos, end, nxt)
        return _MAGIC_BYTES.join(parts)

    def read_header(self, key):
        """The IRHeader of a packed record, reading only its first bytes when it is not split."""
        pos = self.offset(key)
        head = self._pread(_FRAME.size + IR_SIZE, pos)
        if len(head) == _FRAME.size + IR_SIZE:
            magic, lrec = _FRAME.unpack_from(head)
            flag = _IR.unpack_from(head, _FRAME.size)[0]
            if magic == MAGIC and lrec >> 29 == 0 and (lrec & _LEN_MASK) >= IR_SIZE + 4 * flag:
                tail = self._pread(4 * flag, pos + len(head)) if flag else b""
                return self.unpack_key(head[_FRAME.size:] + tail, key)[0]
        return self.unpack_key(self.read(key), key)[0]

    def unpack_key(self, record, key):
        """(IRHeader, payload) of a record, errors naming the file and key."""
        try:
            return unpack(record)
        except ValueError as e:
            raise ValueError("%s: record key %d: %s" % (self.rec_path, key, e)) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class RecordIOWriter(Transaction):
    """Writes a .rec and its .idx under temporary names, renamed on close().

        with RecordIOWriter("out/train.rec") as w:
            w.write(0, pack(IRHeader(0, 3.0, 0, 0), jpeg_bytes))

    On an exception inside the `with` (or abort()), both temporaries are
    removed and nothing appears under the final names. With files=AtomicFiles
    the two files join that group instead and its owner commits them.
    """

    def __init__(self, rec_path, idx_path=None, files=None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path) if idx_path is not None else default_idx_path(rec_path)
        self._own = files is None
        self._files = AtomicFiles() if self._own else files
        try:
            self._rec = self._files.open(self.rec_path, "wb", buffering=1 << 20)
            self._idx = self._files.open(self.idx_path, "w")
        except BaseException:
            self._files.abort()
            raise
        self._pos = 0
        self._last = None  # keys written in increasing order need no set (42M would be GBs)
        self._keys = None
        self.idx_crc = 0  # of the .idx as written, for sidecars that must match it
        self.idx_bytes = 0

    def write(self, key, record):
        """Append one record (bytes, e.g. from pack()) under integer `key`."""
        key = int(key)
        self._take(key)
        data = encode_record(record)
        self._rec.write(data)
        self._index(key, data)

    def _take(self, key):
        """Refuse a key written before."""
        if self._last is not None and key <= self._last:
            if self._keys is None:  # out of order from here on: the keys so far, from the .idx
                self._idx.flush()
                with open(self._idx.name) as f:
                    self._keys = {int(line.split("\t", 1)[0]) for line in f}
            if key in self._keys:
                raise ValueError("duplicate RecordIO key %d" % key)
        if self._keys is not None:
            self._keys.add(key)
        self._last = key if self._last is None else max(self._last, key)

    def write_image(self, key, label, payload):
        """write(key, pack(IRHeader(0, label, key, 0), payload)), framed in one copy of
        the payload: what an export does for each of millions of faces."""
        head = _IR.pack(0, float(label), int(key), 0)
        n = len(head) + len(payload)
        if MAGIC in _HEAD_WORDS.unpack(head) or n >= MAX_RECORD_LEN or _split_at_magic(payload):
            return self.write(key, head + bytes(payload))  # split frames: the general path
        self._take(key)
        data = _one_frame(n, head, payload)
        self._rec.write(data)
        self._index(key, data)

    def _index(self, key, data):
        line = "%d\t%d\n" % (key, self._pos)
        self._idx.write(line)
        self.idx_crc = zlib.crc32(line.encode("ascii"), self.idx_crc)
        self.idx_bytes += len(line)
        self._pos += len(data)

    @property
    def rec_bytes(self):
        return self._pos

    def rec_sample_crc(self):
        """sample_crc of the .rec written so far (flushed first)."""
        self._rec.flush()
        with open(self._rec.name, "rb") as f:  # written "wb": no reads through it
            return sample_crc(f.fileno(), self._pos)

    def commit(self):
        """Finish: both files renamed into place (by the group's owner if shared)."""
        if self._own:
            self._files.commit()

    close = commit

    def abort(self):
        self._files.abort()
