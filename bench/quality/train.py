"""Embedding networks, a margin-softmax head and the training loop of the quality bench.

The same loop trains the proxy and every final model: SGD with momentum,
linear warm-up then cosine decay over a fixed number of epochs (so a core set
of 60% gets 60% of the steps: the compute saving being measured), CosFace or
ArcFace logits (facenms.models heads), cross-entropy.
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facenms.models import get_head, get_model


class MLPNet(nn.Module):
    """For the simulated world's image vectors."""

    def __init__(self, in_dim, emb_dim=64, width=384):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.PReLU(width),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.PReLU(width),
            nn.Linear(width, emb_dim), nn.BatchNorm1d(emb_dim))

    def forward(self, x):
        return self.body(x)


class SmallCNN(nn.Module):
    """For real face images (3 x H x W uint8, any size): four strided conv stages."""

    def __init__(self, emb_dim=128, width=32):
        super().__init__()
        layers, c = [], 3
        for i in range(4):
            o = width * 2 ** i
            layers += [nn.Conv2d(c, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.PReLU(o),
                       nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.PReLU(o)]
            c = o
        self.body = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.LazyLinear(emb_dim),
                                nn.BatchNorm1d(emb_dim))

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = (x.float() - 127.5) / 128.0
        return self.fc(self.body(x))


class ArraySource:
    """Training inputs held in memory as one float32 array."""

    def __init__(self, x):
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))

    def new_model(self, emb_dim):
        return MLPNet(self.x.shape[1], emb_dim)

    def batches(self, idx, batch_size, shuffle, gen):
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=gen)]
        for a in range(0, len(idx), batch_size):
            b = idx[a:a + batch_size]
            yield self.x[b], b


class _Scaled(nn.Module):
    """uint8 images -> [-1, 1] floats, the input facenms.models backbones expect."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = (x.float() - 127.5) / 128.0
        return self.net(x)


class ImageSource:
    """Training inputs from a facenms.data FaceDataset, resized, via a DataLoader.

    backbone: "small-cnn" (cheap, any image size) or a facenms.models name
    such as "mobilefacenet" or "iresnet18" (for a GPU and 112 x 112 faces).
    """

    def __init__(self, dataset, image_size=(112, 112), workers=2, backbone="small-cnn"):
        self.ds, self.size, self.workers = dataset, tuple(image_size), workers
        self.backbone = backbone

    def new_model(self, emb_dim):
        if self.backbone == "small-cnn":
            return SmallCNN(emb_dim)
        return _Scaled(get_model(self.backbone, embedding_size=emb_dim,
                                 input_size=self.size[0]))

    def _load(self, i):
        img, _ = self.ds[int(i)]
        if tuple(img.shape[1:]) != self.size:
            img = F.interpolate(img[None].float(), size=self.size, mode="bilinear",
                                align_corners=False)[0].round().clamp(0, 255).byte()
        return img, int(i)

    def batches(self, idx, batch_size, shuffle, gen):
        idx = np.asarray(idx, dtype=np.int64)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=gen).numpy()]
        loader = torch.utils.data.DataLoader(
            _Indexed(self, idx), batch_size=batch_size, num_workers=self.workers)
        for x, i in loader:
            if shuffle and torch.rand((), generator=gen) < 0.5:  # horizontal flip
                x = x.flip(3)
            yield x, i


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, src, idx):
        self.src, self.idx = src, idx

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, k):
        return self.src._load(self.idx[k])


def train(source, labels, idx, num_classes, *, epochs, seed, emb_dim=64, batch_size=256,
          lr=0.1, weight_decay=5e-4, head="cosface", scale=32.0, margin=0.3, warmup=1.0,
          log=None):
    """Train a fresh model on faces `idx`; returns (model in eval mode, stats).

    stats: wall_s, cpu_s (process CPU time: steadier than wall time on a shared
    machine) and steps.

    Same seed -> same initial weights, so models trained on different core sets
    differ only by their data.
    """
    torch.manual_seed(seed)
    model = source.new_model(emb_dim)
    head = get_head(head, emb_dim, num_classes, scale=scale, margin=margin)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = max(1, math.ceil(len(idx) / batch_size))
    total = epochs * steps_per_epoch
    warm = max(1, int(warmup * steps_per_epoch))
    # one dry batch sizes the lazy layers before the optimizer sees them
    with torch.no_grad():
        model.eval()
        model(next(source.batches(idx[:2], 2, False, gen))[0])
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / total))))
    t0, c0 = time.perf_counter(), time.process_time()
    steps = 0
    model.train()
    for ep in range(epochs):
        loss_sum, seen = 0.0, 0
        for x, i in source.batches(idx, batch_size, True, gen):
            if len(i) < 2:
                continue  # BatchNorm needs two samples
            logits = head(model(x), y_all[i])
            loss = F.cross_entropy(logits, y_all[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            loss_sum += float(loss.detach()) * len(i)
            seen += len(i)
        if log is not None:
            log("    epoch %d/%d loss %.3f" % (ep + 1, epochs, loss_sum / max(1, seen)))
    model.eval()
    return model, {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                   "steps": steps}


@torch.no_grad()
def embed(model, source, idx=None, batch_size=1024):
    """Unit-norm float32 embeddings of faces `idx` (all when None) of a source or an array."""
    if not isinstance(source, (ArraySource, ImageSource)):
        source = ArraySource(source)
    if idx is None:
        idx = np.arange(len(source.x) if isinstance(source, ArraySource) else len(source.ds))
    idx = np.asarray(idx)
    out = []
    for x, _ in source.batches(idx, batch_size, False, None):
        e = model(x)
        if isinstance(source, ImageSource):  # insightface sums the flipped image's embedding
            e = e + model(x.flip(3))
        out.append(F.normalize(e.float(), dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
