"""A tiny in-memory face dataset with the FaceDataset interface of facenms.data
(labels, num_classes, decode, read_bytes, name, __getitem__), for the proxy and
extraction tests. Each identity is a random low-resolution colour layout;
its faces are that layout shifted by a pixel or two, brightened or darkened,
with noise: easy to learn, not trivial. Saved to / loaded from one .npz so
that torchrun workers can open the same data."""
import numpy as np
import torch


class TinyFaces:
    def __init__(self, images, labels):
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self):
        return len(self.labels)

    def decode(self, i):
        return self.images[i]

    def read_bytes(self, i):
        return self.images[i].tobytes()

    def name(self, i):
        return "%d/%d.png" % (self.labels[i], i)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i].transpose(2, 0, 1).copy()), int(self.labels[i])


class Crashing:
    """Wraps a dataset and fails after `after` reads: a crash in the middle of a run."""

    def __init__(self, ds, after):
        self.ds, self.after, self.reads = ds, after, 0
        self.labels = ds.labels

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.after:
            raise RuntimeError("simulated crash")
        return self.ds[i]


def make(n_ids=8, per_id=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, size=(n_ids, 4, 4, 3)).astype(np.float32)
    base = grid.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    labels = np.repeat(np.arange(n_ids), per_id)
    imgs = base[labels]
    shifts = rng.integers(-2, 3, size=(len(labels), 2))
    imgs = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(imgs, shifts)])
    imgs = imgs * rng.uniform(0.7, 1.2, size=(len(labels), 1, 1, 1))
    imgs += rng.normal(0, 20, size=imgs.shape)
    return TinyFaces(np.clip(imgs, 0, 255).round().astype(np.uint8), labels)


def save(ds, path):
    np.savez(path, images=ds.images, labels=ds.labels)


def load(path):
    z = np.load(path)
    return TinyFaces(z["images"], z["labels"])
