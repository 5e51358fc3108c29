"""Face thumbnails for the HTML report: each image decoded and resized once, in a thread
pool (PIL releases the GIL while it decodes), encoded as JPEG in memory. An image that
does not decode becomes a grey placeholder tile that names it."""
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageDraw

__all__ = ["Thumb", "make_thumbnails", "THUMB_SIZE"]

THUMB_SIZE = 96


@dataclass
class Thumb:
    row: int  # the face's row in the features
    index: int  # its position in the dataset
    name: str  # the dataset's name for it
    data: bytes  # the JPEG
    width: int
    height: int
    error: Optional[str] = None  # why it is a placeholder

    @property
    def file(self):
        return "thumbs/%d.jpg" % self.index


def _encode(img):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, optimize=False)
    return buf.getvalue()


def _placeholder(size, name, why):
    img = Image.new("RGB", (size, size), (200, 200, 200))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, size - 1, size - 1], outline=(120, 0, 0), width=2)
    lines = ["cannot decode"] + [name[k:k + 14] for k in range(0, min(len(name), 56), 14)]
    for j, line in enumerate(lines):
        d.text((4, 4 + 12 * j), line, fill=(90, 0, 0))
    return img


def _one(dataset, row, index, size):
    name = str(dataset.name(index))
    try:
        data = dataset.read_bytes(index)
        with Image.open(io.BytesIO(bytes(data))) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly
            img = img.convert("RGB")
            img.thumbnail((size, size), Image.BILINEAR)
        error = None
    except Exception as e:  # PIL raises several types for bad data; a missing file too
        error = "%s: %s" % (type(e).__name__, " ".join(str(e).split())[:200])
        img = _placeholder(size, name, error)
    return Thumb(row, index, name, _encode(img), img.width, img.height, error)


def make_thumbnails(dataset, rows, dataset_index=None, *, size=THUMB_SIZE, workers=None):
    """[Thumb] for feature rows `rows` (in order), each decoded once, in parallel.

    dataset_index: the dataset position of every feature row (None: the same).
    """
    rows = [int(r) for r in rows]
    where = [int(dataset_index[r]) if dataset_index is not None else r for r in rows]
    if not rows:
        return []
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: _one(dataset, a[0], a[1], size), zip(rows, where)))
