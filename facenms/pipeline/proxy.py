"""Proxy model training: the cheap model whose embeddings drive the selection.

A seeded fraction of the identities (or of the faces) is the proxy dataset;
a small backbone with a margin-softmax head is trained on it with SGD,
mixed precision, and torchrun/DDP when launched that way. A checkpoint is
written atomically after every epoch and a rerun resumes from it.

    ckpt = train_proxy("train.rec", "out/proxy", fraction=0.1, epochs=10)
    model = load_proxy(ckpt)           # the backbone, in eval mode
"""
import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..io.progress import progress_bar
from ..models import get_head, get_model
from ..scale.dist import join
from . import runtime as rt
from .precision import check_amp, describe, resolve_amp

FORMAT = "facenms-proxy/1"
CHECKPOINT = "proxy.pt"
SUBSETS = ("identities", "faces")
SCHEDULES = ("cosine", "poly")
# settings that must match for a checkpoint to be resumed
_RESUME_KEYS = ("n_faces", "subset", "fraction", "seed", "backbone", "head",
                "embedding_size", "input_size", "model_kwargs", "scale", "margin",
                "epochs", "global_batch", "lr", "schedule", "warmup_epochs")


def proxy_subset(labels, subset="identities", fraction=0.1, seed=0):
    """The proxy dataset: (sorted face indices int64, their labels re-numbered
    0..C-1 in the order of the original labels). ``subset="identities"`` takes
    round(fraction * identities) whole identities, ``"faces"`` takes
    round(fraction * faces) faces; the same seed gives the same subset."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be 1-D, got shape %s" % (labels.shape,))
    if subset not in SUBSETS:
        raise ValueError("subset must be one of %s, got %r" % (SUBSETS, subset))
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1], got %r" % (fraction,))
    ids, inv = np.unique(labels, return_inverse=True)
    if len(ids) < 2:
        raise ValueError("proxy training needs at least 2 identities, the dataset has %d"
                         % len(ids))
    rng = np.random.default_rng(seed)
    if subset == "identities":
        k = min(len(ids), max(2, int(round(fraction * len(ids)))))
        chosen = np.sort(rng.choice(len(ids), size=k, replace=False))
        idx = np.flatnonzero(np.isin(inv, chosen))
        new = np.searchsorted(chosen, inv[idx])
    else:
        k = min(len(labels), max(2, int(round(fraction * len(labels)))))
        idx = np.sort(rng.choice(len(labels), size=k, replace=False))
        _, new = np.unique(inv[idx], return_inverse=True)
        if new.max() < 1:
            raise ValueError("the proxy subset of %d faces (fraction %g, seed %d) holds a "
                             "single identity; raise the fraction" % (k, fraction, seed))
    return idx.astype(np.int64), new.astype(np.int64)


def lr_factor(step, total, warmup, schedule):
    """LR multiplier at ``step`` of ``total``: linear warm-up over ``warmup``
    steps, then cosine to 0 or polynomial (power 2, as insightface) to 0."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** 2


class ProxyNet(nn.Module):
    """Backbone + margin head as one module, so DDP syncs both."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x, labels):
        return self.head(self.backbone(x), labels)


def _build(config, num_classes):
    backbone = get_model(config["backbone"], embedding_size=config["embedding_size"],
                         input_size=config["input_size"], **config["model_kwargs"])
    head = get_head(config["head"], config["embedding_size"], num_classes,
                    scale=config["scale"], margin=config["margin"])
    return backbone, head


def load_checkpoint(path, map_location="cpu"):
    """A proxy checkpoint as a dict (config, epoch, history, state dicts)."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError("cannot read proxy checkpoint %s: %s" % (path, e)) from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError("%s is not a facenms proxy checkpoint (format %r, expected %r)"
                         % (path, ck.get("format") if isinstance(ck, dict) else None, FORMAT))
    return ck


def load_proxy(path, device="cpu"):
    """The trained backbone of a proxy checkpoint, in eval mode on ``device``."""
    ck = load_checkpoint(path)
    backbone = get_model(ck["config"]["backbone"],
                         embedding_size=ck["config"]["embedding_size"],
                         input_size=ck["config"]["input_size"],
                         **ck["config"]["model_kwargs"])
    backbone.load_state_dict(ck["backbone"])
    return backbone.to(device).eval()


def _check_resumable(ck, config, path):
    old = ck["config"]
    diff = ["%s: checkpoint %r, now %r" % (k, old.get(k), config[k])
            for k in _RESUME_KEYS if old.get(k) != config[k]]
    if diff:
        raise ValueError("cannot resume %s, it was trained with other settings (%s); "
                         "delete it or pass resume=False" % (path, "; ".join(diff)))


def _summary(config, ck_path, history, n_faces, n_classes, *, seconds=None, trained=True):
    first, last = history[0], history[-1]
    head = "proxy: %s+%s on %d faces of %d identities (%g%% of the %s, seed %d, %s)" % (
        config["backbone"], config["head"], n_faces, n_classes, 100 * config["fraction"],
        config["subset"], config["seed"], describe(config.get("amp")))
    body = "loss %.4f -> %.4f (epoch %d -> %d of %d)" % (
        first["loss"], last["loss"], first["epoch"], last["epoch"], config["epochs"])
    tail = ("%.1f s" % seconds) if trained else "already trained"
    return "%s; %s; %s -> %s" % (head, body, tail, ck_path)


def train_proxy(dataset, out_dir, *, subset: str = "identities", fraction: float = 0.1,
                seed: int = 0, backbone: str = "iresnet18", head: str = "arcface",
                embedding_size: int = 512, input_size: int = 112, epochs: int = 10,
                batch_size: int = 128, lr: float = 0.1, momentum: float = 0.9,
                weight_decay: float = 5e-4, schedule: str = "cosine",
                warmup_epochs: float = 0.0, scale: float = 64.0, margin: Optional[float] = None,
                model_kwargs: Optional[dict] = None, amp: Optional[str] = "auto",
                workers: Optional[int] = None, resume: bool = True, log_every: int = 50,
                device=None, progress: bool = True, clip_grad: float = 5.0) -> str:
    """Trains a proxy model and returns the path of its checkpoint
    (``out_dir/proxy.pt``). ``dataset``: a path for facenms.data.open_dataset
    or a FaceDataset. ``batch_size`` is per process; under torchrun every rank
    trains on its share (DistributedSampler) and rank 0 writes the checkpoint.
    With ``resume`` a finished checkpoint is returned as is and an unfinished
    one is continued from its last epoch. ``amp``: "auto" (bf16 where the device
    computes it natively, fp16 on a CUDA device without bf16, else fp32;
    the checkpoint records what it resolved to), "bf16", "fp16" (with a
    GradScaler) or None. ``workers``: DataLoader processes (default: from the
    device and the core count, see ``runtime.default_workers``)."""
    t0 = time.time()
    if schedule not in SCHEDULES:
        raise ValueError("schedule must be one of %s, got %r" % (SCHEDULES, schedule))
    if epochs < 1 or batch_size < 2:
        raise ValueError("need epochs >= 1 and batch_size >= 2 (BatchNorm), got %r, %r"
                         % (epochs, batch_size))
    amp = check_amp(amp)
    ds = rt.open_dataset(dataset)
    labels = rt.dataset_labels(ds)
    group, dev = join(device)
    amp = resolve_amp(amp, dev, "train-proxy")
    if workers is None:
        workers = rt.default_workers(dev)
    config = dict(
        n_faces=len(ds), subset=subset, fraction=float(fraction), seed=int(seed),
        backbone=backbone, head=head, embedding_size=int(embedding_size),
        input_size=int(input_size), model_kwargs=dict(model_kwargs or {}),
        scale=float(scale), margin=None if margin is None else float(margin),
        epochs=int(epochs), global_batch=int(batch_size) * group.world, lr=float(lr),
        momentum=float(momentum), weight_decay=float(weight_decay),
        schedule=schedule, warmup_epochs=float(warmup_epochs), amp=amp)
    run = _Run(config=config, group=group, dev=dev, batch_size=batch_size, workers=workers,
               log_every=log_every, progress=progress, clip_grad=clip_grad, t0=t0)
    return _train(ds, labels, out_dir, run, resume)


@dataclass(frozen=True)
class _Run:
    """One train_proxy call as its loops see it."""
    config: dict
    group: object  # facenms.scale.dist's process group view (rank, world, main, sum)
    dev: torch.device
    batch_size: int
    workers: int
    log_every: int
    progress: bool
    clip_grad: float
    t0: float


@dataclass(frozen=True)
class _Loop:
    """What every epoch of one training uses."""
    model: nn.Module  # the network, DDP-wrapped under torchrun
    loader: DataLoader
    sampler: DistributedSampler
    ck_path: str
    n_proxy_faces: int
    bar: object  # a progress bar or None


def _train(ds, labels, out_dir, run, resume):
    config, group, dev, batch_size, workers = run.config, run.group, run.dev, run.batch_size, \
        run.workers
    os.makedirs(out_dir, exist_ok=True)
    ck_path = os.path.join(out_dir, CHECKPOINT)
    idx, sub_labels = proxy_subset(labels, config["subset"], config["fraction"],
                                   config["seed"])
    n_classes = int(sub_labels.max()) + 1

    ck = None
    if resume and os.path.exists(ck_path):
        ck = load_checkpoint(ck_path)
        _check_resumable(ck, config, ck_path)
        if ck["epoch"] >= config["epochs"]:
            if group.main:
                print(_summary(config, ck_path, ck["history"], len(idx), n_classes,
                               trained=False), flush=True)
            return ck_path
    state = _State(config, n_classes, dev, ck)
    del ck
    faces = rt.IndexedFaces(ds, idx, sub_labels, size=config["input_size"])
    sampler = DistributedSampler(faces, num_replicas=group.world, rank=group.rank, shuffle=True,
                                 seed=config["seed"], drop_last=True)
    loader = DataLoader(faces, batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=workers, pin_memory=dev.type == "cuda",
                        persistent_workers=workers > 0, collate_fn=rt.collate)
    steps = len(loader)
    if steps == 0:
        raise ValueError("the proxy subset has %d faces, %d per process: not one full batch "
                         "of %d; lower batch_size or raise fraction"
                         % (len(faces), len(sampler), batch_size))
    state.schedule(steps)
    model = state.net
    if group.world > 1:
        model = DistributedDataParallel(
            state.net, device_ids=[dev.index] if dev.type == "cuda" else None)

    bar = progress_bar(run.progress and group.main,
                       total=(config["epochs"] - state.start) * steps, desc="proxy", unit="batch")
    loop = _Loop(model=model, loader=loader, sampler=sampler, ck_path=ck_path,
                 n_proxy_faces=len(idx), bar=bar)
    with _cudnn_benchmark(dev):
        _epochs(run, state, loop)
    if bar is not None:
        bar.close()
    if group.main:
        print(_summary(config, ck_path, state.history, len(idx), n_classes,
                       seconds=time.time() - run.t0), flush=True)
    return ck_path


@contextlib.contextmanager
def _cudnn_benchmark(dev):
    """cuDNN picks the fastest convolutions for the (fixed) batch shape; training
    makes no bit-for-bit promise, so the timing-based choice is fine here."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = old or dev.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def _epochs(run, state, loop):
    config, group, steps = run.config, run.group, len(loop.loader)
    for epoch in range(state.start, config["epochs"]):
        te = time.time()
        loop.sampler.set_epoch(epoch)
        # horizontal flips drawn from (seed, epoch, rank): a rerun sees the same ones
        gen = torch.Generator().manual_seed(
            (config["seed"] * 1_000_003 + epoch) * 4099 + group.rank)
        loss_sum = _epoch(run, state, loop, gen, epoch)
        mean = group.sum(loss_sum).item() / (steps * group.world)
        if not math.isfinite(mean):
            raise FloatingPointError(
                "proxy training diverged: mean loss %r in epoch %d; lower lr or use "
                "amp='bf16' / None" % (mean, epoch + 1))
        state.history.append(dict(epoch=epoch + 1, loss=mean, lr=state.lr(),
                                  seconds=time.time() - te))
        if group.main:
            rt.atomic_torch_save(state.checkpoint(epoch + 1, loop.n_proxy_faces), loop.ck_path)
        group.barrier()  # no rank runs ahead of the checkpoint it may have to resume from


class _State:
    """The network, optimiser, loss scaler and schedule, fresh or from a checkpoint."""

    def __init__(self, config, n_classes, dev, ck):
        self.config, self.n_classes = config, n_classes
        torch.manual_seed(config["seed"])  # the same initial weights on every rank
        self.backbone, self.head = _build(config, n_classes)
        # channels_last: the layout oneDNN and cuDNN convolve fastest, forward and backward
        self.net = ProxyNet(self.backbone, self.head).to(dev, memory_format=torch.channels_last)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=config["lr"], momentum=config["momentum"],
                                   weight_decay=config["weight_decay"])
        # fp16 gradients underflow without loss scaling; bf16 has float32's range
        self.scaler = torch.amp.GradScaler(dev.type, enabled=config["amp"] == "fp16")
        self.start, self.history = 0, []
        if ck is not None:
            self.backbone.load_state_dict(ck["backbone"])
            self.head.load_state_dict(ck["head"])
            self.opt.load_state_dict(ck["optimizer"])
            if ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
            self.start, self.history = int(ck["epoch"]), list(ck["history"])

    def schedule(self, steps):
        c = self.config
        total = c["epochs"] * steps
        warmup = int(round(c["warmup_epochs"] * steps))
        done = self.start * steps  # a resumed schedule continues where the checkpoint stopped
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(done + s, total, warmup, c["schedule"]))

    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def checkpoint(self, epoch, n_proxy_faces):
        return dict(format=FORMAT, config=self.config, epoch=epoch, history=self.history,
                    n_classes=self.n_classes, n_proxy_faces=n_proxy_faces,
                    backbone=self.backbone.state_dict(), head=self.head.state_dict(),
                    optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict())


def _epoch(run, state, loop, gen, epoch):
    """One pass over the loader; returns the summed loss (a device tensor)."""
    model, dev, bar = loop.model, run.dev, loop.bar
    model.train()
    amp, opt, scaler = state.config["amp"], state.opt, state.scaler
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    for step, (img, y, _) in enumerate(loop.loader):
        x = rt.to_input(img, dev, channels_last=True)
        flip = (torch.rand(len(x), generator=gen) < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x).contiguous(
            memory_format=torch.channels_last)
        y = y.to(dev, non_blocking=True)
        with rt.autocast(dev, amp):
            logits = model(x, y)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if run.clip_grad:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(state.params, run.clip_grad)
        scaler.step(opt)
        scaler.update()
        with warnings.catch_warnings():  # a step the scaler skipped (inf grads) is fine
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            state.sched.step()
        loss_sum += loss.detach().double()
        if bar is not None:
            bar.update()
            if step % max(1, run.log_every) == 0:
                bar.set_postfix(epoch=epoch + 1, loss="%.4f" % loss.item(), lr="%.3g" % state.lr())
    return loss_sum
