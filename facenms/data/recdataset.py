"""Face datasets stored as RecordIO: the insightface layout and the plain im2rec one.

insightface layout (MS1M, Glint360K, WebFace as insightface ships them):

    key 0          header record: flag 2, label [A, B], empty payload
    keys 1..A-1    images, each packed with its identity label (scalar, or label[0])
    keys A..B-1    one record per identity c = key - A: label [start, end), the
                   image keys of that identity (empty payload)
    property       text file beside train.rec: "num_classes,h,w" (facenms writes
                   PREFIX.property beside any other PREFIX.rec, so that two
                   datasets in one folder never share one)

im2rec layout: no header; every record is an image whose label is a scalar or
an array (label[0] is the identity), in .idx order.

insightface's MXFaceDataset decides between the two by `header.flag > 0` on
record 0 and then reads images 1..A-1 with each image's own label; an im2rec
file whose first image has an array label would fool that test, so we also
require the header record's payload to be empty. Identity records are optional
(some converters write [A, num_classes] and none): without them the labels
come from the image headers, one small read per image.
"""
import os
import warnings
import zipfile
import zlib

import numpy as np

from ..io import AtomicFiles, recover
from .base import FaceDataset, image_format
from .recfiles import default_idx_path, property_path
from .recordio import IRHeader, RecordIO, RecordIOWriter, pack, unpack

F32_EXACT = 1 << 24  # float32 holds every integer up to here, and not all beyond


def read_property(directory):
    """(num_classes, h, w) from the first line of `directory/property` (or of the
    property file itself, when given one).

    insightface writes `num_classes,h,w`; its pip RecBuilder adds a second line
    with the image count and rec2shufrec.py writes four: only the first counts.
    """
    directory = os.fspath(directory)
    path = directory if os.path.isfile(directory) else os.path.join(directory, "property")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError("%s not found: insightface datasets keep `num_classes,h,w` "
                                "there" % path) from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    try:
        c, h, w = (int(v) for v in first.split(","))
    except ValueError:
        raise ValueError("%s: expected `num_classes,h,w` on the first line, got %r"
                         % (path, first[:80])) from None
    return c, h, w


def find_property(rec_path):
    """The property file of a .rec: its own (recordio.property_path: `property` beside
    train.rec, PREFIX.property beside PREFIX.rec), else the folder's `property` (what
    other tools write for any name), else None."""
    own = property_path(rec_path)
    if os.path.exists(own):
        return own
    shared = os.path.join(os.path.dirname(own), "property")
    return shared if os.path.exists(shared) else None


def labels_sidecar_path(rec_path):
    """Where write_face_recordio keeps the labels beside a .rec: train.rec -> train.labels.npz."""
    return default_idx_path(rec_path)[:-4] + ".labels.npz"


def _label0(header):
    return float(header.label if header.flag == 0 else header.label[0])


def _as_int(value, what):
    if not np.isfinite(value) or value != int(value) or value < 0:
        raise ValueError("%s: label %r is not a non-negative integer" % (what, value))
    return int(value)


class RecordDataset(FaceDataset):
    """A face dataset in train.rec / train.idx (+ property), either layout.

    require_property=True makes a missing `property` file an error (it gives
    num_classes and the image size, which insightface's training needs).

    Labels come from a `train.labels.npz` sidecar when one matches the .idx
    (facenms writes it; reading 42M image headers takes minutes), else from
    the identity records or the image headers. Every image read checks its own
    header label against `labels`: insightface trains on that one.
    """

    def __init__(self, rec_path, idx_path=None, require_property=False):
        self.rec_path = os.fspath(rec_path)
        directory = os.path.dirname(os.path.abspath(self.rec_path))
        recover(directory)  # a group commit a dead process left half done
        self.rec = RecordIO(self.rec_path, idx_path)
        if len(self.rec) == 0:
            raise ValueError("%s: the dataset has no images (%s is empty)"
                             % (self.rec_path, self.rec.idx_path))
        self.labels_source = None
        prop = None
        self.property_path = find_property(self.rec_path)
        if self.property_path is not None:
            prop = read_property(self.property_path)
        elif require_property:
            read_property(directory)  # the error that names the missing file
        self.layout, self._keys, labels = self._scan()
        self.labels = labels
        top = int(labels.max()) + 1 if len(labels) else 0
        if prop is not None:
            self.num_classes, h, w = prop
            self.image_size = (h, w)
            if top > self.num_classes:
                raise ValueError("%s: labels go up to %d but property says %d classes"
                                 % (self.rec_path, top - 1, self.num_classes))
        else:
            self.num_classes = top

    # -- layout detection and labels -------------------------------------------------

    def _sidecar(self, layout, keys):
        """Labels from a matching sidecar, or None (a stale one is reported and ignored)."""
        n = len(keys)
        path = labels_sidecar_path(self.rec_path)
        if not os.path.isfile(path):
            return None
        try:
            labels, why = self._sidecar_labels(path, layout)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            labels, why = None, "unreadable (%s)" % " ".join(str(e).split())
        if labels is not None and len(labels) != n:
            labels, why = None, "holds %d labels for %d images" % (len(labels), n)
        if labels is not None:
            why = self._spot_check(labels, keys)
        if why is not None:
            warnings.warn("%s %s; reading the labels from the records" % (path, why))
            return None
        self.labels_source = path
        return labels

    def _sidecar_labels(self, path, layout):
        """(labels, None), or (None, why the sidecar is not this .rec's)."""
        # np.load leaves its file open when the zip is damaged: the handle is ours to close
        with open(path, "rb") as f, np.load(f) as z:
            if "rec_crc" not in z.files or "labels_crc" not in z.files:
                return None, "predates the content check (no rec_crc)"
            meta = tuple(int(z[k]) if k != "layout" else str(z[k]) for k in (
                "layout", "idx_crc", "idx_bytes", "rec_bytes", "rec_crc"))
            if meta != (layout, self.rec.idx_crc, self.rec.idx_bytes, self.rec.size,
                        self.rec.sample_crc()):
                return None, "does not match %s (written for another .idx/.rec)" % self.rec_path
            labels = np.asarray(z["labels"])
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                return None, "holds no 1-D integer labels"
            labels = labels.astype(np.int64)
            if zlib.crc32(labels.astype("<i8").tobytes()) != int(z["labels_crc"]):
                return None, "holds labels rewritten since it was written (CRC differs)"
        if len(labels) and labels.min() < 0:
            return None, "holds negative labels"
        return labels, None

    def _spot_check(self, labels, keys, count=64):
        """Why the labels disagree with a few records' own headers, or None."""
        if not len(labels):
            return None
        for i in np.unique(np.linspace(0, len(labels) - 1, min(count, len(labels))).astype(int)):
            key = int(keys[i])
            if _label0(self.rec.read_header(key)) != labels[i]:
                return "disagrees with record key %d's header label" % key
        return None

    def _scan(self):
        if len(self.rec) == 0 or not self.rec.contains(np.array([0]))[0]:
            return self._scan_im2rec()
        header, payload = unpack(self.rec.read(0))
        if not (header.flag >= 1 and len(payload) == 0):
            return self._scan_im2rec()
        a = _as_int(float(header.label[0]), "%s header record 0" % self.rec_path)
        if a < 1:
            raise ValueError("%s: header record 0 says the images are keys 1..%d"
                             % (self.rec_path, a - 1))
        if a - 1 > len(self.rec):
            raise ValueError("%s: header record 0 says the images are keys 1..%d, but %s lists "
                             "only %d records: a damaged header or the wrong .idx"
                             % (self.rec_path, a - 1, self.rec.idx_path, len(self.rec)))
        keys = np.arange(1, a, dtype=np.int64)
        missing = np.flatnonzero(~self.rec.contains(keys))
        if missing.size:
            raise ValueError("%s: header record 0 promises image keys 1..%d but key %d is not "
                             "in %s" % (self.rec_path, a - 1, keys[missing[0]], self.rec.idx_path))
        # label[1] is the end of the identity records in insightface's own files; some
        # converters store the class count there and write no identity records at all
        labels = self._sidecar("insightface", keys)
        if labels is not None:
            return "insightface", keys, labels
        b = int(header.label[1]) if header.flag >= 2 and np.isfinite(header.label[1]) else 0
        if b > a and self.rec.contains(np.arange(a, b, dtype=np.int64)).all():
            labels = self._labels_from_identities(a, b)
        if labels is None:
            labels = self._labels_from_headers(keys)  # what MXFaceDataset trains on anyway
        return "insightface", keys, labels

    def _labels_from_identities(self, a, b):
        """Labels from the identity ranges: B-A small reads instead of one per image.

        None when the ranges do not partition the images 1..A-1 in order, or
        disagree with the labels of the first and last image of an identity.
        """
        labels = np.empty(a - 1, dtype=np.int64)
        prev = 1
        for c, key in enumerate(range(a, b)):
            h = self.rec.read_header(key)
            if h.flag < 2:
                return None
            s, e = float(h.label[0]), float(h.label[1])
            if s != prev or not s <= e <= a or e != int(e):
                return None
            s, e = int(s), int(e)
            if e > s and {_label0(self.rec.read_header(k)) for k in {s, e - 1}} != {c}:
                return None
            labels[s - 1:e - 1] = c
            prev = e
        if prev != a:
            return None
        self.labels_source = "identity records"
        return labels

    def _labels_from_headers(self, keys):
        labels = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            labels[i] = _as_int(_label0(self.rec.read_header(int(key))),
                                "%s record key %d" % (self.rec_path, key))
        self.labels_source = "image headers"
        return labels

    def _scan_im2rec(self):
        keys = self.rec.keys.copy()
        labels = self._sidecar("im2rec", keys)
        return "im2rec", keys, labels if labels is not None else self._labels_from_headers(keys)

    # -- FaceDataset -----------------------------------------------------------------

    def key(self, i):
        return int(self._keys[self._check_index(i)])

    def read_bytes(self, i):
        i = self._check_index(i)
        key = self._keys.item(i)  # .item: Python numbers, not numpy scalars (per face)
        header, payload = self.rec.unpack_key(self.rec.read(key), key)
        got = _label0(header)
        if got != self.labels.item(i):
            # swapped .idx offsets, an edited header or a stale sidecar: the header is what
            # insightface trains on, so the two must agree
            raise ValueError("%s record key %d: the image's header label is %r but the dataset's "
                             "label (%s) is %d" % (self.rec_path, key, got,
                                                   self.labels_source or "identity records",
                                                   self.labels[i]))
        return payload

    def files(self):
        out = [self.rec_path, self.rec.idx_path, labels_sidecar_path(self.rec_path),
               self.property_path]
        return [p for p in out if p is not None and os.path.exists(p)]

    def approx_bytes(self, indices):
        """Bytes the records of `indices` take in the .rec (from the .idx offsets)."""
        return int(self.rec.sizes(self._keys[np.asarray(indices, dtype=np.int64)]).sum())

    def name(self, i):
        return "rec:%d" % self.key(i)

    def where(self, i):
        return "%s record key %d" % (self.rec_path, self.key(i))


def _check_face_labels(labels, num_classes, layout):
    """The number of classes, once labels and layout are known to fit RecordIO."""
    if layout not in ("insightface", "im2rec"):
        raise ValueError("layout must be 'insightface' or 'im2rec', got %r" % (layout,))
    n = len(labels)
    c = int(num_classes) if num_classes is not None else (int(labels.max()) + 1 if n else 0)
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError("labels must lie in [0, %d)" % c)
    if c > F32_EXACT:
        raise ValueError("%d classes: float32 labels are exact only up to 2**24" % c)
    if layout == "insightface":
        if np.any(np.diff(labels) < 0):
            raise ValueError("the insightface layout needs labels grouped (non-decreasing)")
        if n + 1 + c > F32_EXACT:
            raise ValueError("%d images + %d identities: the insightface header stores record "
                             "keys as float32, exact only up to 2**24; use layout='im2rec'"
                             % (n, c))
    return c


def write_face_recordio(rec_path, labels, payloads, *, num_classes=None, image_size=None,
                        layout="insightface", files=None, labels_sidecar=True):
    """Write images as a face RecordIO dataset: rec, idx and `property` beside them.

    labels: dense identity labels in [0, num_classes), non-decreasing for the
    insightface layout (an identity's images must be one key range).
    payloads: iterable of encoded image bytes, one per label, in that order.
    image_size: (h, w) for `property`; default: the first image's size.
    files: an AtomicFiles to register the outputs with (the caller commits);
    by default they are committed here when everything has been written.
    labels_sidecar: also write <prefix>.labels.npz (the labels, tied to the
    .idx by its CRC and size), which RecordDataset reads instead of every
    image header.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    c = _check_face_labels(labels, num_classes, layout)
    own = files is None
    files = AtomicFiles() if own else files
    try:
        w = RecordIOWriter(rec_path, files=files)
        first = 1 if layout == "insightface" else 0
        if layout == "insightface":
            w.write(0, pack(IRHeader(2, [n + 1, n + 1 + c], 0, 0), b""))
        count = 0
        for j, payload in enumerate(payloads):
            if j >= n:
                raise ValueError("more payloads than labels (%d)" % n)
            if image_size is None:
                image_size = image_format(payload, "image %d" % j)[1]
            w.write_image(first + j, labels.item(j), payload)
            count += 1
        if count != n:
            raise ValueError("%d labels but %d payloads" % (n, count))
        if layout == "insightface":
            starts = np.searchsorted(labels, np.arange(c + 1)) + 1
            for k in range(c):
                w.write(n + 1 + k, pack(IRHeader(2, [starts[k], starts[k + 1]], n + 1 + k, 0), b""))
        if labels_sidecar:
            np.savez(files.open(labels_sidecar_path(rec_path)), labels=labels,
                     layout=np.array(layout), idx_crc=np.int64(w.idx_crc),
                     idx_bytes=np.int64(w.idx_bytes), rec_bytes=np.int64(w.rec_bytes),
                     rec_crc=np.int64(w.rec_sample_crc()),
                     labels_crc=np.int64(zlib.crc32(labels.astype("<i8").tobytes())))
        h, wd = image_size if image_size is not None else (0, 0)
        with files.open(property_path(rec_path), "w") as f:
            f.write("%d,%d,%d" % (c, h, wd))
    except BaseException:
        files.abort()
        raise
    if own:
        files.commit()
    return rec_path, default_idx_path(rec_path)
