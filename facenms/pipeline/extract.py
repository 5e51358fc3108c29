"""Feature extraction: an embedding for every face, L2-normalised, float16, in a
``.npy`` (memory-mappable by the selection) that an interrupted run resumes.

    extract("train.rec", "out/proxy/proxy.pt", "out/features.npy", flip=True)

The model is a proxy checkpoint, a TorchScript file, a ``torch.export`` program
(``.pt2``), an ONNX file (through onnxruntime) or an ``nn.Module``. Work is
cut into fixed batches of the dataset in index order, [k*B, (k+1)*B); a
batch's output bytes depend only on its faces, so the batches may run in any
order, on any number of ranks, across any number of restarts, and the file
comes out byte-identical (on the same hardware and software). The files it
works in, and how a resume checks them, are described in feature_file.
"""
import hashlib
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.inputs import check_count
from ..io.progress import progress_bar
from ..scale.dist import join
from . import runtime as rt
from .embedders import load_model
from .feature_file import MARK, Rows, batches_done, finish, open_partial, output_paths
from .precision import check_amp, describe, resolve_amp

__all__ = ["extract", "batches_done", "MARK"]

def _where(ds, i):
    for attr in ("where", "name"):
        if hasattr(ds, attr):
            try:
                return getattr(ds, attr)(i)
            except Exception:  # only for an error message
                pass
    return "?"


def _embed(net, x, device, amp, flip):
    ctx = rt.autocast(device, amp) if net.uses_autocast else rt.autocast(device, None)
    with torch.inference_mode(), ctx:
        e = net(x)
        if flip:  # flip-sum: the embedding of the face plus its mirror image
            e = e + net(x.flip(-1))
    return e.float()


def extract(dataset, model, out_path, *, batch_size: int = 256, workers: Optional[int] = None,
            amp: Optional[str] = "auto", flip: bool = False, device=None,
            input_size: Optional[int] = None, mean=127.5, std=127.5, channel_order: str = "rgb",
            labels_path=None, resume: bool = True, progress: bool = True,
            sync_every: float = 10.0, pin_memory: Optional[bool] = None) -> str:
    """Embeds every face of ``dataset`` with ``model`` into ``out_path`` (N x d
    float16 .npy, rows L2-normalised) and its labels into ``labels_path``
    (default: labels.npy beside); returns ``out_path``.

    ``amp``: "auto" (bf16 where the device computes it natively, fp16 on a
    CUDA device without bf16, else fp32), "bf16" / "fp16" autocast or None;
    the precision it resolves to is the one recorded; ``flip``: add the embedding of
    the mirrored face; ``input_size``: resize faces to this square size
    (default: the model's own when it states one, else the images' size);
    ``mean``/``std``: pixel normalisation (x - mean) / std, one number or one
    per channel in the model's channel order, (x - 127.5) / 127.5 as
    insightface; ``channel_order``: "rgb" or "bgr", what the model takes (the
    layout, NCHW or NHWC, comes from an ONNX model's input shape).
    ``workers``: DataLoader processes (default: runtime.default_workers);
    ``pin_memory``: page-locked batches for the copy to a GPU (default: on CUDA).
    Under torchrun every rank takes a contiguous share of the batches still to
    do, into the same file; rank 0 finishes it. With ``resume`` a finished
    output with the same settings is kept as is and an unfinished one is
    continued; ``sync_every`` (s) is how often done batches are recorded."""
    t0 = time.time()
    check_count(batch_size, "batch_size", 1)
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or input_size < 1):
        raise ValueError("input_size must be a positive integer (pixels), got %r"
                         % (input_size,))
    if channel_order not in rt.CHANNEL_ORDERS:
        raise ValueError("channel_order must be 'rgb' or 'bgr', got %r" % (channel_order,))
    mean, std = rt.per_channel(mean, "mean"), rt.per_channel(std, "std")
    amp = check_amp(amp)
    ds = rt.open_dataset(dataset)
    labels = rt.dataset_labels(ds)
    n = len(labels)
    if n == 0:
        raise ValueError("the dataset has no faces")
    group, dev = join(device)
    amp = resolve_amp(amp, dev, "extract")
    net = load_model(model, dev)
    first = rt.IndexedFaces(ds)[0][0][None]
    size = _input_size(net, first, input_size)
    prep = dict(size=size, mean=mean, std=std, channel_order=channel_order,
                channels_last=net.channels_last)
    config = dict(n=n, dim=net.dim or _probe(net, first, dev, amp, flip, prep),
                  batch_size=int(batch_size), flip=bool(flip),
                  amp=amp if net.uses_autocast else None, input_size=size,
                  image_size=list(first.shape[-2:]), mean=mean, std=std,
                  channel_order=channel_order, layout=net.layout, model=net.fingerprint,
                  labels=hashlib.sha256(labels.tobytes()).hexdigest())
    if workers is None:
        workers = rt.default_workers(dev)
    pin = dev.type == "cuda" if pin_memory is None else bool(pin_memory)
    job = _Job(ds=ds, faces=rt.IndexedFaces(ds, size=size), labels=labels, net=net,
               config=config, prep=prep, paths=output_paths(out_path, labels_path), group=group,
               dev=dev, workers=workers, pin=pin, progress=progress, sync_every=sync_every,
               t0=t0)
    return _run(job, resume)


@dataclass(frozen=True)
class _Job:
    """One extract call, as its loop sees it."""
    ds: object  # the FaceDataset (for names in errors)
    faces: rt.IndexedFaces
    labels: np.ndarray
    net: object  # embedders.Embedder
    config: dict  # what the output's fingerprint records
    prep: dict  # how faces become model input (rt.to_input's settings)
    paths: dict  # feature_file.output_paths
    group: object  # facenms.scale.dist.Comm
    dev: torch.device
    workers: int
    pin: bool
    progress: bool
    sync_every: float
    t0: float


def _input_size(net, first, input_size):
    """The square size faces are resized to: asked for, the model's own, or the first
    face's (faces of other sizes are resized to it)."""
    size = input_size or net.input_size
    if size is None:
        h, w = first.shape[-2:]
        if h != w:
            raise ValueError("the first face is %d x %d (not square) and the model states no "
                             "input size: pass input_size" % (h, w))
        size = int(h)
    net.check(size)
    return size


def _probe(net, first, dev, amp, flip, prep):
    """The embedding size, from one face; a model that cannot take the input
    fails here, before any file is made."""
    try:
        return int(_embed(net, rt.to_input(first, dev, **prep), dev, amp, flip).shape[1])
    except Exception as e:
        raise ValueError("%s fails on a 1 x 3 x %d x %d float input (%s: %s)" % (
            net.desc, prep["size"], prep["size"], type(e).__name__, e)) from e


class _Timer:
    """Seconds spent per part of the loop, for the summary line."""

    def __init__(self):
        self.t = dict(decode=0.0, model=0.0, write=0.0, sync=0.0)
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        self.t[part] += now - self.last
        self.last = now

    def __str__(self):
        return "decode %.1f s, model %.1f s, write %.1f s, sync %.1f s" % tuple(self.t.values())


class _Batch:
    """One batch's embeddings on their way to the host. On CUDA the copy is
    queued behind the forward pass into pinned memory and waited for only
    after the next batch is launched, so the GPU never idles on the host:
    one host sync per batch. On the CPU it is a plain tensor."""

    def __init__(self, k, idx, img, job):
        self.k, self.idx = k, idx
        x = rt.to_input(img, job.dev, **job.prep)
        e = _embed(job.net, x, job.dev, job.config["amp"], job.config["flip"])
        norm = e.norm(dim=1, keepdim=True)
        # 0 fine, 1 zero, 2 not finite: sent with the rows, so one copy serves both
        kind = torch.where(norm == 0, 1, torch.where(torch.isfinite(norm), 0, 2))
        out = torch.cat([(e / norm).to(torch.float16).view(torch.int16),
                         kind.to(torch.int16)], 1)
        self.event = None
        if out.device.type == "cuda":
            self.host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            self.host.copy_(out, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = out

    def rows(self):
        """(float16 rows, (position, kind) of the first bad row or None)."""
        if self.event is not None:
            self.event.synchronize()
        host = self.host.numpy()
        bad = np.flatnonzero(host[:, -1])
        rows = np.ascontiguousarray(host[:, :-1]).view(np.float16)
        return rows, (int(bad[0]), int(host[bad[0], -1])) if len(bad) else None


def _run(job, resume):
    config, paths, group = job.config, job.paths, job.group
    n, bs = config["n"], config["batch_size"]
    n_batches = -(-n // bs)
    if group.on_main(lambda: open_partial(paths, config, job.labels, resume, n_batches)) == "done":
        if group.main:
            print("extract: %s already holds %d x %d features for these settings -> %s"
                  % (paths["out"], n, config["dim"], paths["out"]), flush=True)
        return paths["out"]
    todo = np.flatnonzero(~batches_done(paths["progress"]))
    # every rank must split the same list: none may mark a batch done before all have read
    group.barrier()
    mine = np.array_split(todo, group.world)[group.rank]  # a contiguous share of what is left
    timer = _Timer()
    _embed_batches(job, mine, timer)
    group.barrier()
    group.on_main(lambda: finish(paths, config, job.labels, n_batches))
    if group.main:
        was_done = n_batches - len(todo)
        print("extract: %d faces x %d dims float16 with %s (%s%s, %d rank%s)%s; %.1f s (%s) -> %s"
              % (n, config["dim"], job.net.desc, describe(config["amp"]),
                 ", flip-sum" if config["flip"] else "", group.world,
                 "s" if group.world > 1 else "",
                 "; resumed with %d of %d batches done" % (was_done, n_batches)
                 if was_done else "", time.time() - job.t0, timer, paths["out"]), flush=True)
    return paths["out"]


def _embed_batches(job, mine, timer):
    """Embed this rank's batches into the partial file; each batch's rows are written
    while the next one runs, and done batches are marked every sync_every seconds."""
    bs, n = job.config["batch_size"], job.config["n"]
    out = Rows(job.paths["partial"], job.paths["progress"], bs)
    loader = DataLoader(job.faces,
                        batch_sampler=[range(k * bs, min(n, (k + 1) * bs)) for k in mine],
                        num_workers=job.workers if len(mine) > 1 else 0, pin_memory=job.pin,
                        collate_fn=rt.collate)
    bar = progress_bar(job.progress and job.group.main, total=len(mine), desc="extract",
                       unit="batch")
    pending, last_sync = [], time.time()

    def sync():
        out.mark_done(pending)
        pending.clear()

    def store(batch):
        rows, bad = batch.rows()
        timer.lap("model")
        if bad is not None:
            i = int(batch.idx[bad[0]])
            raise ValueError("the model gave a %s embedding for face %d (%s); with amp='fp16' "
                             "try amp='bf16' or None" % (
                                 "zero" if bad[1] == 1 else "non-finite", i, _where(job.ds, i)))
        pending.append((batch.k, out.write(int(batch.idx[0]), rows)))
        timer.lap("write")
        if bar is not None:
            bar.update()

    try:
        last, batches = None, zip(mine, loader)
        while True:
            try:
                k, (img, _, idx) = next(batches)
            except StopIteration:
                break
            except BaseException:  # a failed read: keep the batch already embedded
                if last is not None:
                    store(last)
                    sync()
                raise
            timer.lap("decode")
            batch = _Batch(k, idx, img, job)
            timer.lap("model")
            if last is not None:  # the previous batch, while this one runs
                store(last)
            last = batch
            if time.time() - last_sync >= job.sync_every:
                sync()
                last_sync = time.time()
                timer.lap("sync")
        if last is not None:
            store(last)
        sync()
        timer.lap("sync")
    finally:
        out.close()
    if bar is not None:
        bar.close()
