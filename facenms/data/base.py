"""The interface every face dataset offers (image folders, RecordIO)."""
import io

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

    def decode(self, i):
        """Face i as an H x W x 3 uint8 RGB array."""
        i = self._check_index(i)
        return decode_image(self.read_bytes(i), self.where(i))

    def __getitem__(self, i):
        img = self.decode(i)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.labels[i])

    def __repr__(self):
        return "%s(%d images, %d classes)" % (type(self).__name__, len(self), self.num_classes)
