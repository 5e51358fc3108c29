"""A tiny generated face-like image dataset, for tests and `facenms demo`.

Each identity is a smooth random colour pattern; its images are that pattern
shifted a little, re-lit and noised, so a small CNN can learn the identities in
a few steps. A fraction of images are near-duplicates of an earlier image of
the same identity (the redundancy Face-NMS removes). Images alternate PNG and
JPEG unless `fmt` says otherwise.
"""
import io
import os

import numpy as np
from PIL import Image

from ..io import AtomicDir
from .recdataset import write_face_recordio


def _encode(img, fmt):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=95)
    return buf.getvalue()


def generate(num_identities=8, images_per_identity=(4, 8), size=32, duplicates=0.3,
             seed=0, fmt="mixed"):
    """Yield (label, file name, encoded bytes), identities in order 0..C-1."""
    if fmt not in ("mixed", "png", "jpg"):
        raise ValueError("fmt must be 'mixed', 'png' or 'jpg', got %r" % (fmt,))
    rng = np.random.default_rng(seed)
    lo, hi = images_per_identity
    k = 0
    for c in range(num_identities):
        grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        proto = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), np.float32)
        made = []
        for j in range(int(rng.integers(lo, hi + 1))):
            if made and rng.random() < duplicates:
                base = made[int(rng.integers(len(made)))]
                img = base + rng.normal(0, 2, base.shape)
            else:
                dy, dx = rng.integers(-2, 3, 2)
                img = np.roll(proto, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.8, 1.2)
                img = img + rng.normal(0, 8, img.shape)
            img = np.clip(img, 0, 255).astype(np.uint8)
            made.append(img.astype(np.float32))
            f = fmt if fmt != "mixed" else ("png" if k % 2 == 0 else "jpg")
            yield c, "%d.%s" % (j, f), _encode(img, f)
            k += 1


def make_image_folder(root, overwrite=False, **kwargs):
    """Write generate(**kwargs) as root/id<c>/<j>.<ext>; returns root."""
    with AtomicDir(root, overwrite=overwrite) as d:
        for c, fname, data in generate(**kwargs):
            sub = os.path.join(d.tmp, "id%d" % c)
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, fname), "wb") as f:
                f.write(data)
    return os.fspath(root)


def make_recordio(out_dir, layout="insightface", **kwargs):
    """Write generate(**kwargs) as out_dir/train.rec, train.idx and property; returns out_dir."""
    items = list(generate(**kwargs))
    size = kwargs.get("size", 32)
    os.makedirs(out_dir, exist_ok=True)
    write_face_recordio(os.path.join(out_dir, "train.rec"), [c for c, _, _ in items],
                        (b for _, _, b in items), num_classes=kwargs.get("num_identities", 8),
                        image_size=(size, size), layout=layout)
    return os.fspath(out_dir)
