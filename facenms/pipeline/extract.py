"""Feature extraction: an embedding for every face, L2-normalised, float16, in a
``.npy`` (memory-mappable by the selection) that an interrupted run resumes.

    extract("train.rec", "out/proxy/proxy.pt", "out/features.npy", flip=True)

The model is a proxy checkpoint, a TorchScript file, a ``torch.export`` program
(``.pt2``), an ONNX file (through onnxruntime) or an ``nn.Module``. Work is
cut into fixed batches of the dataset in index order, [k*B, (k+1)*B); a
batch's output bytes depend only on its faces, so the batches may run in any
order, on any number of ranks, across any number of restarts, and the file
comes out byte-identical (on the same hardware and software). While running:

    features.npy.partial     the .npy being filled (valid header, N x d float16)
    features.npy.progress    one byte per batch, 1 once its rows are on disk
    features.npy.state.json  the settings the partial file was made with

When every batch is done, ``labels.npy`` (beside, by default) and
``features.npy.json`` (the settings) are written and the partial file is
renamed to ``features.npy``: a file under the final name is always complete.
"""
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.atomic import AtomicFiles, fsync_dir
from ..scale.dist import join
from . import runtime as rt
from .embedders import load_model

FORMAT = "facenms-features/1"



def _paths(out_path, labels_path):
    out = os.fspath(out_path)
    if labels_path is None:
        labels_path = os.path.join(os.path.dirname(os.path.abspath(out)), "labels.npy")
    return dict(out=out, labels=os.fspath(labels_path), meta=out + ".json",
                partial=out + ".partial", progress=out + ".progress",
                state=out + ".state.json")


def _diff(old, new):
    return ["%s: %r before, %r now" % (k, old.get(k), new[k]) for k in new
            if old.get(k) != new[k]]


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


def _prepare(p, config, labels, resume, n_batches):
    """Rank 0: make or reuse the partial file; returns 'done' when the final
    outputs already match, else None."""
    if resume and os.path.exists(p["out"]):
        meta = rt.read_json(p["meta"])
        if meta is not None and meta.get("config") == config:
            if not os.path.exists(p["labels"]):  # lost or moved since: cheap to redo
                with AtomicFiles() as files:
                    np.save(files.open(p["labels"]), labels)
            return "done"
        why = ("it has no settings file %s" % p["meta"] if meta is None else
               "it was made with other settings (%s)"
               % "; ".join(_diff(meta.get("config", {}), config)))
        raise ValueError("features %s exist but %s; delete them or pass resume=False"
                         % (p["out"], why))
    state = rt.read_json(p["state"]) if resume else None
    if state is not None and state.get("config") != config:
        raise ValueError("cannot resume the extraction in %s, it was started with other "
                         "settings (%s); delete %s or pass resume=False" % (
                             p["partial"], "; ".join(_diff(state.get("config", {}), config)),
                             p["state"]))
    if state is not None and os.path.exists(p["partial"]) and os.path.exists(p["progress"]):
        mm = np.lib.format.open_memmap(p["partial"], mode="r")
        ok = mm.shape == (config["n"], config["dim"]) and mm.dtype == np.float16
        del mm
        if ok and os.path.getsize(p["progress"]) == n_batches:
            return None
    for k in ("state", "partial", "progress", "meta", "out"):  # start afresh
        if os.path.exists(p[k]):
            os.unlink(p[k])
    os.makedirs(os.path.dirname(os.path.abspath(p["out"])), exist_ok=True)
    mm = np.lib.format.open_memmap(p["partial"], mode="w+", dtype=np.float16,
                                   shape=(config["n"], config["dim"]))
    mm.flush()
    del mm
    with open(p["progress"], "wb") as f:
        f.truncate(n_batches)
    rt.atomic_write_text(json.dumps(dict(format=FORMAT, config=config), indent=1), p["state"])
    return None


class _Rows:
    """Writes feature rows into the partial .npy and done-marks into the progress
    file with pwrite rather than through a memory map: ranks on several nodes
    may share one file on a network file system, and there a memory map writes
    back whole pages, which can overwrite a neighbour's rows with stale bytes;
    a pwrite sends only its own byte range."""

    def __init__(self, partial, progress):
        mm = np.lib.format.open_memmap(partial, mode="r")
        self.offset, self.row_bytes = mm.offset, mm.shape[1] * mm.dtype.itemsize
        del mm
        self.rows = os.open(partial, os.O_RDWR)
        self.marks = os.open(progress, os.O_RDWR)

    @staticmethod
    def _pwrite(fd, data, offset):
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def write(self, row, values):
        self._pwrite(self.rows, np.ascontiguousarray(values, np.float16).tobytes(),
                     self.offset + row * self.row_bytes)

    def mark_done(self, batches):
        if not batches:
            return
        os.fsync(self.rows)  # rows reach the disk before their batch is marked done
        for k in batches:
            self._pwrite(self.marks, b"\1", int(k))
        os.fsync(self.marks)

    def close(self):
        os.close(self.rows)
        os.close(self.marks)


def _on_all_ranks(d, fn):
    """Runs fn on rank 0 and hands its result (or its error) to every rank, so a
    failure there is raised everywhere instead of hanging the others."""
    out = [None, None]
    if d.main:
        try:
            out[0] = fn()
        except Exception as e:  # re-raised below, on every rank
            out[1] = e
    out = d.broadcast(out)
    if out[1] is not None:
        if d.main:
            raise out[1]
        raise RuntimeError("rank 0 failed: %s" % out[1])
    # a broadcast returns on the sender first: hold rank 0 until every rank has
    # the result, so it cannot run ahead (and exit, closing connections) mid-receive
    d.barrier()
    return out[0]


def extract(dataset, model, out_path, *, batch_size=256, workers=2, amp="bf16", flip=False,
            device=None, input_size=None, mean=127.5, std=127.5, labels_path=None,
            resume=True, progress=True, sync_every=10.0):
    """Embeds every face of ``dataset`` with ``model`` into ``out_path`` (N x d
    float16 .npy, rows L2-normalised) and its labels into ``labels_path``
    (default: labels.npy beside); returns ``out_path``.

    ``amp``: "bf16" / "fp16" autocast or None; ``flip``: add the embedding of
    the mirrored face; ``input_size``: resize faces to this square size
    (default: the model's own when it states one, else the images' size);
    ``mean``/``std``: pixel normalisation, (x - 127.5) / 127.5 as insightface.
    Under torchrun every rank takes a contiguous share of the batches still to
    do, into the same file; rank 0 finishes it. With ``resume`` a finished
    output with the same settings is kept as is and an unfinished one is
    continued; ``sync_every`` (s) is how often done batches are recorded."""
    t0 = time.time()
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1, got %r" % (batch_size,))
    rt.autocast("cpu", amp)  # validates amp
    ds = rt.open_dataset(dataset)
    labels = rt.dataset_labels(ds)
    n = len(labels)
    if n == 0:
        raise ValueError("the dataset has no faces")
    d, dev = join(device)
    net = load_model(model, dev)
    first = rt.IndexedFaces(ds)[0][0][None]
    size = input_size or net.input_size
    if size is None:  # the images' own size; faces of other sizes are resized to it
        h, w = first.shape[-2:]
        if h != w:
            raise ValueError("the first face is %d x %d (not square) and the model states no "
                             "input size: pass input_size" % (h, w))
        size = int(h)
    faces = rt.IndexedFaces(ds, size=size)
    probe = _embed(net, rt.to_input(first, dev, size, mean, std), dev, amp, flip)
    config = dict(n=n, dim=int(probe.shape[1]), batch_size=int(batch_size), flip=bool(flip),
                  amp=amp if net.uses_autocast else None, input_size=size,
                  image_size=list(first.shape[-2:]), mean=float(mean), std=float(std),
                  model=net.fingerprint,
                  labels=hashlib.sha256(labels.tobytes()).hexdigest())
    return _run(ds, faces, labels, net, config, out_path, labels_path, d, dev, workers,
                resume, progress, sync_every, t0)


def _run(ds, faces, labels, net, config, out_path, labels_path, d, dev, workers, resume,
         progress, sync_every, t0):
    n, bs = config["n"], config["batch_size"]
    n_batches = -(-n // bs)
    p = _paths(out_path, labels_path)
    if _on_all_ranks(d, lambda: _prepare(p, config, labels, resume, n_batches)) == "done":
        if d.main:
            print("extract: %s already holds %d x %d features for these settings -> %s"
                  % (p["out"], n, config["dim"], p["out"]), flush=True)
        return p["out"]

    todo = np.flatnonzero(np.fromfile(p["progress"], np.uint8) == 0)
    # every rank must split the same list: none may mark a batch done before all have read
    d.barrier()
    mine = np.array_split(todo, d.world)[d.rank]  # a contiguous share of what is left
    was_done = n_batches - len(todo)
    out = _Rows(p["partial"], p["progress"])
    loader = DataLoader(faces, batch_sampler=[range(k * bs, min(n, (k + 1) * bs)) for k in mine],
                        num_workers=workers if len(mine) > 1 else 0,
                        pin_memory=dev.type == "cuda")
    bar = None
    if progress and d.main:
        from tqdm import tqdm
        bar = tqdm(total=len(mine), desc="extract", unit="batch", file=sys.stderr,
                   dynamic_ncols=True)
    pending, last_sync = [], time.time()

    def sync():
        out.mark_done(pending)
        pending.clear()

    try:
        for k, (img, _, idx) in zip(mine, loader):
            x = rt.to_input(img, dev, config["input_size"], config["mean"], config["std"])
            e = _embed(net, x, dev, config["amp"], config["flip"])
            norm = e.norm(dim=1, keepdim=True)
            bad = ~torch.isfinite(norm[:, 0]) | (norm[:, 0] == 0)
            if bool(bad.any()):
                pos = int(bad.nonzero()[0, 0])
                i = int(idx[pos])
                raise ValueError("the model gave a %s embedding for face %d (%s); with amp='fp16' "
                                 "try amp='bf16' or None" % (
                                     "zero" if norm[pos, 0] == 0 else "non-finite",
                                     i, _where(ds, i)))
            out.write(int(idx[0]), (e / norm).to(torch.float16).cpu().numpy())
            pending.append(k)
            if time.time() - last_sync >= sync_every:
                sync()
                last_sync = time.time()
            if bar is not None:
                bar.update()
        sync()
    finally:
        out.close()
    if bar is not None:
        bar.close()
    d.barrier()

    def finish():
        left = int((np.fromfile(p["progress"], np.uint8) == 0).sum())
        if left:
            raise RuntimeError("%d of %d batches of %s are not done after every rank finished"
                               % (left, n_batches, p["partial"]))
        with AtomicFiles() as files:
            np.save(files.open(p["labels"]), labels)
            files.open(p["meta"], "w").write(json.dumps(
                dict(format=FORMAT, config=config, labels=p["labels"]), indent=1))
        os.replace(p["partial"], p["out"])  # last: the features appear only when complete
        fsync_dir(os.path.dirname(os.path.abspath(p["out"])))
        for k in ("progress", "state"):
            os.unlink(p[k])

    _on_all_ranks(d, finish)
    if d.main:
        print("extract: %d faces x %d dims float16 with %s (%s%s, %d rank%s)%s; %.1f s -> %s"
              % (n, config["dim"], net.desc, "amp %s" % config["amp"],
                 ", flip-sum" if config["flip"] else "", d.world, "s" if d.world > 1 else "",
                 "; resumed with %d of %d batches done" % (was_done, n_batches)
                 if was_done else "", time.time() - t0, p["out"]), flush=True)
    return p["out"]
