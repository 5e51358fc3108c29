"""What the pipeline stages share: the dataset and its labels, faces as
model input, autocast, and small files written atomically."""
import contextlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..core.inputs import check_labels
from ..io import AtomicFiles

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None, "none": None,
              "fp32": None}


def open_dataset(dataset):
    """A FaceDataset from a path (through facenms.data), or the object itself."""
    if isinstance(dataset, (str, os.PathLike)):
        from ..data import open_dataset as open_path
        return open_path(dataset)
    missing = [a for a in ("labels", "__getitem__", "__len__") if not hasattr(dataset, a)]
    if missing:
        raise TypeError("dataset must be a path or a FaceDataset-like object (labels, "
                        "__len__, __getitem__ -> (uint8 CHW tensor, label)); %s lacks %s"
                        % (type(dataset).__name__, ", ".join(missing)))
    return dataset


def dataset_labels(ds):
    return check_labels(ds.labels, len(ds), "dataset labels").astype(np.int64, copy=False)


def autocast(device, amp):
    """Autocast context for amp in {"bf16", "fp16", None}."""
    if amp not in AMP_DTYPES:
        raise ValueError("amp must be 'bf16', 'fp16' or None, got %r" % (amp,))
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


CHANNEL_ORDERS = ("rgb", "bgr")


def per_channel(value, what):
    """A scalar or 3 values (e.g. "127.5" or "123.7,116.3,103.5") -> 3 floats."""
    if isinstance(value, str):
        value = [float(v) for v in value.split(",")]
    v = np.atleast_1d(np.asarray(value, dtype=np.float64)).tolist()
    if len(v) == 1:
        v = v * 3
    if len(v) != 3 or not all(np.isfinite(v)):
        raise ValueError("%s must be one number or 3 (one per channel), got %r" % (what, value))
    if what == "std" and min(v) <= 0:
        raise ValueError("std must be > 0, got %r" % (value,))
    return v


def default_workers(device):
    """DataLoader workers that leave the cores to the model. On the CPU the model
    uses every core and decoding a face costs ~1% of embedding it, so a worker
    process only preempts the intra-op threads (an OpenMP barrier waits for the
    slowest): none below 16 cores. On a GPU decoding is the CPU's only job:
    the cores of this rank's share, less one for the main process, up to 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if torch.device(device).type == "cpu":
        return (cores or 1) // 16
    per_rank = (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, per_rank - 1))


def to_input(images, device, *, size=None, mean=127.5, std=127.5, channel_order="rgb",
             channels_last=False):
    """uint8 NCHW RGB -> float NCHW, (x - mean) / std per channel (insightface:
    [-1, 1]), channels swapped for "bgr", resized to size x size when it
    differs. Done on the device: uint8 is 4x less to copy than float.
    channels_last: the NHWC memory layout (same values), faster for convolutions."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError("expected a uint8 batch N x 3 x H x W, got %s %s"
                         % (images.dtype, tuple(images.shape)))
    x = images.to(device, non_blocking=True)
    if channel_order == "bgr":
        x = x.flip(1)
    elif channel_order != "rgb":
        raise ValueError("channel_order must be 'rgb' or 'bgr', got %r" % (channel_order,))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt).float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).contiguous(memory_format=fmt)
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        return (x - mean) / std
    m = torch.tensor(per_channel(mean, "mean"), device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(per_channel(std, "std"), device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


class IndexedFaces(torch.utils.data.Dataset):
    """The faces ``indices`` of a dataset as (uint8 image, label, index); images of
    another size than ``size`` are resized here (in the loader workers) so that
    they batch."""

    def __init__(self, dataset, indices=None, labels=None, size=None):
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.labels = labels
        self.size = size

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img, label = self.dataset[j]
        img = torch.as_tensor(img)
        if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
            raise ValueError("face %d: dataset returned %s %s, expected a uint8 3 x H x W "
                             "image" % (j, img.dtype, tuple(img.shape)))
        if self.size is not None and tuple(img.shape[1:]) != (self.size, self.size):
            img = F.interpolate(img[None].float(), size=(self.size, self.size),
                                mode="bilinear", align_corners=False, antialias=True)
            img = img[0].round_().clamp_(0, 255).to(torch.uint8)
        if self.labels is not None:
            label = int(self.labels[i])
        return img, int(label), j


def collate(batch):
    """(uint8 N x 3 x H x W, int64 labels, int64 indices) from IndexedFaces items.
    Stacked by numpy: torch.stack runs an OpenMP region for a few MB of copy,
    and in the main process its threads wait on cores the model (or another
    process) holds; that wait cost more than the decoding on 2 cores."""
    imgs, labels, idx = zip(*batch)
    stacked = torch.from_numpy(np.stack([im.numpy() for im in imgs]))
    return stacked, torch.tensor(labels, dtype=torch.int64), torch.tensor(idx, dtype=torch.int64)


def atomic_torch_save(obj, path):
    with AtomicFiles() as out:
        torch.save(obj, out.open(path))


def atomic_write_text(text, path):
    with AtomicFiles() as out:
        out.open(path, "w").write(text)


def read_json(path, default=None):
    """A JSON file's content, or `default` when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, doc):
    """A small JSON file, written atomically."""
    with AtomicFiles() as out:
        with out.open(path, "w") as f:
            json.dump(doc, f, indent=2)
