"""The interface every face dataset offers (image folders, RecordIO)."""
import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image


def decode_image(data, where):
    """Encoded image bytes -> H x W x 3 uint8 RGB; `where` names it in errors."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decoding is lazy: force it here so a broken file fails here
            rgb = img.convert("RGB")
    except Exception as e:  # PIL raises several types for bad data
        raise ValueError("%s: image fails to decode (%s: %s)" % (where, type(e).__name__, e)) from None
    return np.array(rgb, dtype=np.uint8)


def image_format(data, where):
    """(PIL format name, (h, w)) from the image header only, without decoding."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format, (img.height, img.width)
    except Exception as e:
        raise ValueError("%s: not a readable image (%s: %s)" % (where, type(e).__name__, e)) from None


_known_header = [b""]  # SOI to the end of SOS of the last JPEG whose headers passed


def _check_jpeg(data):
    if not data.startswith(b"\xff\xd8"):
        return "JPEG without its SOI marker"
    # the walk below depends only on the bytes up to the end of the scan header: one
    # encoder's faces (same size, quality, tables) share them, so one comparison does
    h = _known_header[0]
    if not (h and data.startswith(h)):
        pos, err = _walk_jpeg_headers(data)
        if err is not None:
            return err
        _known_header[0] = bytes(data[:pos])
    n = len(data)
    while n and data[n - 1] == 0:  # zero padding after EOI (no copy of the image)
        n -= 1
    if data[n - 2:n] != b"\xff\xd9":
        return "JPEG without its EOI marker (truncated)"
    return None


def _walk_jpeg_headers(data):
    """(end of the SOS segment, None), or (None, what is wrong): every marker segment's
    length must stay inside the file."""
    n = len(data)
    pos = 2
    while True:
        if pos + 4 > n:
            return None, "JPEG cut off in its headers at byte %d" % pos
        if data[pos] != 0xFF:
            return None, ("JPEG header damaged at byte %d (0x%02x where a marker should be)"
                          % (pos, data[pos]))
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return None, "JPEG ends (EOI) before any image data"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        seg = (data[pos + 2] << 8) | data[pos + 3]
        if seg < 2 or pos + 2 + seg > n:
            return None, ("JPEG segment 0x%02x at byte %d runs past the end (truncated)"
                          % (marker, pos))
        pos += 2 + seg
        if marker == 0xDA:
            return pos, None


def _check_png(data):
    pos = 8
    while True:
        if pos + 12 > len(data):
            return "PNG truncated at byte %d (no IEND chunk)" % pos
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return "PNG chunk %r at byte %d runs past the end (truncated)" % (ctype, pos)
        crc = struct.unpack_from(">I", data, end - 4)[0]
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            return "PNG chunk %r at byte %d fails its CRC" % (ctype, pos)
        if ctype == b"IEND":
            return None
        pos = end


def check_image(data, where, verify="structure"):
    """Raise ValueError naming `where` unless `data` is a whole image.

    where: a string, or a function making it (called only for an error: a
    message for each of 42M images that pass would cost more than the check).

    verify="structure" (cheap, no decoding): JPEG SOI, marker segments and
    EOI; PNG chunks, their CRCs and IEND; BMP size field. verify="decode":
    that, and a full decode. verify="none": nothing.
    """
    if verify == "none":
        return
    if verify not in ("structure", "decode"):
        raise ValueError("verify must be 'none', 'structure' or 'decode', got %r" % (verify,))
    data = bytes(data)
    err = None
    if data.startswith(b"\xff\xd8"):
        err = _check_jpeg(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        err = _check_png(data)
    elif data.startswith(b"BM") and len(data) >= 6:
        if struct.unpack_from("<I", data, 2)[0] > len(data):
            err = "BMP shorter than its header says (truncated)"
    else:  # another format: at least its header must parse
        image_format(data, _name(where))
    if err is not None:
        raise ValueError("%s: %s" % (_name(where), err))
    if verify == "decode":
        decode_image(data, _name(where))


def _name(where):
    return where() if callable(where) else where


class FaceDataset(torch.utils.data.Dataset):
    """N face images with integer identity labels, in a fixed dataset order.

    Subclasses set `labels` (int64, len N, values in [0, num_classes)) and
    `num_classes`, and implement read_bytes(i), name(i) and where(i).

    ds[i] -> (uint8 tensor 3 x H x W, int label), for a DataLoader. Files are
    opened lazily per process, so instances are safe to hand to workers.
    """

    labels = None
    num_classes = 0
    image_size = None  # (h, w) when the dataset declares it

    def __len__(self):
        return len(self.labels)

    def _check_index(self, i):
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError("index %d out of range for a dataset of %d images" % (i, len(self)))
        return i

    def read_bytes(self, i):
        """The encoded image (JPEG, PNG, ...) of face i."""
        raise NotImplementedError

    def name(self, i):
        """A stable name of face i: the relative path, or rec:<key>."""
        raise NotImplementedError

    def where(self, i):
        """Face i's location for error messages: the file and the record."""
        return self.name(i)

    def files(self):
        """The files this dataset reads (outputs must never replace them)."""
        return []

    def trees(self):
        """Folders whose whole content is the dataset (nothing may be written inside)."""
        return []

    def approx_bytes(self, indices):
        """About how many bytes the encoded images of `indices` take."""
        return sum(len(self.read_bytes(int(i))) for i in indices)

    def decode(self, i):
        """Face i as an H x W x 3 uint8 RGB array."""
        i = self._check_index(i)
        return decode_image(self.read_bytes(i), self.where(i))

    def __getitem__(self, i):
        img = self.decode(i)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.labels[i])

    def __repr__(self):
        return "%s(%d images, %d classes)" % (type(self).__name__, len(self), self.num_classes)
