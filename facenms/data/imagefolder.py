"""Image folders: root/<identity>/<image>, one folder per identity.

Folder names are sorted naturally ("id2" before "id10") and numbered 0..C-1;
images inside a folder are sorted the same way. Hidden entries (".name") and
files that are not images (by extension) are ignored; loose files directly
under the root are ignored too.
"""
import os
import re

import numpy as np

from .base import FaceDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".gif")


def natural_key(name):
    """Sort key treating digit runs as numbers: a2 < a10; ties broken by the raw name."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts], name


class ImageFolderDataset(FaceDataset):
    def __init__(self, root):
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise FileNotFoundError("image folder %s not found" % self.root)
        classes = sorted((e.name for e in os.scandir(self.root)
                          if e.is_dir() and not e.name.startswith(".")), key=natural_key)
        if not classes:
            raise ValueError("%s: no identity folders (expected root/<identity>/<image>)"
                             % self.root)
        self.classes = classes
        paths, counts = [], []
        for c in classes:
            d = os.path.join(self.root, c)
            files = sorted((e.name for e in os.scandir(d)
                            if not e.name.startswith(".") and e.is_file()
                            and e.name.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)
            if not files:
                raise ValueError("%s: identity folder has no images (extensions %s)"
                                 % (d, ", ".join(IMAGE_EXTENSIONS)))
            paths.extend(c + "/" + f for f in files)
            counts.append(len(files))
        self._paths = paths
        self.labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
        self.num_classes = len(classes)

    def path(self, i):
        return os.path.join(self.root, self._paths[self._check_index(i)])

    def read_bytes(self, i):
        with open(self.path(i), "rb") as f:
            return f.read()

    def name(self, i):
        return self._paths[self._check_index(i)]

    def where(self, i):
        return self.path(i)

    def trees(self):
        return [self.root]

    def approx_bytes(self, indices):
        return sum(os.path.getsize(os.path.join(self.root, self._paths[int(i)])) for i in indices)
